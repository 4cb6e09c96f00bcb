"""``privdyn defend``: a defence study as a generated sweep, then one comparison.

From one run config it builds a sweep (one zip group, every point named by its label) of:

- ``baseline``: the config as it is;
- every intervention of the grid (action x realistic proxy rule x flag share k x intervention
  epoch t_d x clip norm / noise / weight): the defences a practitioner could run;
- ``random`` controls (a seeded random k of each model's members, the same action): how much of
  an effect is the intervention itself rather than the choice of samples;
- ``oracle`` points (flags from the baseline's own final plane, read from its run directory):
  an upper bound on what the dynamics could buy, labelled ORACLE everywhere;
- DP-SGD at each noise multiplier of ``dp_noise`` and clipping norm of ``dp_clip``, the baseline to beat.

The sweep machinery runs them (finished points are skipped, a killed point resumes), writes its
usual comparison tables, and then :func:`defence_comparison` writes ``defence_frontier.parquet``
(one row per point: TPR at 0.1% and 1% FPR, n high at the end, test accuracy, the risk of the
most vulnerable samples, the flagged samples' own risk, the onion counts),
``defence_flagged.parquet`` (per intervention, every flagged sample's final advantage and AUC
under the baseline and under the intervention), ``defence_onion.parquet`` (per point, every
sample that ends high without being high in the baseline, with where it sat on the baseline
plane), ``defence_summary.json`` and the page ``defence_report/index.html``.

DP-SGD at matched test accuracy: the DP point whose final test accuracy is closest to the target
(``match: interventions``, the default: the median test accuracy of the realistic
interventions; ``match: baseline``: the baseline's). Every intervention is also compared with
the DP frontier itself: per metric, the best (lowest) value among the DP points at least as
accurate as the intervention (``best_dp_*``), and the DP points that dominate it (at least as
accurate and no worse on every metric).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from privdyn.analysis import defence as core
from privdyn.analysis.population import STATE_NAMES
from privdyn.config import ORACLE_PREFIX, RANDOM_RULE, RunConfig
from privdyn.errors import PrivdynError
from privdyn.store import atomic, provenance
from privdyn.store.rundir import RunDir
from privdyn.sweep.runner import SweepOutcome, run_dir_of, run_sweep
from privdyn.sweep.spec import LABEL, Sweep, expand, parse_spec
from privdyn.sweep.tables import collect_rows, comparison_table, final_value, write_tables

BASELINE = "baseline"
#: The config keys a defence point sets (every point lists all of them: one zip group).
KEYS = ("defence.enabled", "defence.rule", "defence.action", "defence.share", "defence.epoch",
        "defence.continuous", "defence.clip_norm", "defence.noise_multiplier", "defence.weight",
        "training.dp.enabled", "training.dp.noise_multiplier", "training.dp.max_grad_norm", "model.norm")
#: Point kinds, in the order the tables list them.
KINDS = ("baseline", "intervention", "random", "oracle", "dp")


Action = Literal["remove", "clip", "weight"]
ACTIONS: tuple[Action, ...] = ("remove", "clip", "weight")


class DefendGrid(BaseModel):
    """The grid of ``privdyn defend`` (``--grid KEY=V1,V2``); every list is a small grid axis."""

    model_config = ConfigDict(extra="forbid")

    actions: list[Action] = Field(default_factory=lambda: list(ACTIONS), description="interventions to run")
    rules: list[str] = Field(default_factory=lambda: ["lt_iqr"], description="realistic rules: early-warning "
                             "proxies (analysis.proxies) from each model's own signals")
    oracle: bool = Field(True, description="also each action with the oracle rule (the baseline's final plane)")
    random: list[Action] = Field(default_factory=lambda: [ACTIONS[0]],
                                 description="actions that also get a random-flags control")
    share: list[float] = Field(default_factory=lambda: [0.05], description="k: share of each model's members flagged")
    epoch: list[int] | None = Field(None, description="t_d; None = the first checkpoint at or after 30% of training")
    continuous: list[bool] = Field(default_factory=lambda: [False], description="re-flag at every later checkpoint")
    clip_norm: list[float] = Field(default_factory=lambda: [0.5], description="clip: the per-sample gradient bound")
    noise_multiplier: list[float] = Field(default_factory=lambda: [0.0], description="clip: noise on the flagged sum")
    weight: list[float] = Field(default_factory=lambda: [0.1], description="weight: the factor on the flagged loss")
    dp_noise: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0], description="DP-SGD noise multipliers")
    dp_clip: list[float] = Field(default_factory=lambda: [1.0], description="DP-SGD per-sample clipping norms")
    match: Literal["interventions", "baseline"] = Field(
        "interventions", description="the test accuracy DP is matched to: the median of the realistic "
        "interventions, or the baseline's")

    @field_validator("share", "clip_norm", "weight", "dp_noise", "noise_multiplier", "rules", "actions", "epoch",
                     "dp_clip")
    @classmethod
    def _distinct(cls, v: list[Any] | None) -> list[Any] | None:
        if v is not None and not v:
            raise ValueError("give at least one value")
        if v is not None and len(set(map(str, v))) != len(v):
            raise ValueError(f"a value is listed twice ({v})")
        return v

    @field_validator("share")
    @classmethod
    def _share(cls, v: list[float]) -> list[float]:
        if any(not 0 < x < 1 for x in v):
            raise ValueError(f"each share is in (0, 1), e.g. 0.05 (got {v})")
        return v

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: list[float]) -> list[float]:
        if any(not 0 <= x < 1 for x in v):
            raise ValueError(f"each weight is in [0, 1), e.g. 0.1 (got {v})")
        return v

    @field_validator("dp_noise", "noise_multiplier")
    @classmethod
    def _nonnegative(cls, v: list[float]) -> list[float]:
        if any(x < 0 for x in v):
            raise ValueError(f"give values >= 0 (got {v})")
        return v

    @field_validator("clip_norm", "dp_clip")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(x <= 0 for x in v):
            raise ValueError(f"give values > 0 (got {v})")
        return v


def parse_grid(items: list[str] | None) -> DefendGrid:
    """``KEY=V1,V2`` items (values read as YAML) as a validated :class:`DefendGrid`."""
    data: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise PrivdynError(f"--grid {item!r}: expected KEY=V1,V2, e.g. --grid share=0.05,0.1")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in DefendGrid.model_fields:
            raise PrivdynError(f"--grid {key}: not a grid key; use one of {', '.join(DefendGrid.model_fields)}")
        try:
            values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()] if raw.strip() else []
        except yaml.YAMLError:
            raise PrivdynError(f"--grid {item!r}: a value is not valid YAML") from None
        scalar = key in ("oracle", "match")
        data[key] = values[0] if scalar and len(values) == 1 else values
    try:
        return DefendGrid.model_validate(data)
    except ValidationError as err:
        lines = [f"  - --grid {'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                 for e in err.errors()]
        raise PrivdynError("Invalid defend grid:\n" + "\n".join(lines)) from None


def default_epoch(cfg: RunConfig) -> int:
    """t_d by default: the first checkpoint epoch at or after 30% of training (before the last)."""
    E = cfg.training.epochs
    ok = [e for e in cfg.checkpoint_epochs() if 0 < e < E]
    if not ok:
        raise PrivdynError(f"privdyn defend: no checkpoint epoch before the last ({E}) to intervene at; "
                           "set training.epochs >= 2 and checkpoints every epoch")
    return next((e for e in ok if e >= 0.3 * E), ok[-1])


def _num(v: float) -> str:
    return format(v, "g")


def _tail(p: dict[str, Any]) -> str:
    """The label part of an action's parameters: -C<clip norm>, -s<noise> (when > 0), -w<weight>."""
    parts = [f"C{_num(p['defence.clip_norm'])}"] if "defence.clip_norm" in p else []
    parts += [f"s{_num(p['defence.noise_multiplier'])}"] if p.get("defence.noise_multiplier") else []
    parts += [f"w{_num(p['defence.weight'])}"] if "defence.weight" in p else []
    return "".join(f"-{x}" for x in parts)


def entries(cfg: RunConfig, grid: DefendGrid, baseline_dir: Path) -> list[dict[str, Any]]:
    """Every point of the study as ``{label, kind, KEY: value}``: baseline first (the oracle reads it)."""
    if cfg.training.dp.enabled:
        dp = cfg.training.dp
        raise PrivdynError(
            "privdyn defend: the config trains with DP-SGD (training.dp.enabled=true), but the study's baseline "
            "is the non-private recipe that every intervention and every DP-SGD point is compared against. Give "
            "the config without DP (--set training.dp.enabled=false) and the DP-SGD points as a grid axis: "
            f"--grid dp_noise={dp.noise_multiplier:g} --grid dp_clip={dp.max_grad_norm:g} gives this config's own.")
    base = {"defence.enabled": False, "defence.rule": cfg.defence.rule, "defence.action": cfg.defence.action,
            "defence.share": cfg.defence.share, "defence.epoch": cfg.defence.epoch,
            "defence.continuous": cfg.defence.continuous, "defence.clip_norm": cfg.defence.clip_norm,
            "defence.noise_multiplier": cfg.defence.noise_multiplier, "defence.weight": cfg.defence.weight,
            "training.dp.enabled": False, "training.dp.noise_multiplier": cfg.training.dp.noise_multiplier,
            "training.dp.max_grad_norm": cfg.training.dp.max_grad_norm, "model.norm": cfg.model.norm}
    out = [{LABEL: BASELINE, "kind": "baseline", **base}]
    if "clip" in grid.actions and cfg.model.norm == "batch":
        raise PrivdynError("privdyn defend: action clip needs per-sample gradients and the model uses BatchNorm; "
                           "set model.norm=group or none (--set model.norm=none), or drop clip (--grid "
                           "actions=remove,weight)")
    epochs = grid.epoch or [default_epoch(cfg)]
    oracle = f"{ORACLE_PREFIX}{baseline_dir.resolve()}"
    for action in grid.actions:
        params: list[dict[str, Any]]
        if action == "clip":
            params = [{"defence.clip_norm": c, "defence.noise_multiplier": s}
                      for c in grid.clip_norm for s in grid.noise_multiplier]
        elif action == "weight":
            params = [{"defence.weight": w} for w in grid.weight]
        else:
            params = [{}]
        rules = [(r, "intervention", r) for r in grid.rules]
        rules += [(oracle, "oracle", "oracle")] if grid.oracle else []
        rules += [(RANDOM_RULE, "random", "random")] if action in grid.random else []
        for rule, kind, short in rules:
            for k in grid.share:
                for t in epochs:
                    for cont in grid.continuous:
                        for j, p in enumerate(params):
                            if kind == "random" and j > 0:
                                continue  # one control per action, share and epoch
                            tail = _tail(p)
                            label = f"{action}-{short}-k{_num(k)}-t{t}{'c' if cont else ''}{tail}"
                            out.append({LABEL: label, "kind": kind, **base, "defence.enabled": True,
                                        "defence.rule": rule, "defence.action": action, "defence.share": k,
                                        "defence.epoch": t, "defence.continuous": cont, **p})
    dp_norm = "group" if cfg.model.norm == "batch" else cfg.model.norm
    for c in grid.dp_clip:
        for s in grid.dp_noise:
            out.append({LABEL: f"dp-sgd-sigma{_num(s)}" + (f"-C{_num(c)}" if c != 1 else ""), "kind": "dp", **base,
                        "training.dp.enabled": True, "training.dp.noise_multiplier": s,
                        "training.dp.max_grad_norm": c, "model.norm": dp_norm})
    labels = [e[LABEL] for e in out]
    if len(set(labels)) != len(labels):
        raise PrivdynError(f"privdyn defend: the grid gives two points the same label ({labels}); list each value once")
    return out


def build_sweep(cfg: RunConfig, grid: DefendGrid, out: Path) -> tuple[Sweep, dict[str, str]]:
    """The study as a validated :class:`Sweep` over ``out`` and each point's kind by slug."""
    name = f"{cfg.name}-defend"[:100]
    points = entries(cfg, grid, out / "runs" / BASELINE)
    spec = parse_spec({"name": name, "description": "privdyn defend: baseline, interventions, controls, oracle "
                       "and DP-SGD", "base": cfg.model_dump(mode="json"), "run_reports": False,
                       "zip": [{k: [e[k] for e in points] for k in (LABEL, *KEYS)}]}, "privdyn defend")
    sweep = expand(spec)
    kinds = {p.slug: e["kind"] for p, e in zip(sweep.points, points, strict=True)}
    if sweep.points[0].slug != BASELINE:
        raise PrivdynError(f"privdyn defend: the baseline point is named {sweep.points[0].slug}, not {BASELINE}")
    return sweep, kinds


# ----- the comparison ------------------------------------------------------------------------

def _final_plane(cfg: RunConfig, run: RunDir, attack: str) -> core.FinalPlane:
    if not provenance.scores_current(cfg, run, attack):
        raise PrivdynError(f"{run.path}: the scores of {attack} are missing or stale; rerun `privdyn defend` "
                           "(finished points are kept)")
    scores = run.load_scores(attack)
    membership = run.load_array(run.path / "membership.npy", "membership")
    return core.final_plane(np.asarray(scores[len(scores) - 1]), membership, cfg.analysis.rule,
                            cfg.analysis.states.bands())


def _epsilon(run: RunDir) -> float:
    from privdyn.pipeline.dp_audit import dp_record, recorded_epsilons

    rec = dp_record(run)
    eps = recorded_epsilons(rec) if rec else []
    return eps[-1] if eps else math.nan


#: The metrics on which a point is compared with the DP-SGD points (lower = more private).
DP_METRICS = ("tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "own_top1pct_adv", "baseline_vulnerable_adv")


def _dp_best(dp: pd.DataFrame, acc: float, col: str) -> float:
    """The lowest ``col`` among the DP points at least as accurate as ``acc`` (NaN when none is)."""
    d = dp[dp["test_accuracy"] >= acc - 1e-12][col].dropna()
    return float(d.min()) if len(d) and math.isfinite(acc) else math.nan


def dominating_dp(dp: pd.DataFrame, row: dict[str, Any]) -> list[str]:
    """The DP points that dominate ``row``: at least as accurate and no worse on every DP metric."""
    ok = dp["test_accuracy"] >= row["test_accuracy"] - 1e-12
    for col in DP_METRICS:
        ok &= dp[col] <= row[col] + 1e-12
    return dp.loc[ok, "label"].tolist()


def defence_comparison(sweep: Sweep, kinds: dict[str, str], out: Path, grid: DefendGrid,
                       log: Callable[[str], None] = print) -> dict[str, Path]:
    """Write the defence tables, summary and page over the finished points (see the module docstring)."""
    manifest = atomic.read_json(out / "manifest.json")["points"]
    done = [p for p in sweep.points if manifest.get(p.slug, {}).get("status") == "done"]
    if not done or done[0].slug != BASELINE:
        log("privdyn defend: the baseline has not finished: no defence comparison written")
        return {}
    base_pt = done[0]
    attack = base_pt.config.default_attack()
    G = base_pt.config.grid_size()
    base_run = RunDir(run_dir_of(out, base_pt))
    base = _final_plane(base_pt.config, base_run, attack)
    membership = base_run.load_array(base_run.path / "membership.npy", "membership")
    rows, flagged_rows, onion_rows, cells = [], [], [], {}
    for p in done:
        run = RunDir(run_dir_of(out, p))
        cfg = p.config
        fp = base if p.slug == BASELINE else _final_plane(cfg, run, attack)
        summary = atomic.read_json(run.summary_path)
        d = cfg.defence
        row: dict[str, Any] = {
            "label": p.slug, "kind": kinds[p.slug], "oracle": bool(d.enabled and d.is_oracle),
            "action": d.action if d.enabled else None,
            "rule": ("oracle" if d.is_oracle else d.rule) if d.enabled else None,
            "share": d.share if d.enabled else math.nan, "epoch": d.epoch if d.enabled else math.nan,
            "continuous": bool(d.enabled and d.continuous),
            "clip_norm": d.clip_norm if d.enabled and d.action == "clip" else math.nan,
            "noise_multiplier": d.noise_multiplier if d.enabled and d.action == "clip" else math.nan,
            "weight": d.weight if d.enabled and d.action == "weight" else math.nan,
            "dp_noise": cfg.training.dp.noise_multiplier if cfg.training.dp.enabled else math.nan,
            "dp_clip": cfg.training.dp.max_grad_norm if cfg.training.dp.enabled else math.nan,
            "epsilon": _epsilon(run) if cfg.training.dp.enabled else math.nan,
            "description": d.label() if d.enabled else (
                f"DP-SGD sigma={cfg.training.dp.noise_multiplier:g} C={cfg.training.dp.max_grad_norm:g}"
                if cfg.training.dp.enabled else "no defence"),
            "test_accuracy": final_value(summary, "test_accuracy"),
            "tpr_at_fpr_0.001": final_value(summary, "tpr_at_fpr_0.001"),
            "tpr_at_fpr_0.01": final_value(summary, "tpr_at_fpr_0.01"),
            "auc": final_value(summary, "auc"), "n_high_final": float(summary.get("n_high_final", math.nan)),
            **core.vulnerability(fp, base), "run_dir": str(Path("runs") / p.slug)}
        rate = np.zeros(len(base.adv))
        if d.enabled:
            from privdyn.training.defence import read_flags

            flags, _, _ = read_flags(run.path)
            rate = core.flag_rate(flags, membership)
            row.update(core.flagged_effect(base, fp, rate))
            sel = np.flatnonzero(rate > 0)
            flagged_rows.append(pd.DataFrame({
                "label": p.slug, "kind": kinds[p.slug], "sample": sel, "flag_rate": rate[sel],
                "adv_baseline": base.adv[sel], "adv_defended": fp.adv[sel], "auc_baseline": base.auc[sel],
                "auc_defended": fp.auc[sel], "state_baseline": base.state[sel], "state_defended": fp.state[sel]}))
        if p.slug != BASELINE:
            on = core.onion(base, fp, G)
            row.update(on.summary())
            cells[p.slug] = on.baseline_cells.tolist()
            sel = np.flatnonzero(on.new_high)
            onion_rows.append(pd.DataFrame({
                "label": p.slug, "kind": kinds[p.slug], "sample": sel, "safe_in_baseline": on.safe_to_high[sel],
                "state_baseline": [STATE_NAMES[s] for s in base.state[sel]], "fpr_baseline": base.fpr[sel],
                "tpr_baseline": base.tpr[sel], "adv_baseline": base.adv[sel], "auc_baseline": base.auc[sel],
                "adv_defended": fp.adv[sel], "auc_defended": fp.auc[sel], "flag_rate": rate[sel]}))
        rows.append(row)
    frontier = pd.DataFrame(rows)
    matched = _match_dp(frontier, grid.match)
    dp = frontier[frontier["kind"] == "dp"]
    for col in DP_METRICS:
        frontier[f"best_dp_{col}"] = [_dp_best(dp, a, col) if k != "dp" else math.nan
                                      for a, k in zip(frontier["test_accuracy"], frontier["kind"], strict=True)]
    frontier["dp_matched"] = frontier["label"] == (matched or {}).get("label")
    flagged = pd.concat(flagged_rows, ignore_index=True) if flagged_rows else pd.DataFrame(
        columns=["label", "kind", "sample", "flag_rate"])
    onion = (pd.concat(onion_rows, ignore_index=True) if onion_rows
             else pd.DataFrame(columns=["label", "kind", "sample"]))
    paths = {"frontier": out / "defence_frontier.parquet", "flagged": out / "defence_flagged.parquet",
             "onion": out / "defence_onion.parquet", "summary": out / "defence_summary.json"}
    atomic.write_parquet(paths["frontier"], frontier)
    atomic.write_parquet(paths["flagged"], flagged)
    atomic.write_parquet(paths["onion"], onion)
    summary_json = summarise(frontier, matched, cells, attack, base_pt.config, grid, sweep.spec.name)
    atomic.write_json(paths["summary"], summary_json, strict=True)  # read by other tools: valid JSON
    from privdyn.report.defence import build_defence_report

    paths["report"] = build_defence_report(out / "defence_report", frontier, flagged, onion, summary_json,
                                           {p.slug: run_dir_of(out, p) for p in done})
    return paths


def _match_dp(frontier: pd.DataFrame, match: str) -> dict[str, Any] | None:
    """The DP point at matched test accuracy, with the target and how it was chosen."""
    dp = frontier[frontier["kind"] == "dp"].reset_index(drop=True)
    if not len(dp):
        return None
    realistic = frontier[frontier["kind"] == "intervention"]["test_accuracy"].dropna()
    base_acc = float(frontier.loc[frontier["kind"] == "baseline", "test_accuracy"].iloc[0])
    if match == "interventions" and len(realistic):
        target, how = float(realistic.median()), "the median final test accuracy of the realistic interventions"
    else:
        target, how = base_acc, "the baseline's final test accuracy"
    j = core.nearest(dp["test_accuracy"].to_numpy(), target)
    row = dp.iloc[j]
    return {"label": row["label"], "dp_noise": float(row["dp_noise"]), "epsilon": float(row["epsilon"]),
            "test_accuracy": float(row["test_accuracy"]), "target_accuracy": target,
            "dp_clip": float(row["dp_clip"]),
            "rule": f"the DP-SGD point whose final test accuracy is closest to {how} ({target:.4f}), among "
                    f"{', '.join(dp['label'])}",
            "gap": float(row["test_accuracy"]) - target}


def summarise(frontier: pd.DataFrame, matched: dict[str, Any] | None, cells: dict[str, Any], attack: str,
              cfg: RunConfig, grid: DefendGrid, name: str) -> dict[str, Any]:
    """``defence_summary.json``: the setup, every point's record, the matched DP point and the verdicts;
    NaN and infinities (e.g. the epsilon of ``dp_noise=0``, which has none) are written as null."""
    def clean(v: Any) -> Any:
        if isinstance(v, (float, np.floating)):
            return None if not math.isfinite(float(v)) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.bool_):
            return bool(v)
        return v

    records = [{k: clean(v) for k, v in r.items()} for r in frontier.to_dict(orient="records")]
    verdicts = []
    m = frontier[frontier["dp_matched"]]
    dp = frontier[frontier["kind"] == "dp"]
    for rec in frontier[frontier["kind"].isin(["intervention", "oracle", "random"])].to_dict(orient="records"):
        entry: dict[str, Any] = {"label": rec["label"], "kind": rec["kind"], "oracle": bool(rec["oracle"])}
        for col in DP_METRICS:
            entry[f"{col}_minus_best_dp"] = clean(rec[col] - rec[f"best_dp_{col}"])
        entry["dominated_by_dp"] = dominating_dp(dp, rec)
        if len(m):
            mm = m.iloc[0]
            entry["accuracy_minus_matched_dp"] = clean(rec["test_accuracy"] - mm["test_accuracy"])
            entry["tpr_at_fpr_0.001_minus_matched_dp"] = clean(rec["tpr_at_fpr_0.001"] - mm["tpr_at_fpr_0.001"])
            entry["own_top1pct_adv_minus_matched_dp"] = clean(rec["own_top1pct_adv"] - mm["own_top1pct_adv"])
            entry["beats_matched_dp"] = bool(rec["test_accuracy"] >= mm["test_accuracy"]
                                             and rec["tpr_at_fpr_0.001"] < mm["tpr_at_fpr_0.001"]
                                             and rec["own_top1pct_adv"] <= mm["own_top1pct_adv"])
        verdicts.append(entry)
    return {"name": name, "attack": attack, "rule": cfg.analysis.rule, "grid_size": cfg.grid_size(),
            "bands": cfg.analysis.states.bands().label(), "grid": grid.model_dump(mode="json"),
            "judged_on": "TPR at 0.1% and 1% FPR; the mean final advantage of each run's own 1% most vulnerable "
                         "samples (own_top1pct_adv) and of the baseline's finally-vulnerable set V "
                         "(baseline_vulnerable_adv)",
            "oracle_note": "Points of kind oracle flag from the baseline's own final shadow-model plane: an upper "
                           "bound on what the dynamics could buy, not a realistic defence",
            "best_dp_means": "per metric, the lowest value among the DP-SGD points at least as accurate as the "
                             "point (NaN when none is); dominated_by_dp lists the DP points at least as accurate "
                             "and no worse on every one of " + ", ".join(DP_METRICS),
            "beats_matched_dp_means": "test accuracy at least the matched DP point's, a lower TPR at 0.1% FPR and "
                                      "an own-top-1% advantage no higher",
            "dp_matched": {k: clean(v) for k, v in matched.items()} if matched else None,
            "points": records, "verdicts": verdicts,
            "onion_baseline_cells": {"layout": "per point, G x G counts of its safe-to-high samples on the "
                                               "baseline plane: row = TPR_i cell from 0, column = FPR_i cell",
                                     "cells": cells}}


def run_defend(cfg: RunConfig, grid: DefendGrid, out: Path, progress: bool = True,
               log: Callable[[str], None] = print) -> tuple[SweepOutcome, dict[str, Path]]:
    """Run the study's points (skipping finished ones), then write the sweep's tables and the comparison."""
    out = Path(out)
    sweep, kinds = build_sweep(cfg, grid, out)
    result = run_sweep(sweep, out, progress=progress, log=log)
    paths: dict[str, Path] = {}
    rows = collect_rows(sweep.points, out)
    if rows:
        paths.update(write_tables(sweep.spec.name, comparison_table(rows, sweep.varying), sweep.varying, out))
    paths.update(defence_comparison(sweep, kinds, out, grid, log))
    return result, paths
