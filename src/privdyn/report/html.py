"""The offline HTML report: one self-contained file, figures embedded as data URIs."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privdyn.analysis.population import states
from privdyn.config import RunConfig
from privdyn.report import figures
from privdyn.store import atomic
from privdyn.store.atomic import load_npz
from privdyn.store.rundir import RunDir

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0} table{border-collapse:collapse;font-size:.9rem}
td,th{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:right} th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left} figure{margin:1.5rem 0} img{max-width:100%}
figcaption{color:#555;font-size:.9rem}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def build_report(cfg: RunConfig, run: RunDir) -> Path:
    """Write ``report/index.html`` plus PNG and PDF figures for the default attack and rule."""
    attack, rule = cfg.default_attack(), cfg.analysis.rule
    adir = run.analysis_dir(attack, rule)
    out = run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    plane = load_npz(adir / "plane.npz")
    epochs = plane["epochs"]
    epoch_table = pd.read_parquet(adir / "epoch.parquet")
    summary = json.loads(run.summary_path.read_text())
    st = states(plane["adv"], cfg.analysis.states)

    figs = [
        (figures.plane_panels(plane, st, epochs, out, cfg.seed),
         "Each dot is a sample at (FPR_i, TPR_i): the share of OUT and IN models that flag it at the "
         f"global threshold ({rule}). Samples above the diagonal leak membership."),
        (figures.attack_and_accuracy(epoch_table, out), "Model-level attack success and accuracy per checkpoint."),
        (figures.com_path(epoch_table, out), "Path of the plane's centre of mass over the checkpoints."),
        (figures.state_shares(epoch_table, out), "Share of samples in each state (bands on A_i = TPR_i - FPR_i)."),
        (figures.entropy_curve(epoch_table, out), f"Spatial entropy over a {cfg.grid_size()}x{cfg.grid_size()} grid."),
    ]
    final = summary["final"]
    rows = [
        ("dataset", f"{cfg.dataset.name} ({summary['n_samples']} pool samples)"),
        ("model", f"{cfg.model.arch} (width {cfg.model.width}, depth {cfg.model.depth})"),
        ("optimizer", f"{cfg.training.optimizer.name}, lr {cfg.training.optimizer.lr}, {cfg.training.schedule}"),
        ("models M", cfg.training.n_models), ("checkpoints", f"{len(epochs)} (epochs {epochs[0]}..{epochs[-1]})"),
        ("attack / rule", f"{attack} / {rule}"),
        ("final test accuracy", f"{final['test_accuracy']:.3f}"),
        ("final train accuracy", f"{summary['train_accuracy'][-1]:.3f}"),
        ("final AUC", f"{final['auc']:.3f}"),
        ("final TPR at 1% FPR", f"{final['tpr_at_fpr_0.01']:.3f}"),
        ("final TPR at 0.1% FPR", f"{final['tpr_at_fpr_0.001']:.3f}"),
        ("high-state samples at the end", summary["n_high_final"]),
        ("centre-of-mass displacement / path (pp)",
         f"{summary['com_displacement_pp']:.1f} / {summary['com_path_pp']:.1f}"),
        ("Delta H (bits)", f"{summary['delta_entropy_bits']:.2f}"),
    ]
    top = np.argsort(-plane["adv"][-1], kind="stable")[:20]
    top_rows = "".join(
        f"<tr><td>{i}</td><td>{plane['fpr'][-1, i]:.3f}</td><td>{plane['tpr'][-1, i]:.3f}</td>"
        f"<td>{plane['adv'][-1, i]:.3f}</td><td>{plane['auc'][-1, i]:.3f}</td></tr>" for i in top)
    fig_html = "".join(f"<figure>{_img(paths[0])}<figcaption>{html.escape(cap)}</figcaption></figure>"
                       for paths, cap in figs)
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>privdyn report: {html.escape(cfg.name)}</title><style>{_CSS}</style></head><body>
<h1>privdyn report: {html.escape(cfg.name)}</h1>
<p class="sub">Membership-inference privacy dynamics, sample by sample, over training.</p>
<h2>Run summary</h2>{_kv_table(rows)}
<h2>Figures</h2>{fig_html}
<h2>Most vulnerable samples at the last checkpoint</h2>
<table><tr><th>sample</th><th>FPR_i</th><th>TPR_i</th><th>A_i</th><th>AUC_i</th></tr>{top_rows}</table>
</body></html>"""
    index = out / "index.html"
    atomic.write_text(index, doc)
    return index
