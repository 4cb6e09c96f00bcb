"""Worker processes for the analyze and report stages (privdyn.pipeline.workers): the same run as
one process, bit for bit; a user's script is not run again in the workers; a dead worker is an
error that says what to do; and where workers cannot or should not be used, none are."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from privdyn import pipeline
from privdyn.config import ANALYZE_SECTIONS, config_from_dict
from privdyn.errors import PrivdynError
from privdyn.pipeline import workers
from privdyn.store import provenance
from privdyn.store.rundir import RunDir

pytestmark = pytest.mark.skipif(not workers.can_fork_workers(), reason="no forkserver on this platform")


def config(source, n_workers: int | None):
    data = source()
    data["training"]["epochs"] = 3
    data["attacks"] = ["lira_online", "lira_offline_cdf", "loss"]
    data["analysis"]["workers"] = n_workers
    return config_from_dict(data)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_config_source):
    out = tmp_path_factory.mktemp("workers") / "one"
    pipeline.run_all(config(tiny_config_source, 1), out, progress=False)
    return out


def tables(run: Path) -> dict[str, pd.DataFrame]:
    return {p.relative_to(run).as_posix(): pd.read_parquet(p) for p in sorted((run / "analysis").rglob("*.parquet"))}


@pytest.mark.parametrize("n", [2, 3])  # 3: the figures in shares of unequal turns, put back in order
def test_workers_give_the_run_of_one_process_bit_for_bit(n, one_process, tmp_path, tiny_config_source):
    run = tmp_path / "many"
    shutil.copytree(one_process, run)
    shutil.rmtree(run / "analysis")
    shutil.rmtree(run / "report")
    (run / "summary.json").unlink()
    cfg = config(tiny_config_source, n)
    assert workers.n_workers(cfg.analysis.workers, 6, 1) == n  # asked for: used, however small the run
    pipeline.run_all(cfg, run, progress=False)
    assert (run / "summary.json").read_bytes() == (one_process / "summary.json").read_bytes()
    mine, theirs = tables(run), tables(one_process)
    assert mine.keys() == theirs.keys() and len(mine) > 10
    for name, table in mine.items():
        pd.testing.assert_frame_equal(table, theirs[name], check_exact=True, obj=name)
    figures = sorted(p.name for p in (one_process / "report").glob("*.png"))
    assert len(figures) >= 8 and sorted(p.name for p in (run / "report").glob("*.png")) == figures
    for name in figures:
        assert (run / "report" / name).read_bytes() == (one_process / "report" / name).read_bytes(), name
    assert (run / "report" / "index.html").read_bytes() == (one_process / "report" / "index.html").read_bytes()
    # and every artifact is recorded as current: a second run does nothing
    rd = RunDir(run)
    manifest = (run / "manifest.json").read_bytes()
    pipeline.run_all(cfg, run, progress=False)
    assert json.loads((run / "manifest.json").read_bytes())["artifacts"] == json.loads(manifest)["artifacts"]
    assert rd.stage_done("report", cfg.section_hash(*ANALYZE_SECTIONS))


def test_the_number_of_workers_changes_no_hash(tiny_config_source):
    one, many = config(tiny_config_source, 1), config(tiny_config_source, 8)
    assert one.section_hash(*ANALYZE_SECTIONS) == many.section_hash(*ANALYZE_SECTIONS)
    assert provenance._analysis_options(one) == provenance._analysis_options(many)
    assert config(tiny_config_source, None).section_hash(*ANALYZE_SECTIONS) == one.section_hash(*ANALYZE_SECTIONS)


def test_auto_uses_workers_only_where_they_pay_off(monkeypatch):
    monkeypatch.setattr(workers, "usable_cpus", lambda: 4)
    assert workers.n_workers(None, 10, workers.MIN_AUTO_WORK) == 4
    assert workers.n_workers(None, 3, workers.MIN_AUTO_WORK) == 3  # never more than the tasks
    assert workers.n_workers(None, 10, workers.MIN_AUTO_WORK - 1) == 1  # a small run: this process
    assert workers.n_workers(1, 10, 10**9) == 1
    monkeypatch.setattr(workers, "usable_cpus", lambda: 1)
    assert workers.n_workers(None, 10, 10**9) == 1


def test_a_daemonic_process_or_a_platform_without_forkserver_uses_this_process(monkeypatch):
    class Daemon:
        daemon = True

    monkeypatch.setattr(multiprocessing, "current_process", lambda: Daemon())
    assert workers.n_workers(4, 10, 10**9) == 1
    monkeypatch.undo()
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert workers.n_workers(4, 10, 10**9) == 1


def test_a_stage_value_is_made_once_per_stage_and_dropped_with_it():
    made = []

    def make(x):
        return lambda: made.append(x) or x

    assert workers.stage_value("a", "measures", make(1)) == 1
    assert workers.stage_value("a", "measures", make(2)) == 1  # kept for the stage's next task
    assert workers.stage_value("a", "data", make(3)) == 3  # another value of the same stage
    assert workers.stage_value("b", "measures", make(4)) == 4  # a new stage drops the old one's
    assert workers.stage_value("a", "measures", make(5)) == 5
    assert made == [1, 3, 4, 5]


def test_the_calling_process_of_a_report_imports_neither_matplotlib_nor_plotly(one_process, tmp_path):
    """The report's panels and figures are made in workers, where those imports are done once
    while training runs; this process only puts the page together."""
    run = tmp_path / "r"
    shutil.copytree(one_process, run)
    shutil.rmtree(run / "report")
    script = textwrap.dedent(f"""
        import sys
        from privdyn import pipeline
        from privdyn.store.rundir import RunDir

        run = RunDir({str(run)!r})
        cfg = run.load_config().model_copy(update={{"analysis": run.load_config().analysis.model_copy(
            update={{"workers": 2}})}})
        pipeline.report(cfg, run)
        print(sorted(m for m in ("matplotlib", "plotly") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (run / "report" / "index.html").read_bytes() == (one_process / "report" / "index.html").read_bytes()


def test_an_error_in_the_callers_block_cancels_the_queued_tasks():
    with pytest.raises(ValueError, match="stop"), workers.pool(2) as ex:
        queued = [ex.submit(workers.call, "time:sleep", 0.3) for _ in range(8)]
        raise ValueError("stop")
    assert sum(f.cancelled() for f in queued) >= 4  # at most two running and two handed on


def test_a_worker_that_dies_is_an_error_that_says_what_to_do():
    died = pytest.raises(PrivdynError, match=r"worker process .* died.*analysis\.workers=1")
    with died, workers.pool(2) as ex:
        ex.submit(os._exit, 3).result()


def test_workers_limit_their_threads_and_return_what_a_task_returns():
    with workers.pool(2) as ex:
        got = ex.submit(workers.call, "threadpoolctl:threadpool_info").result()
        pids = {ex.submit(os.getpid).result() for _ in range(4)}
    assert os.getpid() not in pids
    assert all(lib["num_threads"] == max(1, workers.usable_cpus() // 2) for lib in got)


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(one_process, tmp_path):
    """The forkserver would start every worker by running the caller's __main__ again: a user's
    script that calls privdyn at its top level would then run once per worker."""
    run = tmp_path / "r"
    shutil.copytree(one_process, run)
    shutil.rmtree(run / "analysis")
    marks = tmp_path / "marks.txt"
    script = tmp_path / "audit.py"
    script.write_text(textwrap.dedent(f"""
        from privdyn import pipeline
        from privdyn.store.rundir import RunDir

        with open({str(marks)!r}, "a") as f:
            f.write("ran\\n")
        run = RunDir({str(run)!r})
        cfg = run.load_config().model_copy(update={{"analysis": run.load_config().analysis.model_copy(
            update={{"workers": 2}})}})
        pipeline.analyze(cfg, run)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert marks.read_text() == "ran\n"
    assert (run / "summary.json").read_bytes() == (one_process / "summary.json").read_bytes()


#: Where a run with workers is killed: in this process once the default attack is recorded (the
#: other attacks are still in the workers), once the page is written, and in a worker as it writes
#: a figure (the stage then ends with exit 2 and the paragraph of a dead worker).
KILLS = {"recorded:analysis/lira_online/fpr_0.01": -9, "wrote:index.html": -9, "wrote:plane.png": 2}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILLS))
def test_a_run_with_workers_killed_inside_a_stage_resumes_to_the_same_result(point, one_process, tmp_path,
                                                                            tiny_config_source):
    import yaml

    run = tmp_path / "r"
    shutil.copytree(one_process, run)
    for folder in ("analysis", "report"):
        shutil.rmtree(run / folder)
    (run / "summary.json").unlink()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config(tiny_config_source, 2).model_dump(mode="json")))
    command = [sys.executable, "-m", "privdyn.cli", "run", str(cfg), "--out", str(run), "--no-progress"]
    # capture_output waits until every holder of the pipes has gone: a worker or forkserver left
    # behind by the kill (waiting for work that never comes) would end this in a timeout
    killed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "PRIVDYN_FAULT": point})
    assert killed.returncode == KILLS[point], killed.stderr
    if KILLS[point] == 2:
        assert "died before finishing" in killed.stderr and "run the same command again" in killed.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert (run / "summary.json").read_bytes() == (one_process / "summary.json").read_bytes()
    assert (run / "report" / "index.html").read_bytes() == (one_process / "report" / "index.html").read_bytes()
    assert not list(run.rglob("*.tmp"))
    assert subprocess.run([*command[:3], "verify", str(run)], capture_output=True, check=False).returncode == 0
