"""Model weights as safetensors: ``RUN/weights/epoch_EEE/model_MMM.safetensors``.

One file per model and epoch holds that model's ``state_dict`` (parameters and buffers), and
its metadata says how to rebuild the module (arch, model config, input shape, classes). Files
appear atomically, and one that exists is never written again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from privdyn.store import atomic


def weights_path(run_path: Path, epoch: int, model: int) -> Path:
    """``RUN/weights/epoch_EEE/model_MMM.safetensors``: where model ``model``'s weights at ``epoch`` go."""
    return Path(run_path) / "weights" / f"epoch_{epoch:03d}" / f"model_{model:03d}.safetensors"


def save_weights(run_path: Path, epoch: int, model_ids: list[int], state_dicts: list[dict[str, torch.Tensor]],
                 meta: dict[str, str]) -> int:
    """Write the models' weights at ``epoch`` that are not on disk yet; returns how many were written."""
    from safetensors.torch import save_file

    written = 0
    for m, sd in zip(model_ids, state_dicts):
        path = weights_path(run_path, epoch, m)
        if path.exists():
            continue
        with atomic.atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp),
                      metadata={**meta, "epoch": str(epoch), "model": str(m)})
        written += 1
    return written


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A saved ``state_dict`` and its metadata (``json.loads(meta['model_config'])`` etc.)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118 - safe_open is not iterable


def weights_meta(model_config: dict, input_shape: tuple[int, ...], num_classes: int) -> dict[str, str]:
    """What rebuilding the module needs, as safetensors metadata (strings only)."""
    return {"model_config": json.dumps(model_config), "input_shape": json.dumps(list(input_shape)),
            "num_classes": str(num_classes)}
