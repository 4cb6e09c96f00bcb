"""`privdyn import` and `privdyn export` (privdyn.ingest): a native run exported in either layout and
imported again gives the same signals bit for bit, and the same scores, planes and summary; every
validation error is one exit-2 paragraph; unbalanced memberships import with a warning; re-imports
are no-ops, other files are refused without --force; a killed import resumes."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli  # tests/cli_runner.py

from privdyn import pipeline
from privdyn.config import config_from_dict
from privdyn.errors import PrivdynError
from privdyn.ingest.api import import_logits
from privdyn.ingest.export import export_logits
from privdyn.report.compare import metric_table
from privdyn.report.data import load_run_data
from privdyn.store.arrays import open_array
from privdyn.store.rundir import RunDir
from privdyn.training.signals import SIGNALS

CLI = [sys.executable, "-m", "privdyn.cli"]
ROOT = Path(__file__).parents[1]
NATIVE = {
    "name": "native", "seed": 3,
    "dataset": {"name": "synthetic", "n_pool": 200, "n_test": 60,
                "options": {"dim": 8, "classes": 3, "difficulty": 0.6, "label_noise": 0.1}},
    "model": {"arch": "mlp", "width": 32, "depth": 1, "norm": "none"},
    "training": {"n_models": 8, "epochs": 2, "batch_size": 32, "group_size": 8,
                 "optimizer": {"name": "sgd", "lr": 0.1}},
    "checkpoints": {"save_logits": True, "include_init": True},
    "analysis": {"grid": 4, "n_bootstrap": 50, "model_bootstrap": 20, "sensitivity": False},
}
#: summary.json fields that describe where the run came from, not what it measured
DESCRIPTIVE = {"name", "dataset", "model", "optimizer"}


def cli(*args, env=None):
    """``privdyn ARGS``: in this process, or in a child when ``env`` is given (fault injection
    kills the process it runs in)."""
    if env is None:
        return run_cli(*args)
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, check=False,
                          env=env)


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """A tiny native run that stores its logits, analysed (no report)."""
    cfg = config_from_dict(copy.deepcopy(NATIVE))
    run, _ = pipeline.run_all(cfg, tmp_path_factory.mktemp("native") / "run", progress=False, with_report=False)
    return run.path


def same_setup(native_run: Path) -> list[str]:
    """--set overrides that give an import the native run's seed and analysis options."""
    cfg = RunDir(native_run).load_config()
    return [f"seed={cfg.seed}", f"analysis={json.dumps(cfg.analysis.model_dump(mode='json'))}"]


def values(run: Path, rel: str) -> np.ndarray:
    return np.asarray(open_array(run / rel))


def assert_same_signals(a: Path, b: Path, splits=("pool", "test")):
    for split in splits:
        for name in (*SIGNALS, "logits"):
            rel = f"signals/{'test/' if split == 'test' else ''}{name}.zarr"
            x, y = values(a, rel), values(b, rel)
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), rel
    for f in ("membership.npy", "labels.npy", "epochs.npy"):
        assert np.array_equal(np.load(a / f), np.load(b / f)), f


def strip(summary, drop=()):
    """The summary without its descriptive fields (and without ``drop`` at any depth)."""
    def walk(d):
        if isinstance(d, dict):
            return {k: walk(v) for k, v in d.items() if k not in drop}
        return d
    return walk({k: v for k, v in summary.items() if k not in DESCRIPTIVE})


def assert_same_results(a: Path, b: Path, with_test=True):
    cfg = RunDir(a).load_config()
    for attack in cfg.attacks:
        assert values(a, f"scores/{attack}.zarr").tobytes() == values(b, f"scores/{attack}.zarr").tobytes(), attack
        plane = f"analysis/{attack}/fpr_0.01/plane.npz"
        with np.load(a / plane) as p, np.load(b / plane) as q:
            assert p.files == q.files and all(np.array_equal(p[k], q[k]) for k in p.files), plane
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    if with_test:
        assert strip(sa) == strip(sb)
    else:
        assert strip(sa, {"test_accuracy"}) == strip(sb, {"test_accuracy"})
        assert sb["final"]["test_accuracy"] is None and set(sb["test_accuracy"]) == {None}


# ----- round trip: native -> export -> import -------------------------------------------------------

def test_generic_round_trip_is_exact(native, tmp_path):
    """Per-checkpoint files with a test split: signals, scores, planes and summary as the native run's."""
    export_logits(native, "generic", tmp_path / "files", form="checkpoint")
    assert sorted(p.name for p in (tmp_path / "files" / "logits").iterdir()) == ["t000.npy", "t001.npy", "t002.npy"]
    res = import_logits(tmp_path / "files", "generic", tmp_path / "run", overrides=same_setup(native),
                        report=False, progress=False)
    assert res.imported and res.warnings == [] and res.record["n_test"] == 60
    assert_same_signals(native, res.run.path)
    assert_same_results(native, res.run.path)
    summary = json.loads((res.run.path / "summary.json").read_text())
    assert (summary["model"], summary["optimizer"]) == ("imported", "unknown (imported)")
    row = metric_table([load_run_data(p) for p in (native, res.run.path)], ["native", "imported"]).html
    assert "<td>mlp width 32 depth 1</td><td>sgd lr 0.1</td>" in row  # the zoo's setup, as configured
    assert "<td>imported</td><td>unknown (imported)</td>" in row  # not the config's unused defaults
    assert "None" not in row and "lr 0.05" not in row


def test_lira_round_trip_is_exact(native, tmp_path):
    """The LiRA layout through the command line: pool signals, scores, planes and summary as the native
    run's; without a test split, test accuracy is null."""
    proc = cli("export", native, "--layout", "lira", "--out", tmp_path / "logdir")
    assert proc.returncode == 0, proc.stderr
    assert "no test split" in proc.stderr
    logdir = tmp_path / "logdir"
    assert np.load(logdir / "experiment-3_8" / "logits" / "0000000002.npy").shape == (200, 1, 1, 3)
    assert np.load(logdir / "experiment-3_8" / "keep.npy").dtype == bool
    res = import_logits(logdir, "lira", tmp_path / "run", overrides=same_setup(native), report=False,
                        progress=False)
    assert res.record["n_test"] == 0 and not (res.run.path / "signals" / "test").exists()
    assert_same_signals(native, res.run.path, splits=("pool",))
    assert_same_results(native, res.run.path, with_test=False)


@pytest.mark.parametrize("form", ["array", "model"])
def test_other_generic_forms_give_the_same_signals(form, native, tmp_path):
    export_logits(native, "generic", tmp_path / "files", form=form)
    expected = {"array": ["logits.npy"], "model": [f"m{m:03d}.npy" for m in range(8)]}[form]
    found = [p.name for p in (tmp_path / "files").glob("logits*")] if form == "array" else \
        sorted(p.name for p in (tmp_path / "files" / "logits").iterdir())
    assert found == expected
    res = import_logits(tmp_path / "files", "generic", tmp_path / "run", overrides=same_setup(native),
                        analysis=False, progress=False)
    assert_same_signals(native, res.run.path)


def test_export_needs_stored_logits(native, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(native, run)
    shutil.rmtree(run / "signals" / "logits.zarr")
    proc = cli("export", run, "--layout", "lira", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "save_logits" in proc.stderr and "Traceback" not in proc.stderr


# ----- validation: one exit-2 paragraph per problem -------------------------------------------------

N, M, T, C = 12, 4, 3, 3


def generic_source(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A valid generic folder (balanced pairs) and its arrays."""
    rng = np.random.default_rng(seed)
    half = rng.random((M // 2, N)) < 0.5
    arrays = {"labels": rng.integers(0, C, N), "membership": np.stack([half, ~half], 1).reshape(M, N),
              "epochs": np.arange(1, T + 1), "logits": rng.normal(size=(T, M, N, 1, C)).astype(np.float32)}
    write_generic(root, arrays)
    return arrays


def write_generic(root: Path, arrays: dict[str, np.ndarray]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for k, v in arrays.items():
        np.save(root / f"{k}.npy", v)


def write_lira(root: Path, arrays: dict[str, np.ndarray]) -> None:
    np.save(root / "y_train.npy", arrays["labels"])
    for m, keep in enumerate(arrays["membership"]):
        exp = root / f"experiment-{m}_{len(arrays['membership'])}"
        (exp / "logits").mkdir(parents=True)
        np.save(exp / "keep.npy", keep)
        for t, e in enumerate(arrays["epochs"]):
            np.save(exp / "logits" / f"{e:010d}.npy", arrays["logits"][t, m][:, None])


def _set(key, value):
    def change(a):
        a[key] = value(a)
    return change


def _nan(a):
    a["logits"][1, 2, 5, 0, 1] = np.nan


def _beyond_float32(a):
    a["logits"] = a["logits"].astype(np.float64)
    a["logits"][2, 1, 7, 0, 2] = -4e38  # finite in float64, an infinity once stored as float32


def _never_out(a):
    a["membership"][:, 4] = True


def _label(a):
    a["labels"][3] = C


def _one_model(a):
    a["membership"], a["logits"] = a["membership"][:1], a["logits"][:, :1]


ERRORS = {
    "wrong shape": ("generic", _set("logits", lambda a: a["logits"][:, :, :-1]), "has shape [3, 4, 11, 1, 3]"),
    "label out of range": ("generic", _label, "outside [0, 3)"),
    "NaN logit": ("generic", _nan, "are not finite"),
    "float64 logit beyond float32": ("generic", _beyond_float32, "-4e+38 for model 1, sample 7, query 0, class 2"),
    "sample never OUT": ("generic", _never_out, "1 of 12 samples are never OUT"),
    "non-increasing epochs": ("generic", _set("epochs", lambda a: np.array([1, 3, 2])), "strictly increasing"),
    "experiments with different epochs": ("lira", None, "saved logits at different epochs"),
    "M < 2": ("lira", _one_model, "has 1 model(s)"),
    "pickled array": ("generic", _set("labels", lambda a: np.array([None] * N, dtype=object)),
                      "never loads"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_validation_error_is_one_exit_2_paragraph(case, tmp_path):
    layout, change, message = ERRORS[case]
    src = tmp_path / "src"
    arrays = generic_source(src)
    if change:
        change(arrays)
    if layout == "lira":
        shutil.rmtree(src)
        src.mkdir()
        write_lira(src, arrays)
        if change is None:
            (src / "experiment-2_4" / "logits" / f"{2:010d}.npy").unlink()
    else:
        write_generic(src, {k: v for k, v in arrays.items()})
        if case == "pickled array":
            np.save(src / "labels.npy", arrays["labels"], allow_pickle=True)
    proc = cli("import", src, "--layout", layout, "--out", tmp_path / "run", "--no-analysis")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (tmp_path / "run").exists()  # nothing was written


def assert_refused(proc, message: str, run: Path) -> None:
    """Exit 2 with one ``error:`` paragraph holding ``message``, no traceback, no run directory left."""
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not run.exists()


def as_lira(src: Path, arrays: dict[str, np.ndarray]) -> None:
    shutil.rmtree(src)
    src.mkdir()
    write_lira(src, arrays)


@pytest.mark.parametrize("layout", ["generic", "lira"])
@pytest.mark.parametrize("n", [0, 2])
def test_an_empty_or_tiny_pool_is_named(layout, n, tmp_path):
    """Zero samples crashed in the membership statistics; 1-3 samples gave a config error about a YAML
    file the user never wrote."""
    src = tmp_path / "src"
    arrays = generic_source(src)
    arrays["labels"], arrays["logits"] = arrays["labels"][:n], arrays["logits"][:, :, :n]
    arrays["membership"] = np.tile([[True, False], [False, True]], (M // 2, 1))[:, :n]
    (as_lira if layout == "lira" else write_generic)(src, arrays)
    proc = cli("import", src, "--layout", layout, "--out", tmp_path / "run", "--no-analysis")
    labels = "y_train.npy" if layout == "lira" else "labels.npy"
    assert_refused(proc, f"{labels} holds no samples" if n == 0 else f"{labels} holds only 2 samples",
                   tmp_path / "run")
    assert "Invalid config" not in proc.stderr


def test_an_empty_test_split_names_its_files(tmp_path):
    src = tmp_path / "src"
    generic_source(src)
    write_generic(src, {"test_labels": np.zeros(0, int), "test_logits": np.zeros((T, M, 0, 1, C), np.float32)})
    proc = cli("import", src, "--layout", "generic", "--out", tmp_path / "run", "--no-analysis")
    assert_refused(proc, "test_labels.npy holds no samples", tmp_path / "run")
    assert "Delete test_labels.npy and test_logits.npy" in proc.stderr and "Invalid config" not in proc.stderr


@pytest.mark.parametrize("setting, key", [
    ("training.epochs=5", "training.epochs"),        # after the last imported epoch (was accepted)
    ("training.epochs=1", "training.epochs"),        # before it (was a config error)
    ("training.n_models=6", "training.n_models"),
    ("checkpoints.every=2", "checkpoints.every"),
    ("checkpoints.save_weights=[1]", "checkpoints.save_weights"),
    ("queries=[a]", "queries"),
    ("dataset.n_pool=100", "dataset.n_pool"),
    ("dataset.n_test=10", "dataset.n_test"),
    ("model.arch=mlp", "model.arch"),
    ("source.fingerprint=sha256:0", "source.fingerprint"),
])
def test_set_cannot_change_what_the_import_determines(setting, key, tmp_path):
    src = tmp_path / "src"
    generic_source(src)
    proc = cli("import", src, "--layout", "generic", "--out", tmp_path / "run", "--no-analysis", "--set", setting)
    assert_refused(proc, f"--set changed {key},", tmp_path / "run")
    assert "training.epochs, training.n_models, queries" in proc.stderr


def test_set_may_repeat_what_the_import_determines_and_change_the_rest(tmp_path):
    from privdyn.ingest.api import read_source
    from privdyn.ingest.configure import import_config

    generic_source(tmp_path / "src")
    src = read_source(tmp_path / "src", "generic")
    cfg = import_config(src, "sha256:0", overrides=[f"training.epochs={T}", "checkpoints.every=1",
                                                    "queries=[identity]", "seed=5", "training.optimizer.lr=0.2"])
    assert cfg.checkpoint_epochs() == list(range(1, T + 1)) and cfg.training.epochs == T and cfg.seed == 5


@pytest.mark.parametrize("content, message", [
    (b"garbage\n", "is not a .npy file (it does not start with the NumPy header)"),
    (b"", "is not a .npy file (it does not start with the NumPy header, it is empty)"),
])
def test_a_file_that_is_not_npy_is_not_called_a_pickle(content, message, tmp_path):
    src = tmp_path / "src"
    generic_source(src)
    (src / "logits.npy").write_bytes(content)
    proc = cli("import", src, "--layout", "generic", "--out", tmp_path / "run", "--no-analysis")
    assert_refused(proc, f"logits.npy {message}", tmp_path / "run")
    assert "pickle)" not in proc.stderr


@pytest.mark.parametrize("layout, rel", [("generic", "labels.npy"), ("generic", "logits.npy"),
                                         ("lira", "y_train.npy"), ("lira", "experiment-1_4/keep.npy"),
                                         ("lira", "experiment-0_4/logits/0000000002.npy")])
def test_a_directory_in_place_of_a_file_is_named_a_directory(layout, rel, tmp_path):
    src = tmp_path / "src"
    arrays = generic_source(src)
    if layout == "lira":
        as_lira(src, arrays)
    (src / rel).unlink()
    (src / rel).mkdir()
    proc = cli("import", src, "--layout", layout, "--out", tmp_path / "run", "--no-analysis")
    assert_refused(proc, f"{rel} is a directory, not a file", tmp_path / "run")


def test_a_lira_logits_file_in_place_of_its_folder_is_named(tmp_path):
    src = tmp_path / "src"
    as_lira(src, generic_source(src))
    shutil.rmtree(src / "experiment-2_4" / "logits")
    (src / "experiment-2_4" / "logits").write_bytes(b"")
    proc = cli("import", src, "--layout", "lira", "--out", tmp_path / "run", "--no-analysis")
    assert_refused(proc, "experiment-2_4/logits is a file, not a folder", tmp_path / "run")


# ----- unbalanced memberships ---------------------------------------------------------------------

def test_unbalanced_membership_imports_with_a_warning_and_is_analysed(tmp_path):
    rng = np.random.default_rng(1)
    n, m, t = 120, 8, 3
    k_in = rng.integers(2, 7, n)
    k_in[:2] = 2, 6
    membership = np.argsort(rng.random((m, n)), axis=0) < k_in  # sample i IN for k_in[i] random models
    y = rng.integers(0, 3, n)
    z = rng.normal(size=(t, m, n, 1, 3)).astype(np.float32)
    z[..., 0, :][np.broadcast_to(membership, (t, m, n))] *= 0.5
    for e in range(t):  # members are learnt faster
        z[e, :, np.arange(n), 0, y] += (e + 1) * (0.5 + membership.T)
    write_generic(tmp_path / "src", {"labels": y, "membership": membership, "epochs": np.array([1, 2, 3]),
                                     "logits": z})
    messages = []
    res = import_logits(tmp_path / "src", "generic", tmp_path / "run", report=False, progress=False,
                        log=messages.append)
    assert any("not balanced" in w and "2 to 6 of 8" in w for w in res.warnings)
    assert any(line.startswith("warning: the membership is not balanced") for line in messages)
    record = RunDir(res.run.path).manifest()["stages"]["train"]
    assert record["membership"] == {"in_count_min": 2, "in_count_max": 6, "balanced": False,
                                    "complementary_pairs": False}
    assert res.summary is not None and 0.5 < res.summary["final"]["auc"] <= 1


# ----- re-import, other files, resume -------------------------------------------------------------

def test_reimport_is_a_no_op_and_other_files_need_force(tmp_path):
    src, run = tmp_path / "src", tmp_path / "run"
    arrays = generic_source(src)
    first = import_logits(src, "generic", run, analysis=False, progress=False)
    stamp = (run / "signals" / "phi.zarr" / "zarr.json").stat().st_mtime_ns
    messages = []
    second = import_logits(src, "generic", run, analysis=False, progress=False, log=messages.append)
    assert first.imported and not second.imported and any("nothing to write" in m for m in messages)
    assert (run / "signals" / "phi.zarr" / "zarr.json").stat().st_mtime_ns == stamp

    arrays["logits"][0, 0, 0, 0, 0] += 1  # the same size and shape, other contents
    write_generic(src, arrays)
    proc = cli("import", src, "--layout", "generic", "--out", run, "--no-analysis")
    assert proc.returncode == 2 and "--force" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(PrivdynError, match="--force"):
        import_logits(src, "generic", run, analysis=False, progress=False)
    again = import_logits(src, "generic", run, analysis=False, progress=False, force=True)
    assert again.imported and again.config.source.fingerprint != first.config.source.fingerprint
    assert values(run, "signals/logits.zarr")[0, 0, 0, 0, 0] == arrays["logits"][0, 0, 0, 0, 0]


def test_a_killed_import_resumes_to_the_same_run(tmp_path):
    src = tmp_path / "src"
    generic_source(src)
    killed = cli("import", src, "--layout", "generic", "--out", tmp_path / "run", "--no-analysis",
                 env={**os.environ, "PRIVDYN_FAULT": "recorded:membership.npy"})
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "run" / "signals" / "phi.zarr").exists()
    resumed = import_logits(src, "generic", tmp_path / "run", analysis=False, progress=False)
    clean = import_logits(src, "generic", tmp_path / "clean", analysis=False, progress=False)
    assert resumed.imported and resumed.record["n_pool"] == N
    assert_same_signals(clean.run.path, tmp_path / "run", splits=("pool",))
    assert not list((tmp_path / "run").rglob("*.tmp")) and RunDir(tmp_path / "run").verify_all()[1] == []


# ----- the example ---------------------------------------------------------------------------------

def test_the_lira_example_runs_and_its_report_builds_without_a_test_split(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "import_lira.py"), "--out", str(tmp_path / "run"),
                           "--samples", "60", "--models", "4", "--epochs", "2"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = Path(proc.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert report.is_file() and report.stat().st_size > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final"]["test_accuracy"] is None and summary["final"]["auc"] > 0.5
