"""The ``privdyn`` command line: run, train, score, analyze, report, datasets."""

from __future__ import annotations

import contextlib
import errno
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from privdyn.errors import PrivdynError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Per-sample membership-inference privacy dynamics over training.")
out = Console()
err = Console(stderr=True)

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set training.epochs=10")]
RunDirArg = Annotated[Path, typer.Argument(help="A run directory made by `privdyn run`.")]
DataRootOpt = Annotated[Path | None, typer.Option(
    "--data-root",
    help="Folder holding dataset files (sets dataset.root; default $PRIVDYN_DATA_ROOT or ~/.privdyn/data).")]


RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="Train on this Ray cluster (HOST:PORT; 'local' starts one on loopback): sets "
    "training.backend=ray and ray.address.")]


def _ray_set(address: str | None) -> list[str]:
    """--set overrides for --ray-address."""
    import json

    if address is None:
        return []
    return ["training.backend=ray", f"ray.address={json.dumps(None if address == 'local' else address)}"]


def _root_set(data_root: Path | None) -> list[str]:
    """A --set override for dataset.root (absolute, so the run directory works from anywhere)."""
    import json

    return [] if data_root is None else [f"dataset.root={json.dumps(str(data_root.expanduser().resolve()))}"]


@contextlib.contextmanager
def _open(run_dir: Path, overrides: list[str] | None = None) -> Iterator[tuple[Any, Any]]:
    """The run directory and its config, with the run's lock held (``--set`` overrides applied)."""
    from privdyn.config import apply_overrides, config_from_dict
    from privdyn.store.rundir import RunDir

    run = RunDir(run_dir)
    if not run.is_run():
        raise PrivdynError(f"{run.path} is not a privdyn run directory (no config.yaml). "
                           "Create one with `privdyn run CONFIG --out DIR`.")
    with run.locked():
        cfg = run.load_config()
        if overrides:
            cfg = config_from_dict(apply_overrides(cfg.model_dump(mode="json"), overrides), "--set")
            run.init(cfg)
        yield run, cfg


def _headline(cfg: Any, s: dict[str, Any], seconds: float) -> None:
    """Print a finished run's headline numbers (n/a where the analysis has none, e.g. no test split)."""

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    final = s["final"]
    out.print(f"[bold]done[/] in {seconds:.0f} s: {cfg.default_attack()} at {cfg.analysis.rule}, final TPR at 1% "
              f"FPR {f(final['tpr_at_fpr_0.01'])}, AUC {f(final['auc'])}, test accuracy {f(final['test_accuracy'])}, "
              f"{s['n_high_final']} samples in the high state")


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config; omit for the built-in quickstart.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/NAME).")] = None,
    set_: SetOpt = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")] = False,
    data_root: DataRootOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Train, score, analyze and report: every stage that is not done yet (resumes a killed run)."""
    from privdyn.config import load_config
    from privdyn.pipeline import run_all

    cfg = load_config(config, [*(set_ or []), *_root_set(data_root), *_ray_set(ray_address)])
    target = out_dir or Path("runs") / cfg.name
    t0 = time.perf_counter()
    rd, index = run_all(cfg, target, progress=not no_progress)
    _headline(cfg, __import__("json").loads(rd.summary_path.read_text()), time.perf_counter() - t0)
    out.print(f"run directory: {rd.path}")
    out.print(f"report: {index}")


@app.command()
def train(run_dir: RunDirArg, set_: SetOpt = None, data_root: DataRootOpt = None,
          ray_address: RayAddressOpt = None) -> None:
    """Train the models of a run directory (resumes at the last completed checkpoint)."""
    from privdyn import pipeline

    with _open(run_dir, [*(set_ or []), *_root_set(data_root), *_ray_set(ray_address)]) as (rd, cfg):
        pipeline.train(cfg, rd)
        out.print(f"trained: {rd.path}")


@app.command()
def score(run_dir: RunDirArg,
          attacks: Annotated[str | None, typer.Option(help="Comma-separated attacks (default: the config's).")] = None,
          set_: SetOpt = None) -> None:
    """Score attacks at every checkpoint."""
    from privdyn import pipeline
    from privdyn.attacks import ATTACKS

    with _open(run_dir, set_) as (rd, cfg):
        names = [a.strip() for a in attacks.split(",")] if attacks else None
        unknown = [a for a in names or [] if a not in ATTACKS]
        if unknown:
            raise PrivdynError(f"Unknown attack(s) {unknown}; available: {', '.join(sorted(ATTACKS))}")
        pipeline.score(cfg, rd, names)
        out.print(f"scored: {', '.join(names or cfg.attacks)}")


@app.command()
def analyze(run_dir: RunDirArg,
            attack: Annotated[str | None, typer.Option(help="Analyse this attack only.")] = None,
            rule: Annotated[str | None, typer.Option(help="Operating-point rule, e.g. fpr:0.001 or score:0.")] = None,
            set_: SetOpt = None) -> None:
    """Place samples on the plane and measure the dynamics; writes Parquet tables and summary.json."""
    from privdyn import pipeline
    from privdyn.config import check_rule

    with _open(run_dir, set_) as (rd, cfg):
        if rule is not None:
            check_rule(rule)
        from privdyn.attacks import ATTACKS

        if attack is not None and attack not in ATTACKS:
            raise PrivdynError(f"Unknown attack {attack!r}; available: {', '.join(sorted(ATTACKS))}")
        if attack is not None and not rd.score_path(attack).exists():
            raise PrivdynError(f"Attack {attack!r} has no scores in {rd.path}: run "
                               f"`privdyn score {rd.path} --attacks {attack}` first")
        pipeline.analyze(cfg, rd, attack, rule)
        out.print(f"analysed: {rd.path / 'analysis'}")


@app.command()
def report(run_dir: RunDirArg) -> None:
    """Write report/index.html (offline) with PNG and PDF figures."""
    from privdyn import pipeline

    with _open(run_dir) as (rd, cfg):
        out.print(f"report: {pipeline.report(cfg, rd, force=True)}")


@app.command()
def assemble(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by privdyn.Recorder.create(...).")],
    no_analysis: Annotated[bool, typer.Option("--no-analysis", help="Only build the signal arrays.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")] = False,
) -> None:
    """Check a recorded run is complete and build its signal arrays; then score, analyze and report."""
    from privdyn.pipeline.assemble import assemble as assemble_run

    rd, index = assemble_run(run_dir, analysis=not no_analysis, progress=not no_progress)
    out.print(f"assembled: {rd.path / 'signals'}")
    if index is not None:
        out.print(f"report: {index}")


@app.command()
def verify(run_dir: RunDirArg) -> None:
    """Check every artifact of a run directory against its checksums (truncation, bit flips)."""
    from privdyn.store.rundir import RunDir

    rd = RunDir(run_dir)
    if not rd.is_run():
        raise PrivdynError(f"{rd.path} is not a privdyn run directory (no config.yaml).")
    with rd.locked():
        ok, bad = rd.verify_all()
    out.print(f"{len(ok)} artifacts intact in {rd.path}")
    for path, problem in bad:
        err.print(f"[bold red]damaged:[/] {path.relative_to(rd.path)}: {problem}", highlight=False, soft_wrap=True)
    if bad:
        raise SystemExit(1)


@app.command()
def compare(runs: Annotated[list[Path], typer.Argument(help="Analysed run directories.")],
            out_dir: Annotated[Path, typer.Option("--out", help="Folder for the comparison report.")]) -> None:
    """Compare runs side by side: DIR/index.html (offline) with the metric table and overlaid curves."""
    from privdyn.report.compare import build_comparison

    out.print(f"comparison: {build_comparison(runs, out_dir)}")


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="A sweep YAML file (docs/sweeps.md).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Sweep folder (default: runs/sweeps/NAME).")] = None,
    data_root: DataRootOpt = None,
    select: Annotated[list[str] | None, typer.Option(
        "--select", help="Run only the points whose slug matches this glob (repeatable), e.g. '*seed-0'.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the points and exit.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")] = False,
    rule: Annotated[list[str] | None, typer.Option(
        "--rule", help="Also tabulate the headline dynamics at this operating-point rule (repeatable), "
                       "e.g. score:0 or fpr:0.1; read from each run's sensitivity table.")] = None,
) -> None:
    """Run every point of a sweep (finished runs are skipped), then write the comparison tables and report."""
    from privdyn.config import check_rule
    from privdyn.sweep import compare, load_sweep, run_sweep, select_points

    for r in rule or []:
        check_rule(r, "--rule: ")
    sw = load_sweep(sweep_file, data_root)
    target = out_dir or Path("runs") / "sweeps" / sw.spec.name
    if dry_run:
        from rich.table import Column

        t = Table(Column("slug", overflow="fold"), *sw.varying, "seed")
        for p in select_points(sw, select):
            t.add_row(p.slug, *(str(p.values[k]) for k in sw.varying), str(p.values["seed"]))
        out.print(t)
        return

    def log(line: str) -> None:
        err.print(line, markup=False, highlight=False, soft_wrap=True)

    result = run_sweep(sw, target, select, progress=not no_progress, log=log)
    paths = compare(sw, target, log=log, rules=rule)
    counts = {s: sum(o.status == s for o in result.outcomes) for s in ("done", "skipped", "failed")}
    out.print(f"sweep {sw.spec.name}: {counts['done']} ran, {counts['skipped']} already finished, "
              f"{counts['failed']} failed; folder {target}")
    for key in ("markdown", "csv", "table", "report"):
        if key in paths:
            out.print(f"{key}: {paths[key]}")
    if result.failed:
        err.print(f"[bold red]{len(result.failed)} point(s) failed[/] (details in {target / 'manifest.json'}):")
        for o in result.failed:
            err.print(f"  - {o.slug}: {o.error}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(1)


@app.command()
def defend(
    config: Annotated[Path | None, typer.Argument(help="YAML config of the baseline; omit for the quickstart.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Study folder (default: runs/defend/NAME).")] = None,
    set_: SetOpt = None,
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="A grid axis KEY=V1,V2 (repeatable): actions, rules, oracle, random, share, epoch, continuous, "
                       "clip_norm, noise_multiplier, weight, dp_noise, dp_clip, match (docs/defences.md).")] = None,
    data_root: DataRootOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the points and exit.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")] = False,
) -> None:
    """Baseline, interventions on at-risk samples (remove, clip, weight), controls, oracle, DP-SGD; one comparison."""
    from privdyn.config import load_config
    from privdyn.sweep.defend import build_sweep, parse_grid, run_defend

    cfg = load_config(config, [*(set_ or []), *_root_set(data_root)])
    target = out_dir or Path("runs") / "defend" / cfg.name
    g = parse_grid(grid)
    if dry_run:
        from rich.markup import escape

        sw, kinds = build_sweep(cfg, g, target)
        t = Table("point", "kind", "what")
        for p in sw.points:
            d, dp = p.config.defence, p.config.training.dp
            t.add_row(p.slug, kinds[p.slug], escape(d.label()) if d.enabled else
                      f"DP-SGD sigma={dp.noise_multiplier:g} C={dp.max_grad_norm:g}" if dp.enabled else "no defence")
        out.print(t)
        return
    result, paths = run_defend(cfg, g, target, progress=not no_progress,
                               log=lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True))
    counts = {s: sum(o.status == s for o in result.outcomes) for s in ("done", "skipped", "failed")}
    out.print(f"defend {cfg.name}: {counts['done']} ran, {counts['skipped']} already finished, {counts['failed']} "
              f"failed; folder {target}")
    for key in ("frontier", "summary", "report"):
        if key in paths:
            out.print(f"{key}: {paths[key]}")
    if result.failed:
        for o in result.failed:
            err.print(f"  - {o.slug}: {o.error}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(1)


@app.command()
def datasets(data_root: DataRootOpt = None) -> None:
    """List the datasets privdyn knows, where each is looked for, and whether it was found."""
    from privdyn.data import DATASETS
    from privdyn.data.roots import data_root as resolve_root

    root = resolve_root(data_root)
    t = Table()
    for header in ("name", "description", "where (ROOT = the data root)", "status"):
        t.add_column(header, overflow="fold")  # paths wrap whole, never cut to "…": they are what the user needs
    for e in DATASETS.values():
        t.add_row(e.name, e.description, e.where, e.status(root))
    out.print(t)
    out.print(f"data root: {root} (--data-root, dataset.root or $PRIVDYN_DATA_ROOT; default ~/.privdyn/data)")


LayoutOpt = Annotated[str, typer.Option("--layout", help="lira (LOGDIR/experiment-*/keep.npy, logits/%010d.npy, "
                                        "y_train.npy) or generic (labels, membership, epochs and logits .npy files); "
                                        "docs/import.md.")]


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="The folder holding the logits (a LiRA LOGDIR or a generic folder).")],
    layout: LayoutOpt,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/NAME).")] = None,
    name: Annotated[str | None, typer.Option(help="The run's name (default: the source folder's).")] = None,
    queries: Annotated[str | None, typer.Option(
        help="Comma-separated names of the Q augmentations (default: identity, aug1, aug2, ...).")] = None,
    attacks: Annotated[str | None, typer.Option(help="Comma-separated attacks (default: the config's).")] = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a run in --out made from other files.")] = False,
    no_analysis: Annotated[bool, typer.Option("--no-analysis", help="Only import the signals.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide progress.")] = False,
) -> None:
    """Import logits of models trained elsewhere; then score, analyze and report (docs/import.md)."""
    from privdyn.ingest.api import import_logits

    def split(v: str | None) -> list[str] | None:
        return [x.strip() for x in v.split(",")] if v is not None else None

    t0 = time.perf_counter()
    res = import_logits(source, layout, out_dir, name=name, queries=split(queries), attacks=split(attacks),
                        overrides=set_, force=force, analysis=not no_analysis, progress=not no_progress,
                        log=lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True))
    if res.summary is not None:
        _headline(res.config, res.summary, time.perf_counter() - t0)
    out.print(f"run directory: {res.run.path}")
    if res.report is not None:
        out.print(f"report: {res.report}")


@app.command()
def export(
    run_dir: RunDirArg,
    layout: LayoutOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="A new (or empty) folder for the files.")],
    form: Annotated[str, typer.Option(help="generic layout: logits as one array, one file per checkpoint "
                                      "(logits/t000.npy ...) or per model (logits/m000.npy ...).")] = "checkpoint",
) -> None:
    """Write a run's stored logits (`checkpoints.save_logits: true`) in the LiRA or the generic layout."""
    from privdyn.ingest.export import export_logits
    from privdyn.store.rundir import RunDir

    target = export_logits(run_dir, layout, out_dir, form)
    if layout == "lira" and RunDir(run_dir).signal_path("logits", "test").exists():
        err.print("note: the LiRA layout has no test split, so the test logits were not exported "
                  "(--layout generic keeps them)")
    out.print(f"exported: {target}")

#: Errors of a path the user gave (not a directory, no such folder, no permission, read-only):
#: bad input, exit 2 with the path named.
_PATH_ERRNOS = {errno.ENOTDIR, errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR,
                errno.ENAMETOOLONG, errno.ELOOP}


def main() -> None:
    """The ``privdyn`` entry point: a user error (exit 2), a full disk (2) or Ctrl-C (130) prints one line
    instead of a traceback."""
    try:
        app(standalone_mode=False)
    except PrivdynError as e:
        err.print("[bold red]error:[/]", end=" ")
        err.print(str(e), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume where it stopped")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:
        from privdyn.store.atomic import is_disk_full

        if is_disk_full(e):
            err.print("[bold red]error:[/]", end=" ")
            err.print(f"the disk is full ({e}). Nothing half-written was kept: every file privdyn writes "
                      "appears only once complete. Free some space (or move the run directory to a larger "
                      "disk) and run the same command again; it resumes where it stopped.",
                      markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        if isinstance(e, OSError) and e.errno in _PATH_ERRNOS and e.filename is not None:
            err.print("[bold red]error:[/]", end=" ")
            err.print(f"cannot use {e.filename}: {e.strerror}. Nothing half-written was kept. Give a path "
                      "that can be created and written (for --out, a new or empty directory in a folder you "
                      "may write to) and run the command again.", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        # Usage errors (unknown option, missing argument) come from the click that typer
        # bundles or depends on, depending on its version: recognise them by their interface.
        show, code = getattr(e, "show", None), getattr(e, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        if type(e).__name__ == "Abort":
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
