"""The run directory: its layout, manifest and stage bookkeeping.

Layout::

    RUN/config.yaml          resolved config
    RUN/manifest.json        versions, seeds, per-stage state, hash and timings
    RUN/membership.npy       bool [M, N]
    RUN/epochs.npy           int [T]
    RUN/signals/NAME.zarr    [T, M, N, Q] pool signals;  signals/test/NAME.zarr for the test split
    RUN/scores/ATTACK.zarr   float32 [T, M, N]
    RUN/analysis/ATTACK/RULE/{sample_epoch,sample,epoch,transitions}.parquet, plane.npz
    RUN/summary.json
    RUN/report/index.html and figures

The checkpoint arrays are zarr v3 (``store.arrays``); every other file has a checksum sidecar
(``store.integrity``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from privdyn.config import RunConfig, dump_config
from privdyn.errors import PrivdynError
from privdyn.store import arrays, atomic, faults, integrity

STAGES = ("train", "score", "analyze", "report")
#: Files that mark a directory as a privdyn run directory, when privdyn's checksum sidecar is
#: beside them (another program's ``config.yaml`` or ``manifest.json`` has none).
MARKERS = ("manifest.json", "config.yaml")
LOCK_NAME = ".lock"
#: Bytes of scores :meth:`RunDir.scores_in_memory` may keep (float64): the quickstart's three
#: attacks take 92 MB; a paper-scale attack (N = 50,000, T = 50, M = 64) 1.3 GB, so it streams.
SCORES_IN_MEMORY = 1 << 29
#: Run directories this process holds the lock of (the lock is re-entrant within a process).
_HELD: set[Path] = set()


def rule_slug(rule: str) -> str:
    """A folder-safe name for an operating-point rule (``fpr:0.01`` -> ``fpr_0.01``)."""
    return rule.replace(":", "_")


def versions() -> dict[str, str]:
    """The versions of privdyn, Python, torch, numpy and pandas, for the manifest: from the
    installed packages' metadata, so recording them does not import torch."""
    from importlib.metadata import version

    from privdyn import __version__

    return {"privdyn": __version__, "python": platform.python_version(),
            **{name: version(name) for name in ("torch", "numpy", "pandas")}}


def _is_bookkeeping(name: str) -> bool:
    """True for the files privdyn writes before a run's markers: the lock, and the temp files and
    checksum sidecars of the first atomic write (a second process starting at the same moment sees
    these and must reach the lock, which tells it the run is in use)."""
    return name == LOCK_NAME or atomic.is_leftover(name)


class RunDir:
    """Paths and bookkeeping of one run directory (no heavy I/O here)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._scores_kept: dict[tuple[Path, str], np.ndarray] | None = None  # see scores_in_memory
        self._scores_budget = 0

    # paths -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        """``RUN/config.yaml``, the resolved config."""
        return self.path / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        """``RUN/manifest.json``."""
        return self.path / "manifest.json"

    def signal_path(self, name: str, split: str = "pool") -> Path:
        """``RUN/signals/NAME.zarr``, or ``RUN/signals/test/NAME.zarr`` when ``split`` is ``"test"``."""
        return self.path / "signals" / ("test" if split == "test" else "") / f"{name}{arrays.SUFFIX}"

    def score_path(self, attack: str) -> Path:
        """``RUN/scores/ATTACK.zarr``, the attack's float32 scores ``[T, M, N]``."""
        return self.path / "scores" / f"{attack}{arrays.SUFFIX}"

    def analysis_dir(self, attack: str, rule: str) -> Path:
        """``RUN/analysis/ATTACK/RULE``: the tables and plane of one attack at one operating-point rule."""
        return self.path / "analysis" / attack / rule_slug(rule)

    @property
    def summary_path(self) -> Path:
        """``RUN/summary.json``."""
        return self.path / "summary.json"

    @property
    def report_dir(self) -> Path:
        """``RUN/report``: the HTML report and its figures."""
        return self.path / "report"

    def group_dir(self, group: int) -> Path:
        """``RUN/train/group_GGG``: training group ``group``'s state and per-checkpoint signals, deleted once
        the signals are assembled."""
        return self.path / "train" / f"group_{group:03d}"

    # ownership -------------------------------------------------------------------------
    def is_run(self) -> bool:
        """True when the directory holds a ``manifest.json`` or a ``config.yaml`` that privdyn wrote
        (with its checksum sidecar)."""
        return any((self.path / m).is_file() and integrity.sum_path(self.path / m).is_file() for m in MARKERS)

    def check_writable(self) -> None:
        """Refuse a directory that exists, holds files and is not a privdyn run: writing there
        would overwrite a user's files."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise PrivdynError(f"{self.path} is a file, not a directory: choose another --out directory.")
        if not self.is_run() and not all(_is_bookkeeping(p.name) for p in self.path.iterdir()):
            raise PrivdynError(
                f"{self.path} already holds files and is not a privdyn run directory (no manifest.json "
                "or config.yaml written by privdyn), so privdyn will not write into it: its files could "
                "be overwritten. Choose a new or empty --out directory.")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory's exclusive lock (``RUN/.lock``, released when the process ends).

        A second process gets a clear error instead of two writers overwriting each other. Temp
        files of writes that a kill interrupted are removed once the lock is held.
        """
        self.check_writable()
        key = self.path.resolve()
        if key in _HELD:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_NAME
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock.read_text().strip() or "another process"
            raise PrivdynError(
                f"{self.path} is in use by privdyn ({holder}). Two processes in one run directory would "
                "overwrite each other's artifacts: wait for that one to finish (or stop it), or choose "
                "another --out directory.") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"process {os.getpid()} on {platform.node()}".encode())
            _HELD.add(key)
            for tmp in self.path.rglob(".*.tmp"):
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
            yield
        finally:
            _HELD.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # manifest ----------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The manifest, verified (``{"stages": {}}`` before there is one); a damaged one is a
        :class:`PrivdynError`, since without it no artifact can be trusted."""
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            integrity.verify(self.manifest_path)
            m = json.loads(self.manifest_path.read_text())
        except integrity.CorruptArtifact as e:
            raise PrivdynError(f"{e} The manifest says which artifacts are current, so without it privdyn "
                               "cannot trust this run: move the run directory aside and rerun into a new one."
                               ) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            m = None
        if not isinstance(m, dict) or not isinstance(m.get("stages", {}), dict):
            raise PrivdynError(
                f"{self.manifest_path} is corrupt (not a JSON manifest), so privdyn cannot tell which "
                "artifacts are current. Move the run directory aside and rerun into a new one.")
        m.setdefault("stages", {})
        return m

    def _write_manifest(self, m: dict[str, Any]) -> None:
        atomic.write_json(self.manifest_path, m)

    def artifact_current(self, key: str, digest: str, path: Path) -> bool:
        """True when artifact ``key`` exists at ``path``, intact, with the content recorded when it
        was made from ``digest`` (a folder: the same files, none missing or added)."""
        entry = self.manifest().get("artifacts", {}).get(key, {})
        return (entry.get("digest") == digest and path.exists() and entry.get("content") == self.content_digest(path)
                and self.intact(path))

    @staticmethod
    def _members(paths: tuple[Path, ...]) -> list[Path]:
        """The artifacts named: a checkpoint array as itself, a plain folder as the files in it."""
        out: list[Path] = []
        for p in paths:
            if p.is_dir() and not arrays.is_array(p):
                out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            else:
                out.append(p)
        return out

    @classmethod
    def content_digest(cls, *paths: Path) -> str:
        """A digest of the named artifacts' contents, from their checksums (cheap: no data is read)."""
        h = hashlib.sha256()
        for p in cls._members(paths):
            if arrays.is_array(p):
                h.update(str(p.name).encode() + arrays.array_digest(p).encode())
                continue
            side = integrity.sum_path(p)
            h.update(str(p.name).encode() + (side.read_bytes() if side.exists() else b"missing"))
        return h.hexdigest()[:16]

    def signal_files(self) -> list[Path]:
        """Every artifact training makes from the membership matrix: epochs, labels, signals."""
        return [self.path / n for n in ("epochs.npy", "labels.npy")] + sorted(
            (self.path / "signals").rglob(f"*{arrays.SUFFIX}"))

    @staticmethod
    def discard(*paths: Path) -> None:
        """Remove artifacts (files or checkpoint arrays) so that their stage makes them again."""
        for p in paths:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    @classmethod
    def intact(cls, *paths: Path) -> bool:
        """True when every path exists and matches its checksum (a folder: every file in it)."""
        if not all(p.exists() for p in paths):
            return False
        try:
            for p in cls._members(paths):
                if arrays.is_array(p):
                    arrays.verify_array(p)
                else:
                    integrity.verify(p)
        except (FileNotFoundError, integrity.CorruptArtifact):
            return False
        return True

    def key(self, path: Path) -> str:
        """An artifact's manifest key: its path in the run directory."""
        return path.relative_to(self.path).as_posix()

    def record_artifacts(self, entries: dict[str, dict[str, Any]]) -> None:
        """Record finished artifacts (key -> {digest, content}) after their atomic writes."""
        m = self.manifest()
        now = time.time()
        m.setdefault("artifacts", {}).update({k: {**v, "finished": now} for k, v in entries.items()})
        self._write_manifest(m)
        for k in entries:
            faults.reached(f"recorded:{k}")

    def stage_done(self, stage: str, digest: str) -> bool:
        """True when ``stage`` is done with the section hash ``digest`` (a changed config makes it not done)."""
        st = self.manifest()["stages"].get(stage, {})
        return st.get("state") == "done" and st.get("hash") == digest

    def mark_stage(self, stage: str, state: str, digest: str, **extra: Any) -> None:
        """Record ``stage``'s ``state``, hash, timings and ``extra`` fields; starting a stage (``running``)
        marks every later recorded stage stale."""
        m = self.manifest()
        entry = m["stages"].setdefault(stage, {})
        now = time.time()
        if state == "running":
            entry.clear()
            entry["started"] = now
        entry.update(state=state, hash=digest, **extra)
        if state == "done":
            entry["finished"] = now
            entry["seconds"] = round(now - entry.get("started", now), 3)
        # a stage that reruns makes everything after it stale
        if state == "running":
            for later in STAGES[STAGES.index(stage) + 1:]:
                if later in m["stages"]:
                    m["stages"][later]["state"] = "stale"
        self._write_manifest(m)

    # config ------------------------------------------------------------------------------
    def init(self, cfg: RunConfig) -> None:
        """Create the run directory for ``cfg``, or check an existing one was made by it.

        Changing anything that produced the trained signals is an error (the artifacts would be
        stale); later sections may change, and the stages they feed are recomputed.
        """
        from privdyn.config import TRAIN_SECTIONS

        self.check_writable()
        self.path.mkdir(parents=True, exist_ok=True)
        m = self.manifest()
        train_hash = cfg.section_hash(*TRAIN_SECTIONS)
        if m.get("train_hash") not in (None, train_hash) and not self.has_training_artifacts():
            m["stages"] = {}  # a start that failed before training made anything: nothing to protect
        elif m.get("train_hash") not in (None, train_hash):  # what trained_otherwise tests, on the read manifest
            raise PrivdynError(
                f"Run directory {self.path} was made with a different training setup "
                f"(seed, dataset, model, training, checkpoints or queries). Reusing it would mix "
                "stale artifacts. Choose a new --out directory, or delete this one to start over."
            )
        atomic.write_text(self.config_path, dump_config(cfg))
        m.update(train_hash=train_hash, seed=cfg.seed, versions=versions())
        m.setdefault("stages", {})
        self._write_manifest(m)

    def trained_otherwise(self, cfg: RunConfig) -> bool:
        """True when this directory holds training artifacts of another training setup than
        ``cfg``'s (:meth:`init` refuses it: reusing them would mix stale artifacts)."""
        from privdyn.config import TRAIN_SECTIONS

        made = self.manifest().get("train_hash")
        return made not in (None, cfg.section_hash(*TRAIN_SECTIONS)) and self.has_training_artifacts()

    def has_training_artifacts(self) -> bool:
        """True once training has written anything (the membership matrix, groups or signals)."""
        return any((self.path / p).exists() for p in ("membership.npy", "train", "signals", "epochs.npy"))

    def load_config(self) -> RunConfig:
        """The run's config from ``config.yaml``, verified; a :class:`PrivdynError` when the directory
        has none or it was changed after privdyn wrote it (the artifacts were made from the original)."""
        from privdyn.config import load_config

        if not self.config_path.exists():
            raise PrivdynError(f"{self.path} is not a privdyn run directory (no config.yaml). "
                               "Create one with `privdyn run CONFIG --out DIR`.")
        try:
            integrity.verify(self.config_path)
        except integrity.CorruptArtifact:
            raise PrivdynError(
                f"{self.config_path} was changed after privdyn wrote it (it does not match its checksum), "
                "so it may no longer describe the artifacts beside it. A run's config is not edited in place: "
                "restore the file, or run the edited config into a new directory (`privdyn run EDITED.yaml "
                "--out NEW_DIR`). Attack and analysis keys of this run can be changed with --set, e.g. "
                f"`privdyn analyze {self.path} --set analysis.rule=fpr:0.1`.") from None
        return load_config(self.config_path)

    # arrays ------------------------------------------------------------------------------
    def next_stage(self) -> str:
        """The first stage that is not done: what to run next."""
        stages = self.manifest()["stages"]
        return next((s for s in STAGES if stages.get(s, {}).get("state") != "done"), "report")

    def missing(self, what: str) -> PrivdynError:
        """The error for a missing artifact, naming the stage to run next."""
        stages = self.manifest()["stages"]
        if all(stages.get(s, {}).get("state") == "done" for s in STAGES):
            return PrivdynError(f"{what} is not in {self.path}: every stage of this run has finished, so its "
                                "config does not make it.")
        stage = self.next_stage()
        return PrivdynError(f"{what} is missing from {self.path}: its {stage} stage has not finished. Run "
                            f"`privdyn run CONFIG --out {self.path}` (or `privdyn {stage} {self.path}`), which "
                            "resumes where it stopped.")

    def _check_exists(self, path: Path, what: str) -> None:
        if not path.exists():
            raise self.missing(f"{path.relative_to(self.path) if path.is_relative_to(self.path) else path} "
                               f"({what})")

    def load_array(self, path: Path, what: str) -> np.ndarray:
        """A small ``.npy`` artifact (membership, epochs, labels), verified, in memory."""
        self._check_exists(path, what)
        integrity.verify(path)
        return np.load(path, allow_pickle=False)

    def checkpoints(self, path: Path, what: str) -> arrays.CheckpointArray:
        """A checkpoint array (a signal or scores), opened for reading one checkpoint at a time."""
        self._check_exists(path, what)
        return arrays.open_array(path)

    def load_scores(self, attack: str, what: str | None = None) -> arrays.CheckpointArray | np.ndarray:
        """An attack's scores ``[T, M, N]``, read one checkpoint at a time as float64 (exact: they are
        stored as float32); inside :meth:`scores_in_memory`, read once and kept (read-only)."""
        path = self.score_path(attack)
        lazy = self.checkpoints(path, what or f"scores of {attack}").as_type(np.float64)
        kept = self._scores_kept
        if kept is None:
            return lazy
        key = (path, self.content_digest(path))  # a rewritten array is read again, never served stale
        if key not in kept:
            size = 8 * int(np.prod(lazy.shape))
            if sum(a.nbytes for a in kept.values()) + size > self._scores_budget:
                return lazy
            array = np.asarray(lazy)
            array.flags.writeable = False  # shared by every reader of the block: nobody may change it
            kept[key] = array
        return kept[key]

    @contextlib.contextmanager
    def scores_in_memory(self, budget: int = SCORES_IN_MEMORY) -> Iterator[None]:
        """Within the block, :meth:`load_scores` keeps each attack's scores in memory while all of
        them fit in ``budget`` bytes, so that a stage that reads them several times (planes,
        model-level metrics, sensitivity, early warning) decodes each chunk once. Larger runs
        stream as before."""
        self._scores_kept, self._scores_budget = {}, budget
        try:
            yield
        finally:
            self._scores_kept, self._scores_budget = None, 0

    def verify_all(self) -> tuple[list[Path], list[tuple[Path, str]]]:
        """Check every artifact of the run: those that passed, and (artifact, problem) for the rest."""
        ok: list[Path] = []
        bad: list[tuple[Path, str]] = []
        for p in sorted(self.path.rglob("*")):
            parts = p.relative_to(self.path).parts
            if any(part.endswith((arrays.SUFFIX, ".tmp")) for part in parts[:-1]):
                continue  # inside an array (checked as a whole) or a temp folder
            if integrity.is_checksum(p) and not integrity.data_path(p).exists():
                bad.append((integrity.data_path(p), f"{integrity.data_path(p)} is missing (its checksum is there)"))
                continue
            if arrays.is_array(p) and p.is_dir():
                check = arrays.verify_array
            elif p.is_file() and not integrity.is_checksum(p) and p.name != LOCK_NAME and not p.name.endswith(".tmp"):
                check = integrity.verify
            else:
                continue
            try:
                check(p)
                ok.append(p)
            except integrity.CorruptArtifact as e:
                bad.append((p, str(e)))
        return ok, bad
