import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_config_dict():
    """A config that trains and analyses in a few seconds on 2 cores."""
    return {
        "name": "tiny", "seed": 3,
        "dataset": {"name": "synthetic", "n_pool": 200, "n_test": 100,
                    "options": {"dim": 8, "classes": 3, "difficulty": 0.6, "label_noise": 0.1}},
        "model": {"arch": "mlp", "width": 32, "depth": 1, "norm": "none"},
        "training": {"n_models": 8, "epochs": 4, "batch_size": 32, "group_size": 4,
                     "optimizer": {"name": "sgd", "lr": 0.1}},
        "analysis": {"grid": 4},
    }
