import copy
import os

# Ray clusters the tests start listen on loopback only: with this, Ray resolves 127.0.0.1 to
# itself instead of to the machine's outward address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest
import torch
from hypothesis import settings

# Property-based tests are deterministic by default: "ci" derives every example from the test
# itself (no random seed, no example database), so a run fails or passes the same way each time;
# print_blob shows how to reproduce a failure. HYPOTHESIS_PROFILE=explore searches afresh.
# A test's own @settings(...) still overrides these per setting (e.g. max_examples).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tests train tiny models: one thread is fastest for them, and on a shared, busy 2-core machine
# two threads per process make everything much slower.
torch.set_num_threads(1)

TINY_CONFIG = {
    "name": "tiny", "seed": 3,
    "dataset": {"name": "synthetic", "n_pool": 200, "n_test": 100,
                "options": {"dim": 8, "classes": 3, "difficulty": 0.6, "label_noise": 0.1}},
    "model": {"arch": "mlp", "width": 32, "depth": 1, "norm": "none"},
    "training": {"n_models": 8, "epochs": 4, "batch_size": 32, "group_size": 4,
                 "optimizer": {"name": "sgd", "lr": 0.1}},
    "analysis": {"grid": 4},
}


@pytest.fixture(scope="session")
def tiny_config_source():
    """A factory of fresh copies of a config that trains and analyses in a few seconds."""
    return lambda: copy.deepcopy(TINY_CONFIG)


@pytest.fixture
def tiny_config_dict(tiny_config_source):
    return tiny_config_source()
