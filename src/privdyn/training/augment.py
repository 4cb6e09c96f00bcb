"""Training augmentation for images: random crop with zero padding and horizontal flip.

The random draws of one model in one epoch come from a generator seeded by (seed, model, epoch),
one draw per position of that model's IN list, so a model's augmentations do not depend on which
models share its group, and a resumed epoch repeats them exactly. The crop and flip of a whole
batch are one gather, with no loop over samples.
"""

from __future__ import annotations

import torch

from privdyn.training.ensemble import epoch_generator

#: Seed stream of the augmentation draws (the data order uses another).
AUGMENT_STREAM = 0xA06


def draw_flip_crop(seed: int, model_ids: list[int], epoch: int, n: int, pad: int = 4) -> torch.Tensor:
    """Per model and IN position: ``[K, n, 3]`` int64 (flip in {0, 1}, dy and dx in 0..2*pad), on CPU."""
    draws = []
    for m in model_ids:  # one generator per model: K draws per epoch, each vectorised over n
        g = epoch_generator(seed, m, epoch, AUGMENT_STREAM)
        flip = torch.randint(0, 2, (n, 1), generator=g)
        shift = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
        draws.append(torch.cat([flip, shift], dim=1))
    return torch.stack(draws)


def flip_crop(x: torch.Tensor, params: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Crop and flip images ``[..., C, H, W]`` with ``params[..., 3]`` from :func:`draw_flip_crop`.

    The output is the ``H x W`` window at offset (dy, dx) of the image zero-padded by ``pad`` on
    every side, mirrored left-right when flip is 1 (so dy = dx = pad and flip = 0 is the identity).
    """
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    xf = torch.nn.functional.pad(x.reshape(-1, c, h, w), (pad, pad, pad, pad))
    p = params.reshape(-1, 3).to(x.device)
    flip, dy, dx = p[:, 0:1], p[:, 1:2], p[:, 2:3]
    j = torch.arange(w, device=x.device)
    cols = dx + torch.where(flip.bool(), w - 1 - j, j)                      # [n, W]
    rows = dy + torch.arange(h, device=x.device)                             # [n, H]
    n = xf.shape[0]
    out = xf[torch.arange(n, device=x.device)[:, None, None, None],
             torch.arange(c, device=x.device)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]
    return out.reshape(*lead, c, h, w)
