"""The report of one run: ``report/index.html`` (interactive, offline) plus PNG and PDF figures.

Panels read the analysis tables and ``summary.json``; a panel whose inputs the analysis did not
produce is replaced by a note saying what is missing, so a report of an older or partial
analysis still opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from privdyn.analysis.population import STATE_NAMES
from privdyn.config import RunConfig
from privdyn.report import figures, interactive
from privdyn.report.common import DIFFICULTY, SPEED, TIMING, top_samples
from privdyn.report.data import RunData, load_run_data
from privdyn.report.dp_audit import dp_audit_panel
from privdyn.report.gallery import gallery
from privdyn.report.page import (
    Cell,
    document,
    figure_gallery,
    fmt,
    kv_table,
    section,
    sortable_table,
)
from privdyn.report.panels import Panel, build, require
from privdyn.report.warning import early_warning_panels
from privdyn.store import atomic
from privdyn.store.rundir import RunDir

#: Samples in the sortable table (the gallery shows those the analysis stored).
TABLE_ROWS = 200


def run_description(d: RunData) -> list[tuple[str, Any]]:
    """What was run: data, model, optimizer, models, checkpoints, attack and rule."""
    c = d.config
    o, t = c.training.optimizer, c.training
    opt = f"{o.name}, lr {o.lr:g}" + (f", momentum {o.momentum:g}" if o.name == "sgd" else "")
    opt += f", weight decay {o.weight_decay:g}, {t.schedule} schedule, batch {t.batch_size}"
    b = c.analysis.states
    src = c.source
    if src.kind == "train":
        trained = [("model", f"{c.model.arch}, width {c.model.width}, depth {c.model.depth}, norm {c.model.norm}"),
                   ("optimizer", opt)]
    else:  # a user's model and recipe, recorded loops or imported logits: the config's zoo fields do not apply
        trained = [("source", f"{src.kind}: {src.description or 'no description'}"), ("model", c.model.arch)]
        trained += [("optimizer", src.optimizer)] if src.optimizer else []
    share = f"each sample IN for {d.n_models // 2}" if src.trained_here else "IN counts as imported"
    return [
        ("dataset", f"{c.dataset.name}: {d.n_samples:,} pool samples"),
        *trained,
        ("models M", f"{d.n_models} ({share})"),
        ("epochs", f"{t.epochs}; {len(d.epochs)} checkpoints ({fmt(int(d.epochs[0]))} to {fmt(int(d.epochs[-1]))})"),
        ("queries", ", ".join(c.queries)),
        ("attack", d.attack),
        ("operating-point rule", d.rule),
        ("state bands on A_i", f"low {b.low:g}, medium {b.medium:g}, high {b.high:g}"),
    ]


def key_metrics(d: RunData) -> dict[str, Any]:
    """The headline numbers of a run, by label (only those the analysis produced)."""
    s = d.summary
    final = s.get("final", {})
    rows: dict[str, Any] = {
        "train accuracy": (s.get("train_accuracy") or [None])[-1],
        "test accuracy": final.get("test_accuracy"),
        "attack AUC": final.get("auc"),
        "TPR at 0.1% FPR": final.get("tpr_at_fpr_0.001"),
        "TPR at 1% FPR": final.get("tpr_at_fpr_0.01"),
        "samples high at the end": s.get("n_high_final"),
        "samples ever high": s.get("n_ever_high"),
        "centre-of-mass displacement (pp)": s.get("com_displacement_pp"),
        "centre-of-mass path (pp)": s.get("com_path_pp"),
        "Delta H (bits)": s.get("delta_entropy_bits"),
        "encoding speed, mean": s.get("encoding_speed_mean"),
        "encoding speed, median": s.get("encoding_speed_median"),
        "encoding speed, mean over finally high": s.get("encoding_speed_high_mean"),
        "peak P(non-high -> high)": s.get("peak_p_to_high"),
        "median first epoch high": s.get("time_to_high_median"),
        **{f"epoch recall reaches {lv:g}": s.get(f"epoch_recall_{lv:g}") for lv in d.config.analysis.recall_levels},
        "trajectory clusters (silhouette)": (f"{s['n_clusters']} ({fmt(s.get('silhouette'))})"
                                             if "n_clusters" in s else None),
    }
    for m, targets in (s.get("spearman_difficulty") or {}).items():
        r = targets.get("final_advantage", {}) if isinstance(targets, dict) else {}
        if r.get("rho") is not None:
            rows[f"Spearman({m}, final A_i)"] = r["rho"]
    return {k: v for k, v in rows.items() if v is not None}


def top_table(d: RunData, k: int = TABLE_ROWS) -> Panel:
    """The k most vulnerable samples with their per-sample numbers; columns sort on a click."""
    top = top_samples(d, k)
    s = d.sample
    p = d.plane
    extra = [c for c in (*TIMING, *SPEED, *DIFFICULTY) if c in s.columns]
    cols = ["rank", "sample", "label", "final state", "A_i", "AUC_i", "FPR_i", "TPR_i", "max A_i"]
    cols += (["cluster"] if "cluster_name" in s.columns else []) + [c.replace("_", " ") for c in extra]
    rows: list[list[Cell]] = []
    values = {c: s[c].to_numpy(np.float64) for c in extra}
    names = s["cluster_name"].astype(str).to_numpy() if "cluster_name" in s.columns else None
    for rank, i in enumerate(top, start=1):
        st = int(d.states[-1, i])
        row: list[Cell] = [(str(rank), rank), (str(i), int(i)),
                           (str(int(d.labels[i])) if d.labels is not None else "\u2013",
                            int(d.labels[i]) if d.labels is not None else None),
                           (STATE_NAMES[st], st)]
        row += [(fmt(float(v[-1, i])), float(v[-1, i])) for v in (p.adv, p.auc, p.fpr, p.tpr)]
        row.append((fmt(float(p.adv[:, i].max())), float(p.adv[:, i].max())))
        if names is not None:
            row.append((names[i], None))
        for c in extra:
            v = values[c][i]
            row.append((fmt(v, 4 if abs(v) < 0.1 else 3), v if np.isfinite(v) else ""))
        rows.append(row)
    return Panel("top-table", f"The {len(top)} most vulnerable samples", wide=True, html=sortable_table(cols, rows),
                 caption="Ranked by final advantage (ties: larger AUC_i). Click a column header to sort by it; "
                         "a dash means the value is undefined (e.g. never high).")


#: The sensitivity table's metric columns and their headers.
SENSITIVITY_COLUMNS = {"com_displacement_pp": "CoM disp. (pp)", "com_path_pp": "CoM path (pp)",
                       "delta_entropy_bits": "\u0394H (bits)", "peak_p_to_high": "peak P(\u2192high)",
                       "n_high_final": "n high", "encoding_speed_mean": "speed (mean)",
                       "epoch_recall_0.7": "epoch recall 0.7", "spearman_consistency": "Spearman(consistency, A)"}


def sensitivity_panel(d: RunData) -> Panel:
    """The headline dynamics at every rule, grid and band set: does a conclusion depend on them?"""
    t = require(d.table("sensitivity"), ["rule", "grid", "bands", *SENSITIVITY_COLUMNS], "sensitivity.parquet")
    rows: list[list[Cell]] = []
    for v in t.to_dict("records"):
        row: list[Cell] = [(("\u2605 " if v["is_default"] else "") + str(v["rule"]), str(v["rule"])),
                           (str(v["grid"]), int(v["grid"])), (str(v["bands"]), str(v["bands"]))]
        row += [(fmt(x), x if np.isfinite(x) else "") for x in (float(v[c]) for c in SENSITIVITY_COLUMNS)]
        rows.append(row)
    return Panel("sensitivity", "Sensitivity to the operating point, grid and bands", wide=True,
                 html=sortable_table(["rule", "grid G", "bands", *SENSITIVITY_COLUMNS.values()], rows),
                 caption="The headline dynamics recomputed from the stored scores for every rule, grid and band "
                         "set (\u2605 = this report's own). CoM, speed and the Spearman correlation depend on "
                         "the rule only, \u0394H also on G, the state-based numbers on the bands. A conclusion "
                         "that flips sign or order across rows depends on an open choice.")


def panels(d: RunData, max_points: int, max_frames: int) -> dict[str, list[Panel]]:
    """Every panel of the page, by section; each either drawn or carrying why it is not."""
    seed = d.config.seed
    P = build
    return {
        "plane": [P("plane", "The vulnerability plane",
                    lambda: interactive.plane_by_state(d, max_points, max_frames, seed)),
                  P("plane-difficulty", "The plane by learning difficulty",
                    lambda: interactive.plane_by_difficulty(d, max_points, max_frames, seed))],
        "samples": [P("trajectories", "Trajectories", lambda: interactive.trajectories(d)),
                    P("gallery", "Gallery of the most vulnerable samples", lambda: gallery(d)),
                    P("time-to-high", "Time to vulnerability", lambda: interactive.time_to_vulnerability(d)),
                    P("clusters", "Trajectory clusters", lambda: interactive.clusters(d))],
        "population": [P("com", "Centre-of-mass path", lambda: interactive.com_path(d)),
                       P("entropy", "Entropy over time", lambda: interactive.entropy(d)),
                       P("states", "Samples per state", lambda: interactive.state_shares(d)),
                       P("p-to-high", "Rate of becoming vulnerable", lambda: interactive.p_to_high(d)),
                       P("transitions", "Transition matrices", lambda: interactive.transitions(d)),
                       P("speed", "Membership encoding speed", lambda: interactive.encoding_speed(d))],
        "model": [P("tpr-accuracy", "Attack success at low FPR and accuracy", lambda: interactive.tpr_and_accuracy(d))],
        "difficulty": [P("difficulty-scatter", "Difficulty against vulnerability",
                         lambda: interactive.difficulty_scatter(d, max_points, seed)),
                       P("difficulty-deciles", "Vulnerability by difficulty decile",
                         lambda: interactive.difficulty_deciles(d)),
                       P("spearman", "Spearman correlations", lambda: interactive.spearman_table(d))],
        "early": [P("early", "Early determination", lambda: interactive.early_determination(d))],
        "early_warning": early_warning_panels(d),
        "sensitivity": [P("sensitivity", "Sensitivity to the operating point, grid and bands",
                          lambda: sensitivity_panel(d))] if d.config.analysis.sensitivity else [],
        "dp_audit": [P("dp-audit", "Differential-privacy audit",
                       lambda: dp_audit_panel(d))] if d.table("dp_audit") is not None else [],
        "table": [top_table(d)],
    }


SECTIONS = (
    ("plane", "The plane over training"), ("samples", "Samples"), ("population", "Population dynamics"),
    ("model", "Model level"), ("difficulty", "Learning difficulty"), ("early", "Early determination"),
    ("early_warning", "Early warning"),
    ("sensitivity", "Sensitivity"), ("dp_audit", "Differential-privacy audit"), ("table", "Top samples"),
)


def render(d: RunData, out: Path, max_points: int = 4000, max_frames: int = 60) -> str:
    """The page of one run, with its static figures written into ``out``."""
    return page_html(d, figure_gallery(figures.write_all(d, out)), max_points, max_frames)


def page_html(d: RunData, gallery_html: str, max_points: int = 4000, max_frames: int = 60) -> str:
    """The page of one run around ``gallery_html``, the previews of its static figures
    (:func:`~privdyn.report.page.figure_gallery`), which come last but for the footer."""
    by_section = panels(d, max_points, max_frames)
    skipped = [p for ps in by_section.values() for p in ps if p.skipped]
    metrics = key_metrics(d)
    head = ('<div class="summary">' + kv_table(run_description(d))
            + kv_table([(k, fmt(v)) for k, v in metrics.items()]) + "</div>")
    if skipped:
        head += ('<p class="note">' + f"{len(skipped)} panel(s) not shown because the analysis did not produce "
                 "their data: " + ", ".join(p.title for p in skipped) + ". Each place says what is missing.</p>")
    body = f'<h2 id="summary">Run summary</h2>{head}'
    shown = [(key, title) for key, title in SECTIONS if by_section[key]]  # e.g. no sensitivity when off
    body += "".join(section(title, key, by_section[key]) for key, title in shown)
    body += ('<h2 id="figures">Figures for papers</h2><p class="caption">Written beside this page as PNG and PDF '
             f"(matplotlib).</p>{gallery_html}")
    nav = [("summary", "Summary"), *shown, ("figures", "Paper figures")]
    return document(f"privdyn report: {d.name}",
                    f"Membership-inference privacy dynamics of {d.n_samples:,} samples over {len(d.epochs)} "
                    f"checkpoints ({d.attack} at {d.rule}).", nav, body)


def build_report(cfg: RunConfig, run: RunDir) -> Path:
    """Write ``report/index.html`` and the figures for the config's default attack and rule."""
    d = load_run_data(run.path, cfg.default_attack(), cfg.analysis.rule)
    out = run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    atomic.write_text(index, render(d, out))
    return index
