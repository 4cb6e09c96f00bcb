"""Where groups train does not change what they learn: several devices (processes) and a real
local Ray cluster (head and two workers on loopback) give the local run's signals bit for bit,
also when a worker is killed mid-task; a missing extra or an unreachable cluster is a clear error."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

from privdyn.config import config_from_dict
from privdyn.errors import PrivdynError
from privdyn.pipeline import train
from privdyn.store.api import open_run
from privdyn.store.rundir import RunDir

ray = pytest.importorskip("ray")  # the `ray` extra; .ci/run installs it


def trained(cfg_dict: dict, out) -> dict[str, np.ndarray]:
    cfg = config_from_dict(cfg_dict)
    run = RunDir(out)
    with run.locked():
        run.init(cfg)
        train(cfg, run, progress=False)
    r = open_run(out)
    return {name: np.asarray(r.signal(name)) for name in ("phi", "loss", "correct")}


@pytest.fixture(scope="module")
def local_signals(tmp_path_factory, tiny_config_source):
    return trained(tiny_config_source(), tmp_path_factory.mktemp("local") / "run")


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_several_devices_train_in_parallel_processes_with_the_same_result(tmp_path, tiny_config_dict, local_signals):
    tiny_config_dict["training"]["devices"] = ["cpu", "cpu"]
    assert_same(trained(tiny_config_dict, tmp_path / "run"), local_signals)
    stage = RunDir(tmp_path / "run").manifest()["stages"]["train"]
    assert stage["devices"] == ["cpu", "cpu"] and stage["groups"] == 2


def test_devices_and_backend_are_not_part_of_the_training_hash(tiny_config_dict):
    a = config_from_dict(copy.deepcopy(tiny_config_dict))
    tiny_config_dict["training"].update(devices=["cpu", "cpu"], backend="ray")
    b = config_from_dict(tiny_config_dict)
    assert a.section_hash("training") == b.section_hash("training")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                       "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    c.wait_for_nodes()
    yield c
    c.shutdown()


def test_a_run_on_a_ray_cluster_equals_the_local_run(tmp_path, tiny_config_dict, local_signals, cluster):
    tiny_config_dict["training"]["backend"] = "ray"
    tiny_config_dict["ray"] = {"address": cluster.address}
    assert_same(trained(tiny_config_dict, tmp_path / "run"), local_signals)
    stage = RunDir(tmp_path / "run").manifest()["stages"]["train"]
    assert stage["backend"] == "ray" and stage["resumed_epochs"] == 0
    assert not ray.is_initialized()  # privdyn disconnects what it connected


def test_a_worker_killed_mid_task_is_retried_and_resumes_to_the_same_result(tmp_path, tiny_config_dict,
                                                                          local_signals, cluster):
    tiny_config_dict["training"]["backend"] = "ray"
    # every group's worker kills itself once, right after writing its second checkpoint's signals
    ray.init(address=cluster.address, runtime_env={"env_vars": {"PRIVDYN_FAULT": "wrote:t001.npz"}},
             log_to_driver=False)
    try:
        got = trained(tiny_config_dict, tmp_path / "run")
    finally:
        ray.shutdown()
    assert_same(got, local_signals)
    stage = RunDir(tmp_path / "run").manifest()["stages"]["train"]
    assert stage["resumed_epochs"] == 2 * stage["groups"]  # each retry restarted from its epoch-2 state


def test_an_unreachable_cluster_or_a_missing_extra_is_a_clear_error(tmp_path, tiny_config_dict, monkeypatch):
    tiny_config_dict["training"]["backend"] = "ray"
    tiny_config_dict["ray"] = {"address": "127.0.0.1:9"}  # nothing listens on the discard port
    with pytest.raises(PrivdynError, match="could not connect to a Ray cluster"):
        trained(copy.deepcopy(tiny_config_dict), tmp_path / "a")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(PrivdynError, match=r"privdyn\[ray\]"):
        trained(tiny_config_dict, tmp_path / "b")


def test_the_cli_runs_on_a_local_ray_cluster_it_starts_itself(tmp_path, tiny_config_dict):
    import yaml

    tiny_config_dict["ray"] = {"local_cpus": 2}
    tiny_config_dict["attacks"] = ["loss"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config_dict))
    done = subprocess.run([sys.executable, "-m", "privdyn.cli", "run", str(tmp_path / "c.yaml"), "--out",
                           str(tmp_path / "run"), "--no-progress", "--ray-address", "local"], capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert RunDir(tmp_path / "run").manifest()["stages"]["train"]["ray_address"] == "local"


@pytest.mark.parametrize("where", ["devices", "ray", "ray, a worker killed"])
def test_progress_reaches_the_driver_epoch_by_epoch_or_group_by_group(tmp_path, tiny_config_dict, where, cluster):
    """Every epoch reaches the driver's bar exactly once, also when a killed task is retried and
    reports the epochs it resumes from again."""
    from privdyn.data import load_dataset
    from privdyn.training.engine import plan_groups
    from privdyn.training.executors import run_groups
    from privdyn.training.membership import balanced_membership

    if where.startswith("ray"):
        tiny_config_dict["training"]["backend"] = "ray"
        tiny_config_dict["ray"] = {"address": cluster.address}
    else:
        tiny_config_dict["training"]["devices"] = ["cpu", "cpu"]
    cfg = config_from_dict(tiny_config_dict)
    d = cfg.dataset
    ds = load_dataset(d.name, d.n_pool, d.n_test, cfg.seed, d.options)
    groups = plan_groups(cfg.training.n_models, cfg.training.group_size)
    ticks: list[int] = []
    run = RunDir(tmp_path / "run")
    if where == "ray, a worker killed":  # each group's worker dies once, after its second checkpoint
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PRIVDYN_FAULT": "wrote:t001.npz"}},
                 log_to_driver=False)
    try:
        with run.locked():
            run.init(cfg)
            done = run_groups(cfg, run, ds, balanced_membership(cfg.training.n_models, ds.n_pool, cfg.seed), groups,
                              ticks.append)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert sum(ticks) == len(groups) * cfg.training.epochs
    assert done["trained_epochs"] + done["resumed_epochs"] == sum(ticks)


def test_the_progress_actor_counts_a_retried_groups_epochs_once():
    """A retry reports its group's running total from its resumed state: only new epochs count."""
    from privdyn.training.executors import _Progress

    p = _Progress()
    for done in (1, 2, 3):  # group 0's first attempt, killed after epoch 3 (its state saved at 2)
        p.advance(0, done)
    p.advance(1, 1)
    assert p.take() == 4
    for done in (2, 3, 4, 5):  # the retry resumes at 2 and reports 2, 3 again, then 4 and 5
        p.advance(0, done)
    assert p.take() == 2 and p.take() == 0
