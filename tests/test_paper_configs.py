"""The paper-scale configs in examples/paper/ validate, and each starts training its real
architecture (a few steps on a random CIFAR-shaped pool written in the official formats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_files import write_cifar10

from privdyn.config import load_config
from privdyn.pipeline import train
from privdyn.store.api import open_run
from privdyn.store.rundir import RunDir

PAPER = Path(__file__).parent.parent / "examples" / "paper"
CONFIGS = sorted(PAPER.glob("*.yaml"))
#: Keep the architecture, optimizer, queries and augmentation; shrink everything that is size.
SMALL = ["dataset.n_pool=16", "dataset.n_test=8", "training.n_models=2", "training.epochs=1",
         "training.group_size=2", "training.batch_size=8", "training.devices=[]", "checkpoints.include_init=false"]


def random_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (xt, yt), (xs, ys) = random_images(40, 0), random_images(20, 1)
    write_cifar10(root / "cifar-10-batches-py", {"x_train": xt, "y_train": yt, "x_test": xs, "y_test": ys})
    for split, (x, y) in (("train", (xt, yt)), ("test", (xs, ys))):
        for i, (img, label) in enumerate(zip(x, y)):
            folder = root / "cinic10" / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")
    return root


def test_there_are_paper_configs_for_both_datasets_and_optimizers():
    cfgs = [load_config(p) for p in CONFIGS]
    assert {c.dataset.name for c in cfgs} == {"cifar10", "imagefolder"}
    assert {c.training.optimizer.name for c in cfgs} == {"sgd", "sam"}
    for c in cfgs:
        assert c.training.n_models == 64 and len(c.queries) == 2 and c.training.augment == "flip_crop"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_paper_config_starts_training_its_architecture(tmp_path, data_root, path):
    cfg = load_config(path, [*SMALL, f"dataset.root={data_root}"])
    run = RunDir(tmp_path / "run")
    with run.locked():
        run.init(cfg)
        train(cfg, run, progress=False)
    phi = np.asarray(open_run(tmp_path / "run").signal("phi"))
    assert phi.shape == (1, 2, 16, 2) and np.isfinite(phi).all()
