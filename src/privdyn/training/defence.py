"""Interventions on at-risk samples inside every model's training (DESIGN.md "Defences").

A defence is part of the training *procedure*, so it runs identically inside every model of a
run, and the audit then attacks the defended procedure with the original membership as ground
truth (a removed sample was a member). At the intervention epoch t_d (and, with
``defence.continuous``, at every later checkpoint before the last) each model flags
``k = round(share * n)`` of its own training members:

- by an early-warning proxy (:mod:`privdyn.analysis.proxies`) computed from that model's own
  checkpoint signals on the pool (the trainer evaluates every pool sample at every checkpoint;
  only the model's members can be flagged), up to and including t_d: a realistic rule, no
  shadow models;
- by ``random``: a seeded random k of its members, the control that says how much of an effect
  is the intervention itself rather than the choice of samples;
- by ``oracle:RUN_DIR[:ATTACK]``: the k members with the highest final advantage (then AUC) on a
  previous run's plane with the same pool, an upper bound on what the dynamics could buy,
  labelled as an oracle wherever it is reported.

From epoch t_d + 1 on the flagged samples are (``remove``) left out of training altogether (out
of every batch, so out of BatchNorm's statistics too; the epoch order is drawn over the kept
members and the learning-rate schedule advances by epochs as before), (``clip``) given
per-sample gradients clipped to ``clip_norm`` (``torch.func`` grad under vmap over models and
samples) plus optional Gaussian noise on their summed gradient, or (``weight``) a loss
multiplied by ``weight``. Unflagged samples contribute exactly what they did before.

Flags come from the group's stored checkpoint files, so a resumed group recomputes the same
flags; the flags in effect are also saved with the group's state, and every flagging is
written to ``train/group_GGG/defence_eEEE.npy``, gathered at the end into ``RUN/defence.npz``
(``flags`` ``[D, M, N]``, ``epochs`` ``[D]``) with ``RUN/defence.json`` describing the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from privdyn.config import RANDOM_RULE, DefenceConfig, RunConfig
from privdyn.data import Dataset
from privdyn.errors import PrivdynError
from privdyn.store import atomic
from privdyn.store.rundir import RunDir
from privdyn.training.ensemble import EnsembleGroup, epoch_generator, stream_seed

#: Seed streams: the clip noise (per model and epoch) and the random rule (per model and flagging).
CLIP_NOISE_STREAM, RANDOM_STREAM = 0xC11F, 0xF1A6
#: Names of the files a defended run keeps (the flags and their description).
FLAGS_FILE, DESCRIPTION_FILE = "defence.npz", "defence.json"
#: The signals a proxy may read from the stored checkpoint files (query 0).
TRACE_SIGNALS = ("loss", "phi", "correct", "el2n")


def flag_top(scores: np.ndarray, members: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Bool ``[K, N]``: per model, the ``k`` highest-scoring of its ``members`` ``[K, n]`` (pool
    indices), leaving out those in ``exclude`` ``[K, N]``; NaN scores rank last, ties go to the
    lower index (deterministic). At least one member is always left unflagged."""
    K, N = scores.shape
    out = np.zeros((K, N), dtype=bool)
    for r in range(K):
        cand = members[r] if exclude is None else members[r][~exclude[r, members[r]]]
        s = np.nan_to_num(np.asarray(scores[r, cand], dtype=np.float64), nan=-np.inf)
        order = np.lexsort((cand, -s))
        out[r, cand[order[:min(k, len(cand) - 1)]]] = True
    return out


def random_scores(seed: int, model_ids: list[int], epoch: int, n: int) -> np.ndarray:
    """``[K, N]`` uniform draws per model and flagging epoch: the ``random`` rule (grouping-independent)."""
    return np.stack([np.random.default_rng(stream_seed(seed, m, epoch, RANDOM_STREAM)).random(n) for m in model_ids])


def group_traces(run: RunDir, group: int, ckpts: list[int], epoch: int) -> Any:
    """The group's own signals (query 0) at every checkpoint up to ``epoch``, as proxy
    :class:`~privdyn.analysis.proxies.Traces` ``[t, K, N]``, read from its checkpoint files."""
    from privdyn.analysis.proxies import Traces
    from privdyn.training.engine import checkpoint_file

    upto = [e for e in ckpts if e <= epoch]
    rows: dict[str, list[np.ndarray]] = {s: [] for s in TRACE_SIGNALS}
    for t in range(len(upto)):
        f = atomic.load_npz(checkpoint_file(run, group, t))  # verified against its checksum
        for s in TRACE_SIGNALS:
            rows[s].append(np.asarray(f[s][..., 0], dtype=np.float64))
    return Traces(np.asarray(upto, dtype=np.float64), *(np.stack(rows[s]) for s in TRACE_SIGNALS))


def oracle_risk(cfg: RunConfig, ds: Dataset) -> tuple[np.ndarray, dict[str, Any]]:
    """Per pool sample, a risk from the final plane of the oracle run (rank by final advantage
    at that run's rule, then final per-sample AUC, then index), and a description of its source.

    Refused with one paragraph when the run does not exist, is not scored for the attack, or
    holds another pool.
    """
    from privdyn.analysis.plane import compute_plane
    from privdyn.analysis.population import most_vulnerable
    from privdyn.store import provenance

    path, attack = cfg.defence.oracle_source()
    old = RunDir(path)
    fix = ("Run the baseline first (privdyn run CONFIG --out RUN_DIR) with the same dataset section and seed, "
           "or use a proxy rule (defence.rule=lt_iqr).")
    if not old.is_run():
        raise PrivdynError(f"defence.rule={cfg.defence.rule}: {old.path} is not a privdyn run directory, so the "
                           f"oracle has no plane to flag from. {fix}")
    ocfg = old.load_config()
    attack = attack or ocfg.default_attack()
    if ocfg.section_hash("dataset") != cfg.section_hash("dataset") or ocfg.seed != cfg.seed:
        raise PrivdynError(f"defence.rule={cfg.defence.rule}: the oracle run {old.path} has another pool (dataset "
                           f"section or seed {ocfg.seed} differ from this run's, seed {cfg.seed}), so its plane "
                           f"says nothing about these samples. {fix}")
    labels = old.path / "labels.npy"
    if not labels.exists() or not np.array_equal(np.load(labels, allow_pickle=False), ds.y_pool):
        raise PrivdynError(f"defence.rule={cfg.defence.rule}: the oracle run {old.path} has no labels.npy or other "
                           f"labels than this pool: another pool. {fix}")
    if not provenance.scores_current(ocfg, old, attack):
        raise PrivdynError(f"defence.rule={cfg.defence.rule}: the oracle run {old.path} has no current scores of "
                           f"{attack} (finish it with `privdyn run` or `privdyn score {old.path} --attacks {attack}`).")
    scores = old.load_scores(attack)
    last = np.asarray(scores[len(scores) - 1], dtype=np.float64)[None]
    membership = old.load_array(old.path / "membership.npy", "membership")
    plane = compute_plane(last, membership, ocfg.analysis.rule)
    adv, auc = plane.adv[0], np.nan_to_num(plane.auc[0], nan=0.0)
    order = most_vulnerable(adv, auc, len(adv))
    risk = np.empty(len(adv))
    risk[order] = np.arange(len(adv), 0, -1, dtype=np.float64)
    source = {"run": str(old.path.resolve()), "attack": attack, "rule": ocfg.analysis.rule,
              "scores": old.content_digest(old.score_path(attack))}
    return risk, source


class Defence:
    """The flags and actions of one group's defence (``model_ids``, members ``in_idx`` ``[K, n]``).

    ``flags`` (bool ``[K, N]`` on the device, pool indices) is None until the first flagging.
    """

    def __init__(self, dc: DefenceConfig, seed: int, model_ids: list[int], in_idx: np.ndarray, n_pool: int,
                 ckpts: list[int], epochs: int, device: torch.device, oracle: np.ndarray | None = None):
        self.dc, self.seed, self.model_ids = dc, seed, list(model_ids)
        self.members = np.asarray(in_idx)
        self.n_pool, self.ckpts, self.epochs, self.device = n_pool, list(ckpts), epochs, device
        self.oracle = oracle
        self.k = dc.flag_count(self.members.shape[1])
        self.flags: torch.Tensor | None = None
        self.flag_epoch = -1

    @classmethod
    def from_config(cls, cfg: RunConfig, ds: Dataset, in_idx: np.ndarray, model_ids: list[int],
                    device: torch.device) -> Defence:
        """The defence of one group under ``cfg.defence`` (the oracle run read and checked here)."""
        oracle = oracle_risk(cfg, ds)[0] if cfg.defence.is_oracle else None
        return cls(cfg.defence, cfg.seed, model_ids, in_idx, ds.n_pool, cfg.checkpoint_epochs(),
                   cfg.training.epochs, device, oracle)

    # flagging -------------------------------------------------------------------------------
    def due(self, epoch: int) -> bool:
        """Whether the model flags at the end of ``epoch``: t_d, or with ``continuous`` every later
        checkpoint before the last epoch."""
        d = self.dc
        if epoch >= self.epochs:
            return False
        return epoch == d.epoch or (d.continuous and epoch > d.epoch and epoch in self.ckpts)

    def scores(self, epoch: int, traces: Callable[[], Any]) -> np.ndarray:
        """``[K, N]`` risk scores at the end of ``epoch`` by the rule (higher = flagged first)."""
        d = self.dc
        if self.oracle is not None:
            return np.broadcast_to(self.oracle, (len(self.model_ids), self.n_pool))
        if d.rule == RANDOM_RULE:
            return random_scores(self.seed, self.model_ids, epoch, self.n_pool)
        from privdyn.analysis.proxies import proxy_scores

        return proxy_scores(d.rule, traces(), **d.proxy_options)

    def update(self, epoch: int, traces: Callable[[], Any]) -> np.ndarray:
        """Flag at the end of ``epoch`` (``traces()`` gives the group's signals so far); returns
        the flags in effect from the next epoch on, bool ``[K, N]``. Removal accumulates (a removed
        sample never returns; each flagging removes k more); clip and weight flag afresh."""
        previous = self.flags_numpy() if self.flags is not None and self.dc.action == "remove" else None
        new = flag_top(self.scores(epoch, traces), self.members, self.k, previous)
        flags = new if previous is None else new | previous
        self.flags = torch.from_numpy(flags).to(self.device)
        self.flag_epoch = epoch
        return flags

    def set_flags(self, flags: np.ndarray | torch.Tensor, epoch: int = 0) -> None:
        """Impose flags ``[K, N]`` (tests, or a caller with its own rule)."""
        self.flags = torch.as_tensor(flags, dtype=torch.bool).to(self.device)
        self.flag_epoch = epoch

    def flags_numpy(self) -> np.ndarray:
        """The flags in effect, bool ``[K, N]`` (all false before the first flagging)."""
        if self.flags is None:
            return np.zeros((len(self.model_ids), self.n_pool), dtype=bool)
        return self.flags.cpu().numpy()

    # actions --------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether flags are in effect (from the epoch after t_d on)."""
        return self.flags is not None

    def kept(self, in_idx: torch.Tensor) -> torch.Tensor:
        """The members ``[K, n]`` that still train: all of them, or (remove) those not flagged,
        ``[K, n - removed]`` in their original order (every model removes as many)."""
        if self.flags is None or self.dc.action != "remove":
            return in_idx
        keep = ~self.flags.gather(1, in_idx)
        counts = keep.sum(1)
        if not bool((counts == counts[0]).all()):
            raise RuntimeError(f"defence: models removed different numbers of members ({counts.tolist()})")
        return in_idx.masked_select(keep).view(in_idx.shape[0], int(counts[0]))

    def flagged(self, idx: torch.Tensor) -> torch.Tensor:
        """Bool ``[K, B]``: which samples of a batch of pool indices ``idx`` ``[K, B]`` are flagged."""
        if self.flags is None:
            return torch.zeros(idx.shape, dtype=torch.bool, device=idx.device)
        return self.flags.gather(1, idx)

    def loss_weights(self, idx: torch.Tensor) -> torch.Tensor | None:
        """(weight) ``[K, B]``: ``defence.weight`` on flagged samples, 1 elsewhere; None for other actions."""
        if self.flags is None or self.dc.action != "weight":
            return None
        return torch.where(self.flagged(idx), self.dc.weight, 1.0).to(torch.float32)

    @property
    def clips(self) -> bool:
        """Whether this step clips the flagged samples' per-sample gradients."""
        return self.flags is not None and self.dc.action == "clip"

    def clip_step(self, group: EnsembleGroup, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
                  idx: torch.Tensor, gens: list[torch.Generator] | None) -> None:
        """Leave in ``.grad`` the batch gradient with the flagged samples' per-sample gradients
        clipped (and the noise added): :func:`clipped_gradient`."""
        opt.zero_grad(set_to_none=True)
        clipped_gradient(group, xb, yb, self.flagged(idx), self.dc.clip_norm,
                         self.dc.noise_multiplier, gens)

    def noise_generators(self, epoch: int) -> list[torch.Generator] | None:
        """One generator per model for this epoch's clip noise (None without noise)."""
        if not self.clips or self.dc.noise_multiplier == 0:
            return None
        return [epoch_generator(self.seed, m, epoch, CLIP_NOISE_STREAM, device=self.device) for m in self.model_ids]

    # state ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The flags in effect, for the group's state (weights_only-safe)."""
        return {"defence_flags": self.flags_numpy_tensor(), "defence_epoch": self.flag_epoch}

    def flags_numpy_tensor(self) -> torch.Tensor:
        """The flags as a CPU tensor (empty before the first flagging)."""
        return torch.zeros(0, dtype=torch.bool) if self.flags is None else self.flags.cpu()

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        flags = state.get("defence_flags")
        self.flags = None if flags is None or flags.numel() == 0 else flags.to(self.device)
        self.flag_epoch = int(state.get("defence_epoch", -1))


def per_sample_gradients(group: EnsembleGroup, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample gradients of the cross-entropy for inputs ``[K, F, ...]`` and labels ``[K, F]``:
    name -> ``[K, F, *shape]``, each model's own parameters, by ``torch.func.grad`` under vmap over
    models and samples (training mode; dropout draws differ per sample)."""
    base = group.base
    base.train(True)

    def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], xi: torch.Tensor,
            yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(base, (params, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out.float(), yi.unsqueeze(0))

    per_model = vmap(grad(one), in_dims=(None, None, 0, 0), randomness="different")
    params = {k: v.detach() for k, v in group.params.items()}
    return vmap(per_model, in_dims=(0, 0, 0, 0), randomness="different")(params, group.buffers, x, y)


def clip_factors(grads: dict[str, torch.Tensor], clip_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gradient norms ``[K, F]`` and the factors ``min(1, C / (norm + 1e-6))`` that
    bound them by ``clip_norm`` (Opacus's formula)."""
    sq = sum(g.flatten(2).pow(2).sum(-1) for g in grads.values())
    norms = torch.as_tensor(sq).sqrt()
    return norms, (clip_norm / (norms + 1e-6)).clamp(max=1.0)


def clipped_gradient(group: EnsembleGroup, xb: torch.Tensor, yb: torch.Tensor, flagged: torch.Tensor,
                     clip_norm: float, noise_multiplier: float = 0.0,
                     gens: list[torch.Generator] | None = None) -> None:
    """Accumulate into ``.grad`` of the group's parameters each model's batch gradient
    ``(1/B) [sum_{unflagged} g_i + sum_{flagged} clip(g_i) + noise]``.

    The unflagged samples go through the usual batched loss (weight 1, flagged ones 0), so their
    contribution is exactly the baseline's; the flagged ones (at most F per model, padded) get
    per-sample gradients clipped to ``clip_norm``; with ``noise_multiplier`` > 0 every step adds
    N(0, (noise_multiplier * clip_norm)^2) per coordinate, drawn from each model's ``gens``.
    """
    K, B = yb.shape
    group.loss(xb, yb, weights=(~flagged).to(torch.float32)).backward()
    F = int(flagged.sum(1).max()) if flagged.numel() else 0
    params = group.params
    extra: dict[str, torch.Tensor] = {}
    if F:
        pos = torch.argsort((~flagged).to(torch.int8), dim=1, stable=True)[:, :F]  # flagged positions first
        valid = flagged.gather(1, pos)
        rows = torch.arange(K, device=xb.device).unsqueeze(1)
        grads = per_sample_gradients(group, xb[rows, pos], yb.gather(1, pos))
        _, factor = clip_factors(grads, clip_norm)
        factor = factor * valid
        extra = {n: torch.einsum("kf,kf...->k...", factor, g) for n, g in grads.items()}
    if noise_multiplier > 0:
        assert gens is not None, "noise needs one generator per model"
        std = noise_multiplier * clip_norm
        for n, p in params.items():
            noise = torch.stack([torch.randn(p.shape[1:], generator=gen, device=p.device, dtype=p.dtype)
                                 for gen in gens])
            extra[n] = extra[n] + std * noise if n in extra else std * noise
    with torch.no_grad():
        for n, add in extra.items():
            p = params[n]
            p.grad = add / B if p.grad is None else p.grad + add / B


# files ----------------------------------------------------------------------------------------

def flags_path(run: RunDir, group: int, epoch: int) -> Path:
    """``RUN/train/group_GGG/defence_eEEE.npy``: the flags a group set at the end of ``epoch``."""
    return run.group_dir(group) / f"defence_e{epoch:03d}.npy"


def after_epoch(trainer: Any, run: RunDir, group: int, ckpts: list[int], epoch: int) -> None:
    """The train stage's hook after epoch ``epoch`` (its checkpoint written): flag when due and
    record the flags. A no-op for a trainer without a defence."""
    d: Defence | None = getattr(trainer, "defence", None)
    if d is None or not d.due(epoch):
        return
    flags = d.update(epoch, lambda: group_traces(run, group, ckpts, epoch))
    atomic.save_npy(flags_path(run, group, epoch), flags)


def describe(cfg: RunConfig, n_pool: int) -> dict[str, Any]:
    """``RUN/defence.json``: the rule (an oracle labelled as one), the action and its parameters."""
    d = cfg.defence
    out: dict[str, Any] = {"label": d.label(), "oracle": d.is_oracle,
                           "rule_kind": "oracle" if d.is_oracle else "random" if d.rule == RANDOM_RULE else "proxy",
                           **d.model_dump(mode="json"), "flag_epochs": cfg.flag_epochs(),
                           "flagged_per_flagging": d.flag_count(n_pool // 2),
                           "ground_truth": "the original membership: a removed sample still counts as a member"}
    if d.is_oracle:
        out["note"] = ("ORACLE: the flags come from a previous run's shadow-model plane, which no real training "
                       "has; an upper bound on what the dynamics could buy, not a realistic defence")
    if cfg.training.dp.enabled:
        out["dp_note"] = ("the flags depend on the training data, which the DP accountant's epsilon does not "
                          "account for")
    return out


def write_flags(cfg: RunConfig, run: RunDir, groups: list[Any], n_pool: int) -> None:
    """Gather every group's flag files into ``RUN/defence.npz`` and describe the defence in
    ``RUN/defence.json``; both recorded with the signals' digest."""
    from privdyn.store import provenance

    epochs = cfg.flag_epochs()
    M = cfg.training.n_models
    flags = np.zeros((len(epochs), M, n_pool), dtype=bool)
    for j, e in enumerate(epochs):
        for g in groups:
            flags[j, list(g.model_ids)] = run.load_array(flags_path(run, g.index, e), "a group's defence flags")
    npz, desc = run.path / FLAGS_FILE, run.path / DESCRIPTION_FILE
    atomic.save_npz(npz, flags=flags, epochs=np.asarray(epochs, dtype=np.int64))
    info = describe(cfg, n_pool)
    if cfg.defence.is_oracle:
        info["oracle_source"] = oracle_source_of(cfg)
    atomic.write_json(desc, info)
    provenance.record(run, provenance.signal_digest(cfg, run), npz, desc)


def oracle_source_of(cfg: RunConfig) -> dict[str, Any]:
    """Where the oracle's flags came from (run, attack, rule, digest of its scores), without the pool check."""
    path, attack = cfg.defence.oracle_source()
    old = RunDir(path)
    ocfg = old.load_config()
    attack = attack or ocfg.default_attack()
    return {"run": str(old.path.resolve()), "attack": attack, "rule": ocfg.analysis.rule,
            "scores": old.content_digest(old.score_path(attack)) if old.score_path(attack).exists() else None}


def read_flags(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(flags [D, M, N], epochs [D], description)`` of a defended run, verified."""
    run = RunDir(run_dir)
    npz = run.path / FLAGS_FILE
    if not npz.exists():
        raise PrivdynError(f"{run.path} has no {FLAGS_FILE}: it was not trained with defence.enabled=true, or the "
                           f"file was removed (retrain it: `privdyn train {run.path}`)")
    stored = atomic.load_npz(npz)  # verified against its checksum
    return stored["flags"], stored["epochs"], atomic.read_json(run.path / DESCRIPTION_FILE)
