"""Stage orchestration: train -> score -> analyze -> report, recomputing exactly what is stale.

Every artifact is recorded in the manifest with the digest of what it was made from
(``store.provenance``); a stage makes the artifacts that are missing, damaged or stale and keeps
the current ones, so an interrupted stage resumes without redoing finished work. The manifest
also keeps a state per stage, for people and for ``privdyn`` to say what to run next.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from privdyn.config import ANALYZE_SECTIONS, SCORE_SECTIONS, TRAIN_SECTIONS, RunConfig
from privdyn.data import Dataset, load_dataset
from privdyn.errors import PrivdynError
from privdyn.pipeline import workers
from privdyn.store import atomic, provenance
from privdyn.store.rundir import RunDir
from privdyn.training.membership import balanced_membership

if TYPE_CHECKING:
    from privdyn.pipeline.run_level import RunAnalysis
    from privdyn.training.engine import MakeTrainer  # imports torch, which analysing and reporting do not need

console = Console(stderr=True)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as p:
        yield p


#: What to do when the signals of a run privdyn cannot train itself are missing or stale.
OUTSIDE_FIX = {
    "python": "call privdyn.audit(...) again with the same model, data and recipe: it trains what is missing "
              "and resumes a killed run",
    "record": "record every model and checkpoint with privdyn.Recorder, then run `privdyn assemble {run}`",
    "import": "import them again with `privdyn import ... --out {run}`",
}


def train(cfg: RunConfig, run: RunDir, progress: bool = True, data: Dataset | None = None,
          make_trainer: MakeTrainer | None = None, group_size: int | None = None,
          note: dict[str, Any] | None = None) -> None:
    """The train stage: draw the membership, train every model group and assemble the signals.

    ``data``, ``make_trainer``, ``group_size`` and ``note`` (recorded with the stage) come from
    :func:`privdyn.audit`, a dataset and recipe given in Python; without them the config's
    registered dataset and model are used. A run whose signals come from outside privdyn
    (``source.kind`` record or import) is only checked here.
    """
    digest = cfg.section_hash(*TRAIN_SECTIONS)
    mpath, m_digest = run.path / "membership.npy", provenance.membership_digest(cfg)
    outside = cfg.source.kind in ("record", "import") or (cfg.source.kind == "python" and make_trainer is None)
    origin = f"{cfg.source.kind} ({cfg.source.description or 'no description'})"
    if run.stage_done("train", digest):
        s_digest = provenance.signal_digest(cfg, run)
        stale = [mpath] if not provenance.is_current(run, mpath, m_digest) and not outside else []
        stale += [p for p in run.signal_files() if not provenance.is_current(run, p, s_digest)]
        if not stale:
            return
        if outside:
            raise PrivdynError(f"{run.path}: {', '.join(run.key(p) for p in stale)} damaged or stale, and privdyn "
                               f"cannot remake them: the signals come from {origin}. To fix it, "
                               + OUTSIDE_FIX[cfg.source.kind].format(run=run.path) + ".")
        # the per-group files are gone once the signals are assembled: retrain (seeded, so the
        # intact artifacts come out the same and what was computed from them stays current)
        console.print(f"damaged or stale: {', '.join(run.key(p) for p in stale)}; retraining")
        run.discard(*stale, run.path / "epochs.npy")
    elif outside:
        raise PrivdynError(f"{run.path} has no complete signals yet, and privdyn cannot train them from the "
                           f"command line: they come from {origin}. To make them, "
                           + OUTSIDE_FIX[cfg.source.kind].format(run=run.path) + ".")
    from privdyn.training.engine import run_train_stage  # torch: only when there is training to do

    run.mark_stage("train", "running", digest)
    n_pool = data.n_pool if data is not None else cfg.dataset.n_pool
    if n_pool:  # the analysis workers' imports overlap making the dataset and training
        workers.warm_up(cfg.analysis.workers, work_size(cfg, n_pool))
    ds = data if data is not None else load_dataset(cfg.dataset.name, cfg.dataset.n_pool, cfg.dataset.n_test,
                                                    cfg.seed, cfg.dataset.options, root=cfg.dataset.root)
    membership = ensure_membership(cfg, run, ds.n_pool)
    atomic.save_npy(run.path / "labels.npy", ds.y_pool)
    save_gallery_inputs(run, ds)
    with _progress(progress) as p:
        stats = run_train_stage(cfg, run, ds, membership, p, make_trainer, group_size)
    provenance.record(run, provenance.signal_digest(cfg, run), *run.signal_files())
    run.mark_stage("train", "done", digest, n_pool=ds.n_pool, n_test=len(ds.y_test), **stats, **(note or {}))


def work_size(cfg: RunConfig, n_pool: int) -> int:
    """Checkpoints x models x samples: what one attack's analysis reads (whether workers pay off)."""
    return len(cfg.checkpoint_epochs()) * cfg.training.n_models * n_pool


def _run_work_size(cfg: RunConfig, run: RunDir) -> int:
    return work_size(cfg, int(run.manifest()["stages"].get("train", {}).get("n_pool", 0)))


#: Pools whose inputs the train stage keeps (``inputs.npz``, float16) for the report's gallery: small
#: ones, which include the generated datasets that are slow to make again (MNIST-1D: about 10 s).
#: Larger pools are read again from their files by the analysis.
GALLERY_INPUTS_BYTES = 16 << 20


def save_gallery_inputs(run: RunDir, ds: Dataset) -> None:
    """``inputs.npz``: the pool's inputs (float16) of an image or sequence dataset that is small
    enough, so that the analysis can store the most vulnerable samples' pictures without making
    the dataset again."""
    if ds.kind in ("image", "sequence") and ds.x_pool.size * 2 <= GALLERY_INPUTS_BYTES:
        atomic.save_npz(run.path / "inputs.npz", compress=True, x=np.asarray(ds.x_pool, dtype=np.float16),
                        kind=np.array(ds.kind))


def ensure_membership(cfg: RunConfig, run: RunDir, n_pool: int) -> np.ndarray:
    """The run's membership matrix: the stored one when current, else drawn from the seed and recorded."""
    mpath, m_digest = run.path / "membership.npy", provenance.membership_digest(cfg)
    if provenance.is_current(run, mpath, m_digest):
        return np.load(mpath, allow_pickle=False)
    membership = balanced_membership(cfg.training.n_models, n_pool, cfg.seed)
    atomic.save_npy(mpath, membership)
    provenance.record(run, m_digest, mpath)
    return membership


def score(cfg: RunConfig, run: RunDir, attacks: list[str] | None = None, progress: bool = True) -> None:
    """Run the score stage for ``attacks`` (default: the config's). Named attacks are always rescored, others only
    when stale; only a pass over every configured attack marks the stage done."""
    from privdyn.pipeline.scoring import score_attacks
    from privdyn.store.provenance import scores_current

    digest = cfg.section_hash(*SCORE_SECTIONS)
    current = [a for a in cfg.attacks if scores_current(cfg, run, a)]
    if attacks is None and run.stage_done("score", digest) and current == cfg.attacks:
        return
    names = attacks or cfg.attacks
    # Only a pass that covers every configured attack completes the stage; scoring a subset
    # (or extra attacks) must not make a later `run` skip the configured ones.
    complete = set(cfg.attacks) <= set(names)
    if complete:
        run.mark_stage("score", "running", digest)
    # attacks named explicitly are rescored; otherwise a current artifact (e.g. finished before a
    # kill) is kept. Attacks sharing a fused pass (the LiRA variants) are scored together.
    todo = [a for a in names if attacks is not None or a not in current]
    with _progress(progress) as p:
        score_attacks(cfg, run, todo, p)
    if complete:
        run.mark_stage("score", "done", digest)


def require_current_scores(cfg: RunConfig, run: RunDir, attack: str) -> None:
    """Refuse scores that another setup made (other options, references, training or signals)."""
    if not provenance.scores_current(cfg, run, attack):
        state = "missing" if not run.score_path(attack).exists() else "stale (made with another setup)"
        raise PrivdynError(f"The scores of {attack} in {run.path} are {state}, so analysing them would "
                           f"describe another attack. Run `privdyn score {run.path} --attacks {attack}` "
                           f"or `privdyn run` on this config, which rescores exactly what is stale.")


def analyze(cfg: RunConfig, run: RunDir, attack: str | None = None, rule: str | None = None) -> dict:
    """Analyse every configured attack at the config's rule (or one ``attack`` and ``rule``),
    then the run-level analyses (:mod:`privdyn.pipeline.run_level`), then write ``summary.json``.
    An analysis that is current is not redone."""
    for a in [attack] if attack else cfg.attacks:
        require_current_scores(cfg, run, a)
    if attack is not None or rule is not None:
        from privdyn.pipeline.analysis import analyze as analyze_one

        a, r = attack or cfg.default_attack(), rule or cfg.analysis.rule
        with run.scores_in_memory():
            entry = analyze_one(cfg, run, a, r)
        _record_analysis(cfg, run, a, r, entry)
        return entry
    rule = cfg.analysis.rule
    todo, extras, extras_todo, entries = _analysis_state(cfg, run)
    digest = cfg.section_hash(*ANALYZE_SECTIONS)
    if not todo and not extras_todo and provenance.is_current(
            run, run.summary_path, provenance.summary_digest(cfg, run, entries)):
        _mark_done(run, "analyze", digest)  # e.g. killed after its last write
        return {}
    run.mark_stage("analyze", "running", digest)
    with run.scores_in_memory():  # every part below reads the scores again: decode them once
        return _analyze_all(cfg, run, rule, todo, extras, extras_todo, entries, digest)


def _analysis_state(cfg: RunConfig, run: RunDir) -> tuple[list[str], list[RunAnalysis], list[RunAnalysis], list[Path]]:
    """What the analysis stage would redo: the attacks and run-level analyses that are not current,
    with every enabled run-level analysis and the entries ``summary.json`` is made from."""
    from privdyn.pipeline.run_level import run_analyses

    rule = cfg.analysis.rule
    todo = [a for a in cfg.attacks
            if not provenance.is_current(run, run.analysis_dir(a, rule), provenance.analysis_digest(cfg, run, a, rule))]
    extras = [x for x in run_analyses() if x.enabled(cfg)]
    extras_todo = [x for x in extras if not x.current(cfg, run)]
    entries = [run.analysis_dir(a, rule) / ENTRY for a in cfg.attacks]
    entries += [p for x in extras for p in x.paths(run)[-1:]]
    return todo, extras, extras_todo, entries


def _analyze_all(cfg: RunConfig, run: RunDir, rule: str, todo: list[str], extras: list[RunAnalysis],
                 extras_todo: list[RunAnalysis], entries: list[Path], digest: str) -> dict:
    n = workers.n_workers(cfg.analysis.workers, len(todo) + len(extras_todo), _run_work_size(cfg, run))
    if n > 1:
        with workers.pool(n) as ex:
            _analyze_in_workers(cfg, run, rule, todo, extras_todo, ex)
            summary = ex.submit(workers.call, WRITE_SUMMARY, cfg, run, *_summary_parts(cfg, run, extras)).result()
    else:
        if todo or extras_todo:
            _analyze_here(cfg, run, rule, todo, extras_todo)
        summary = workers.call(WRITE_SUMMARY, cfg, run, *_summary_parts(cfg, run, extras))
    provenance.record(run, provenance.summary_digest(cfg, run, entries), run.summary_path)
    run.mark_stage("analyze", "done", digest)
    return summary


#: Writes ``summary.json`` (named, so that the stage does not import the analysis to call it in a worker).
WRITE_SUMMARY = "privdyn.pipeline.analysis:write_summary"


def _summary_parts(cfg: RunConfig, run: RunDir, extras: list[RunAnalysis]) -> tuple[dict, dict]:
    """Every attack's stored entry, with the run-level analyses' per-attack entries added, and the
    run-level analyses' own entries: what ``summary.json`` is made from."""
    per_attack = {a: atomic.read_json(run.analysis_dir(a, cfg.analysis.rule) / ENTRY) for a in cfg.attacks}
    run_entries: dict[str, Any] = {}
    for x in extras:
        got = x.read(run)
        for a, e in got.get("attacks", {}).items():
            per_attack[a][x.name] = e
        if "run" in got:
            run_entries[x.name] = got["run"]
    return per_attack, run_entries


def _analyze_here(cfg: RunConfig, run: RunDir, rule: str, todo: list[str], extras_todo: list[RunAnalysis]) -> None:
    """Every part in this process: the attacks together, sharing their bootstrap draws, then the
    run-level analyses."""
    from privdyn.pipeline.analysis import analyze_attacks, training_measures

    membership = run.load_array(run.path / "membership.npy", "membership")
    epochs = run.load_array(run.path / "epochs.npy", "checkpoint epochs")
    measures = training_measures(cfg, run, membership, epochs)  # shared by every part
    if todo:
        analyze_attacks(cfg, run, todo, rule, measures, done=lambda a, e: _record_analysis(cfg, run, a, rule, e))
    for x in extras_todo:
        x.run_and_record(cfg, run, membership, epochs, measures)


def _analyze_in_workers(cfg: RunConfig, run: RunDir, rule: str, todo: list[str], extras_todo: list[RunAnalysis],
                        ex: Executor) -> None:
    """Every part in worker processes (:mod:`privdyn.pipeline.workers`): one task per attack and
    per run-level analysis, each recorded here as soon as it is done (a killed stage keeps what
    finished). An analysis that reads the default attack's tables starts once they exist."""
    token = uuid.uuid4().hex  # the workers' measures belong to this stage only
    after_default = [x for x in extras_todo if x.reads_default_analysis and cfg.default_attack() in todo]
    pending: dict[Future, Callable[[Any], None]] = {}

    def submit_run_analysis(x: RunAnalysis) -> None:
        digest = x.digest(cfg, run)  # of the inputs as they are now, before the task writes
        f = ex.submit(workers.call, "privdyn.pipeline.analysis:run_analysis_task", cfg, run.path, x.name, token)
        pending[f] = lambda got: x.record(run, digest, got)

    def attack_done(a: str) -> Callable[[Any], None]:
        def done(entry: dict) -> None:
            _record_analysis(cfg, run, a, rule, entry)
            if a == cfg.default_attack():
                for x in after_default:
                    submit_run_analysis(x)
        return done

    # the default attack first: the analyses that read its tables wait for it
    for a in sorted(todo, key=lambda a: a != cfg.default_attack()):
        f = ex.submit(workers.call, "privdyn.pipeline.analysis:attack_task", cfg, run.path, a, rule, token)
        pending[f] = attack_done(a)
    for x in extras_todo:
        if x not in after_default:
            submit_run_analysis(x)
    while pending:
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for f in finished:
            pending.pop(f)(f.result())


def _mark_done(run: RunDir, stage: str, digest: str) -> None:
    if not run.stage_done(stage, digest):
        run.mark_stage(stage, "done", digest)


#: Each analysis folder's summary entries, kept so that a current analysis is not redone.
ENTRY = "entry.json"


def _record_analysis(cfg: RunConfig, run: RunDir, attack: str, rule: str, entry: dict) -> None:
    folder = run.analysis_dir(attack, rule)
    atomic.write_json(folder / ENTRY, entry)
    provenance.record(run, provenance.analysis_digest(cfg, run, attack, rule), folder)


def report(cfg: RunConfig, run: RunDir, force: bool = False) -> Path:
    """Write the report, unless it is current with the analysis (``force``: always)."""
    index = run.report_dir / "index.html"
    inputs = [run.summary_path, *(run.analysis_dir(a, cfg.analysis.rule) for a in cfg.attacks)]
    digest = cfg.section_hash(*ANALYZE_SECTIONS)
    if not force and provenance.is_current(run, run.report_dir, provenance.report_digest(cfg, run, inputs)):
        _mark_done(run, "report", digest)
        return index  # nothing it reads has changed
    require_current_analysis(cfg, run)
    run.mark_stage("report", "running", digest)
    n = workers.n_workers(cfg.analysis.workers, FIGURE_SHARES + 1, _run_work_size(cfg, run))
    if n > 1:
        with workers.pool(n) as ex:
            index = _report_in_workers(cfg, run, ex)
    else:
        from privdyn.report.html import build_report  # matplotlib and plotly: only when there is a report to write

        index = build_report(cfg, run)
    provenance.record(run, provenance.report_digest(cfg, run, inputs), run.report_dir)
    run.mark_stage("report", "done", digest)
    return index


#: The report's tasks besides its page: shares of the figures (every FIGURE_SHARES-th from each
#: share's first), small enough that two to four workers finish them together.
FIGURE_SHARES = 6

#: The report stage's tasks (:mod:`privdyn.pipeline.reporting`), named so that this process
#: imports neither matplotlib nor plotly.
REPORTING = "privdyn.pipeline.reporting"


def _report_in_workers(cfg: RunConfig, run: RunDir, ex: Executor) -> Path:
    """The page (its panels) and the shares of the figures at once, in workers; then the figures'
    previews, put into the page here."""
    args = (run.path, cfg.default_attack(), cfg.analysis.rule, uuid.uuid4().hex)
    page = ex.submit(workers.call, f"{REPORTING}:page_parts", *args)  # the dearest task first
    shares = [ex.submit(workers.call, f"{REPORTING}:figure_share", *args, i, FIGURE_SHARES)
              for i in range(FIGURE_SHARES)]
    head, tail = page.result()
    drawn = [w for f in shares for w in f.result()]
    previews = ex.submit(workers.call, f"{REPORTING}:gallery", drawn).result()
    index = run.report_dir / "index.html"
    atomic.write_text(index, head + previews + tail)
    return index


def require_current_analysis(cfg: RunConfig, run: RunDir) -> None:
    """Refuse to report an analysis that is missing or stale: the page would show old numbers."""
    todo, _, extras_todo, entries = _analysis_state(cfg, run)
    stale = [*todo, *(x.name for x in extras_todo)]
    if not stale and not provenance.is_current(run, run.summary_path, provenance.summary_digest(cfg, run, entries)):
        stale = ["summary.json"]
    if stale:
        raise PrivdynError(
            f"The analysis in {run.path} is missing or stale ({', '.join(stale)}: made from other scores or "
            "options, or not made yet), so a report would show numbers that no longer hold. Run "
            f"`privdyn analyze {run.path}` first (it redoes only what is stale), then `privdyn report {run.path}`.")


def run_all(cfg: RunConfig, out: str | Path, progress: bool = True,
            with_report: bool = True) -> tuple[RunDir, Path | None]:
    """Every stage that is not done yet; returns the run directory and the report path.

    ``with_report=False`` stops after the analysis (sweeps whose runs need no HTML report).
    """
    run = RunDir(out)
    with run.locked():
        run.init(cfg)
        train(cfg, run, progress)
        score(cfg, run, progress=progress)
        analyze(cfg, run)
        return run, report(cfg, run) if with_report else None
