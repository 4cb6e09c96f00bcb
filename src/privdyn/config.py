"""Typed run configuration (pydantic), loaded from YAML with ``key=value`` overrides.

Every field has a default, so an empty YAML file is a valid config. Validation happens up front
and every message names the field and the fix. The resolved config (all defaults filled in) is
written into each run directory.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from privdyn.analysis.population import Bands
from privdyn.analysis.rules import parse_rule
from privdyn.errors import PrivdynError
from privdyn.registry import ATTACKS, DATASETS, MODELS, QUERIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(_Strict):
    """``dataset``: the registered dataset, the pool and test sizes, its data root and its options."""

    name: str = Field("mnist1d", description="a registered dataset (`privdyn datasets` lists them)")
    n_pool: int | None = Field(None, ge=4, description="pool size (at least 4: every model trains on half of "
                               "it, in batches of at least 2); None = the whole training split")
    n_test: int | None = Field(None, ge=1, description="test size; None = the whole test split")
    root: str | None = Field(None, description="data root for datasets read from files")
    options: dict[str, Any] = Field(default_factory=dict, description="dataset-specific options")



class ModelConfig(_Strict):
    """``model``: the registered architecture, its width and depth, normalisation and dropout."""

    arch: str = Field("mlp", description="mlp, cnn, resnet18 (CIFAR variant) or wrn (WRN-depth-k)")
    width: int | None = Field(None, ge=1, description="hidden units (mlp), base channels (cnn, resnet18) "
                              "or widen factor k (wrn); None = the arch's default (128, 32, 64, 2)")
    depth: int | None = Field(None, ge=1, description="hidden layers (mlp), conv blocks (cnn), 18 (resnet18) "
                              "or 6n+4 (wrn); None = the arch's default (2, 3, 18, 28)")
    norm: Literal["batch", "group", "none"] = Field("batch", description="normalisation layers: batch, group "
                                                    "or none")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability")



class OptimizerConfig(_Strict):
    """``training.optimizer``: SGD, Adam or AdamW (or SAM wrapping one of them) and its hyperparameters."""

    name: Literal["sgd", "adam", "adamw", "sam"] = Field("sgd", description="sgd, adam, adamw, or sam "
                                                         "(sharpness-aware, wrapping base)")
    base: Literal["sgd", "adam", "adamw"] = Field("sgd", description="with name=sam: the optimizer SAM wraps")
    rho: float = Field(0.05, gt=0, description="with name=sam: the radius of the ascent step")
    lr: float = Field(0.05, gt=0, description="peak learning rate (the schedule scales it)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (adam and adamw keep their default betas)")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd)")
    weight_decay: float = Field(5e-4, ge=0, description="L2 penalty (decoupled for adamw)")


class DPConfig(_Strict):
    """``training.dp``: DP-SGD's noise multiplier, per-sample clipping norm and delta."""

    enabled: bool = Field(False, description="train with DP-SGD (Opacus): one model at a time")
    noise_multiplier: float = Field(1.0, ge=0, description="noise std as a multiple of max_grad_norm")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample gradient clipping norm")
    delta: float | None = Field(None, gt=0, lt=1, description="None = 1/N_train (N_train = N_pool/2)")


class TrainingConfig(_Strict):
    """``training``: M models (even), epochs, batches, optimizer, lr schedule, augmentation, DP and device."""

    n_models: int = Field(16, ge=2, description="M, the number of models; must be even when privdyn draws "
                          "the membership (any M >= 2 for imported signals)")
    epochs: int = Field(20, ge=1, description="training epochs of every model")
    batch_size: int = Field(128, ge=1, description="training batch size (per model)")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: Literal["cosine", "step", "constant"] = Field("cosine", description="learning-rate schedule: "
                                                            "cosine (to 0), step (milestones, gamma) or constant")
    milestones: list[int] = Field(default_factory=list, description="with schedule=step: epochs where lr *= gamma")
    gamma: float = Field(0.1, gt=0, description="with schedule=step: the lr factor at each milestone")
    augment: Literal["none", "flip_crop"] = Field(
        "none", description="image training augmentation: random crop (padding 4) and horizontal flip")
    dp: DPConfig = Field(default_factory=DPConfig)
    group_size: int = Field(16, ge=1, description="models trained at once in one batched group")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    devices: list[str] | Literal["auto"] = Field(
        default_factory=list, description="several devices, one worker process each (groups round robin): a "
        "list such as [cuda:0, cuda:1], or auto = every visible GPU; empty = training.device alone. Where groups "
        "train does not change the result, so it is not part of the training setup's hash")
    backend: Literal["local", "ray"] = Field("local", description="local, or ray: every model group a Ray task "
                                             "(the ray section; privdyn[ray] extra); not part of the hash either")
    eval_batch_size: int = Field(4096, ge=1, description="samples per forward when every model is evaluated "
                                 "on the pool and test split at a checkpoint")
    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "fp32", description="training arithmetic: fp32; tf32 (CUDA matmuls and convolutions in TF32); bf16 "
        "(the training forward under bfloat16 autocast). Evaluation follows eval_precision")
    eval_precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="the per-checkpoint evaluation forward: fp32 (exact signals), or bf16 autocast (about "
        "half the evaluation time on GPUs with bf16 units; the signals are computed in float64 from its logits, "
        "which carry bf16 rounding: phi moves by about 1e-2)")
    memory_format: Literal["auto", "contiguous", "channels_last"] = Field(
        "auto", description="layout of image activations in grouped models: channels_last (NHWC: the layout "
        "cuDNN's tensor-core convolutions want), contiguous (NCHW), or auto = channels_last on CUDA and "
        "contiguous on the CPU. The same arithmetic up to float rounding")
    compile: bool = Field(False, description="torch.compile the batched training loss (worth it for long GPU runs; "
                          "compiling takes tens of seconds; not with DP-SGD)")



#: The rule that flags a seeded random share of each model's members (the control of a defence).
RANDOM_RULE = "random"
#: Prefix of the oracle rule, ``oracle:RUN_DIR[:ATTACK]``: flags from a previous run's final plane.
ORACLE_PREFIX = "oracle:"


class DefenceConfig(_Strict):
    """``defence``: an intervention inside every model's training on the samples a rule flags
    (DESIGN.md "Defences", docs/defences.md). Off by default; at its defaults it changes no hash."""

    enabled: bool = Field(False, description="intervene in every model's training (the audit then attacks the "
                          "defended procedure; ground truth stays the original membership)")
    rule: str = Field("lt_iqr", description="what flags samples: an early-warning proxy name (analysis.proxies, "
                      "from each model's own signals on its own members up to the intervention epoch), random "
                      "(a seeded random share: the control), or oracle:RUN_DIR[:ATTACK] (the final plane of a "
                      "previous run with the same pool: an upper bound, labelled as an oracle)")
    proxy_options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the proxy "
                                          "(e.g. {since: 2} for lt_iqr)")
    share: float = Field(0.05, gt=0, lt=1, description="k: the share of each model's training members flagged "
                         "(at each flagging)")
    epoch: int = Field(1, ge=0, description="t_d: flags come from the checkpoints up to this epoch (a checkpoint "
                       "epoch before training.epochs) and act from epoch t_d + 1 on")
    continuous: bool = Field(False, description="flag again at every later checkpoint before the last (remove: "
                             "each flagging removes k more of the remaining members)")
    action: Literal["remove", "clip", "weight"] = Field(
        "remove", description="remove: the flagged samples take no further part in training; clip: only their "
        "per-sample gradients are clipped to clip_norm (and noised); weight: their loss is multiplied by weight")
    clip_norm: float = Field(1.0, gt=0, description="with action=clip: the bound on a flagged sample's gradient norm")
    noise_multiplier: float = Field(0.0, ge=0, description="with action=clip: Gaussian noise of std "
                                    "noise_multiplier * clip_norm added to the flagged samples' summed gradient "
                                    "at every step (0 = none)")
    weight: float = Field(0.1, ge=0, lt=1, description="with action=weight: the factor on a flagged sample's loss")

    def flag_count(self, n: int) -> int:
        """k, the members each model flags at one flagging of its ``n``: ``round(share * n)``, at
        least 1 (a small share of a small pool still flags one)."""
        return max(1, int(round(self.share * n)))

    @property
    def is_oracle(self) -> bool:
        """Whether the rule reads a previous run's plane (an upper bound, not a realistic defence)."""
        return self.rule.startswith(ORACLE_PREFIX)

    def oracle_source(self) -> tuple[str, str | None]:
        """``(RUN_DIR, ATTACK or None)`` of an ``oracle:RUN_DIR[:ATTACK]`` rule."""
        rest = self.rule.removeprefix(ORACLE_PREFIX)
        head, sep, tail = rest.rpartition(":")
        if sep and tail in ATTACKS:
            return head, tail
        return rest, None

    def label(self) -> str:
        """A short description for tables and reports, e.g. ``remove k=0.05 t_d=3 [lt_iqr]`` or
        ``... [ORACLE: RUN]``."""
        what = {"remove": "remove", "clip": f"clip C={self.clip_norm:g}" + (
            f" sigma={self.noise_multiplier:g}" if self.noise_multiplier else ""),
                "weight": f"weight w={self.weight:g}"}[self.action]
        rule = f"ORACLE: {self.oracle_source()[0]}" if self.is_oracle else self.rule
        return f"{what} k={self.share:g} t_d={self.epoch}{'+' if self.continuous else ''} [{rule}]"


class RayConfig(_Strict):
    """``ray``: the cluster and the resources of each group's task, with ``training.backend: ray``."""

    address: str | None = Field(None, description="a running cluster (HOST:PORT or ray://...); None = start a "
                                "local one on loopback for this run")
    cpus_per_task: float = Field(1.0, gt=0, description="CPUs each group's task reserves")
    gpus_per_task: float | None = Field(None, ge=0, description="GPUs each task reserves; None = 1 when this "
                                        "machine has CUDA, else 0")
    max_retries: int = Field(3, ge=0, description="retries of a task whose worker dies (it resumes from its "
                             "group's last saved state)")
    local_cpus: int | None = Field(None, ge=1, description="CPUs of the local cluster (None = all)")


class SourceConfig(_Strict):
    """``source``: where the run's signals come from. ``train``: privdyn trains its registered
    models; ``python``: privdyn trains a model and recipe given in Python (:func:`privdyn.audit`);
    ``record``: the user's own training loops record the models (:class:`privdyn.Recorder`);
    ``import``: signals computed from logits trained elsewhere (``privdyn import``)."""

    kind: Literal["train", "python", "record", "import"] = Field("train", description="written by privdyn: train "
                                                                 "(its zoo), python, record or import")
    description: str = Field("", description="what the model, recipe or imported files were (for people)")
    fingerprint: str | None = Field(None, description="digest of the model and recipe code, of the model "
                                    "and optimizer they build, and of the data (python), or of the imported files "
                                    "(import): a change makes the signals stale")
    optimizer: str | None = Field(None, description="the optimizer's name when training.optimizer does not "
                                  "describe it (a user's recipe)")

    @property
    def trained_here(self) -> bool:
        """Whether privdyn draws the membership and evaluates the queries itself."""
        return self.kind != "import"


class CheckpointConfig(_Strict):
    """``checkpoints``: the epochs at which every model is evaluated, and those whose weights are saved."""

    schedule: Literal["every", "list", "dense_early"] = Field("every", description="which epochs are "
                                                              "checkpoints: every k, a list, or dense_early")
    every: int = Field(1, ge=1, description="with schedule=every: a checkpoint every k epochs")
    epochs: list[int] = Field(default_factory=list, description="with schedule=list")
    dense_until: int = Field(10, ge=1, description="with schedule=dense_early: every epoch up to this one")
    every_after: int = Field(5, ge=1, description="with schedule=dense_early: then every k epochs")
    include_init: bool = Field(False, description="also score the models at initialisation (e_0=0)")
    save_logits: bool = Field(False, description="also store every model's logits [T, M, N, Q, C] (float32) "
                              "in signals/logits.zarr and signals/test/logits.zarr, for `privdyn export`")
    save_weights: list[int] = Field(
        default_factory=list, description="epochs (0 = initialisation) whose weights are saved to "
        "RUN/weights/epoch_EEE/model_MMM.safetensors")


class StatesConfig(_Strict):
    """``analysis.states``: the advantage bands of the low, medium and high states (0 < low < medium < high <= 1)."""

    low: float = Field(0.1, description="A_i from which a sample is low (below: safe)")
    medium: float = Field(0.3, description="A_i from which a sample is medium")
    high: float = Field(0.6, description="A_i from which a sample is high")

    @model_validator(mode="after")
    def _ordered(self) -> StatesConfig:
        if not 0 < self.low < self.medium < self.high <= 1:
            raise ValueError("state bands need 0 < low < medium < high <= 1")
        return self

    def bands(self) -> Bands:
        """These bands as the core's :class:`~privdyn.analysis.population.Bands`."""
        return Bands(self.low, self.medium, self.high)


class EarlyWarningConfig(_Strict):
    """``analysis.early_warning``: validate the one-model proxies against the shadow-model ground truth."""

    enabled: bool = Field(True, description="validate every early-warning proxy at every checkpoint, "
                          "from the stored signals (no extra training)")
    proxies: list[str] | None = Field(None, description="the proxies to validate (analysis.proxies.PROXIES); "
                                      "None = every registered proxy whose signals the run stored")
    truth_rule: str = Field("fpr:0.001", description="the rule at which lira_online's final flags on each "
                            "target are the per-model ground truth (fpr:alpha or score:c)")
    k_share: float = Field(0.01, gt=0, le=1, description="precision at k with k = this share of the "
                           "monitored model's training set (Pollock et al.'s precision@k=1%)")
    tail_alphas: list[float] = Field(default_factory=lambda: [0.001, 0.01], description="FPRs of the "
                                     "loss-tail TPR estimate (Dodd et al. 2025) against the measured TPR")

    @field_validator("truth_rule")
    @classmethod
    def _truth_rule(cls, v: str) -> str:
        parse_rule(v)
        return v

    @field_validator("proxies")
    @classmethod
    def _proxies(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"give distinct proxy names, e.g. [lt_iqr, loss_mean], or null for all (got {v})")
        from privdyn.analysis.proxies import PROXIES

        unknown = [p for p in v or [] if p not in PROXIES]
        if unknown:
            raise ValueError(f"unknown proxies {unknown}; available: {PROXIES.names()} (register your own "
                             "with privdyn.analysis.proxies.PROXIES.register before loading the config)")
        return v

    @field_validator("tail_alphas")
    @classmethod
    def _tail_alphas(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < a < 1 for a in v):
            raise ValueError(f"give FPRs in (0, 1), e.g. [0.001, 0.01] (got {v})")
        return sorted(set(v))


class DPAuditConfig(_Strict):
    """``analysis.dp_audit``: empirical epsilon lower bounds per checkpoint and attack."""

    enabled: bool | None = Field(None, description="None = on for DP-SGD runs, off otherwise")
    confidence: float = Field(0.95, gt=0, lt=1, description="1 - beta of every lower bound")
    delta: float | None = Field(None, gt=0, lt=1, description="delta of the epsilon bounds; "
                                "None = the DP run's delta, else 1/N_train (the accountant's epsilon is "
                                "recomputed at a delta other than the run's)")
    k: list[int] = Field(default_factory=lambda: [10, 30, 100, 300, 1000, 3000],
                         description="one-run audit: the declared grid of guesses per side (IN for the k "
                         "highest scores of a model, OUT for the k lowest), each capped at N/2; the "
                         "multiple-testing correction is for this grid")
    fpr_levels: list[float] = Field(default_factory=lambda: [0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999],
                                    description="Gaussian-DP and Clopper-Pearson audits: the declared operating "
                                    "points (thresholds at these FPRs, as the fpr:alpha rule), corrected for "
                                    "their number")
    design: Literal["auto", "fixed_weight", "independent"] = Field(
        "auto", description="the membership rows, for the one-run audit: fixed_weight (each model a uniformly "
        "random half: privdyn's design, corrected rigorously), independent (i.i.d. inclusion), auto = "
        "fixed_weight when every row has exactly N/2 IN")

    @field_validator("k")
    @classmethod
    def _k(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError(f"give guesses per side >= 1, e.g. [10, 100, 1000] (got {v})")
        return v

    @field_validator("fpr_levels")
    @classmethod
    def _fprs(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < x < 1 for x in v):
            raise ValueError(f"give FPR levels in (0, 1), e.g. [0.01, 0.1, 0.5] (got {v})")
        return v


class AnalysisConfig(_Strict):
    """``analysis``: the operating-point rule, grid, state bands, clusters, bootstrap draws and sensitivity."""

    default_attack: str | None = Field(None, description="None = the first attack in `attacks`")
    rule: str = Field("fpr:0.01", description="operating-point rule: fpr:alpha or score:c")
    report_alphas: list[float] = Field(default_factory=lambda: [0.001, 0.01, 0.1], description="FPRs of the "
                                       "model-level TPR columns (0.001 and 0.01 are always added)")
    grid: int | None = Field(None, ge=1, description="G for the G x G grid; None = min(10, M/2)")
    states: StatesConfig = Field(default_factory=StatesConfig)
    n_clusters: int | None = Field(None, ge=2, le=20,
                                   description="k for the trajectory clusters; None = best silhouette in 2..6")
    silhouette_sample: int = Field(2000, ge=10, description="samples on which the silhouette is computed")
    n_bootstrap: int = Field(1000, ge=10, description="bootstrap draws for the difficulty Spearman CIs")
    model_bootstrap: int = Field(200, ge=10, description="bootstrap draws (over samples) for the CIs of "
                                 "TPR at fixed FPR, per checkpoint and attack")
    el2n_fraction: float = Field(0.1, gt=0, le=1,
                                 description="EL2N at the checkpoint nearest this fraction of training")
    recall_levels: list[float] = Field(default_factory=lambda: [0.5, 0.7, 0.9],
                                       description="recall levels whose earliest epoch is reported")
    sensitivity: bool = Field(True, description="recompute the headline dynamics at rules fpr:0.001/0.01/0.1 "
                              "and score:0 (LiRA online), grids 5/10/20 and bands 0.2/0.4/0.7 from the "
                              "stored scores: sensitivity.parquet, a summary.json entry and a report table")
    early_warning: EarlyWarningConfig = Field(default_factory=EarlyWarningConfig)
    dp_audit: DPAuditConfig = Field(default_factory=DPAuditConfig)
    workers: int | None = Field(None, ge=1, description="processes that analyse attacks and make the report's "
                                "panels and figures side by side (the results are the same); None = one per usable CPU "
                                "for runs of a million checkpoint x model x sample entries or more, else 1")

    @field_validator("recall_levels")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < x <= 1 for x in v):
            raise ValueError(f"give levels in (0, 1], e.g. [0.5, 0.7, 0.9] (got {v})")
        return sorted(set(v))

    @field_validator("rule")
    @classmethod
    def _rule(cls, v: str) -> str:
        parse_rule(v)
        return v


def check_query(name: str) -> None:
    """Raise ValueError with the accepted forms when a query name is not registered or its
    arguments are not accepted (``KIND`` or ``KIND:ARGS``)."""
    kind, _, args = name.partition(":")
    spec = QUERIES.get(kind)
    if spec is None:
        raise ValueError(f"query {name!r} is not one of {', '.join(q.forms for q in QUERIES.values())}")
    spec.check(args)


def attack_options(attack: str, given: dict[str, Any] | None) -> Any:
    """The validated options of ``attack`` (its registered options model) from a config dict."""
    return ATTACKS[attack].options.model_validate(given or {})


#: Prefix of the queries privdyn.audit was given as functions (registered only in that session).
USER_QUERY = "user."


#: Run names name folders (runs/NAME): a slug, so a name can never point outside runs/.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunConfig(_Strict):
    """A whole run's config: the sections above plus seed, queries, attacks, references and attack options."""

    name: str = Field("run", description="the run's name: the default run directory is runs/NAME; letters, "
                      "digits, '.', '_' and '-', starting with a letter or digit")
    seed: int = Field(0, description="seeds the membership, initialisation, batches and every bootstrap")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    queries: list[str] = Field(default_factory=lambda: ["identity"], description="query augmentations "
                               "evaluated at every checkpoint (imported runs: labels of the stored augmentations)")
    attacks: list[str] = Field(
        default_factory=lambda: ["lira_online", "lira_online_fixed", "lira_offline_cdf"],
        description="registered attacks scored at every checkpoint (options under attack_options)")
    references: Literal["pair", "balanced", "one"] = Field(
        "pair", description="reference models of each target: pair = all but the target and its "
        "complementary partner (balanced, unbiased; falls back to balanced without pairs), balanced = "
        "as many IN as OUT references per sample, one = leave-one-out (biased at small M; for comparison)")
    attack_options: dict[str, Any] = Field(
        default_factory=dict, description="per attack, its options (e.g. attack_options.lira_online.center); "
        "validated against the attack's registered options model, defaults filled in for every listed attack")
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    defence: DefenceConfig = Field(default_factory=DefenceConfig)

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a run name: use letters, digits, '.', '_' or '-' (at most 100, "
                             "starting with a letter or digit); it names the folder runs/NAME")
        return v

    @field_validator("attack_options", mode="before")
    @classmethod
    def _options(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("attack_options: a mapping from attack name to its options")
        unknown = [a for a in v if a not in ATTACKS]
        if unknown:
            raise ValueError(f"attack_options.{unknown[0]}: not a registered attack; available: {ATTACKS.names()}")
        out = {}
        for a, o in v.items():
            try:
                out[a] = o if isinstance(o, BaseModel) else attack_options(a, o)
            except ValidationError as err:
                raise ValueError("; ".join(f"attack_options.{a}.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                           for e in err.errors())) from None
        return out

    @field_serializer("attack_options")
    def _dump_options(self, v: dict[str, Any]) -> dict[str, Any]:
        return {a: o.model_dump(mode="json") for a, o in v.items()}

    def options_for(self, attack: str) -> Any:
        """The validated options of ``attack`` (its defaults when the config sets none)."""
        return self.attack_options.get(attack) or attack_options(attack, None)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        self._check_source()
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ValueError(f"attacks: unknown {unknown}; available: {ATTACKS.names()}")
        for a in self.attacks:  # defaults filled in: the config records every option it runs with
            self.attack_options.setdefault(a, attack_options(a, None))
        if not self.attacks:
            raise ValueError("attacks: list at least one attack")
        if self.analysis.default_attack is not None and self.analysis.default_attack not in self.attacks:
            raise ValueError(
                f"analysis.default_attack={self.analysis.default_attack!r} is not in attacks {self.attacks}"
            )
        if not self.queries:
            raise ValueError("queries: list at least one query (e.g. identity)")
        half = self.training.n_models // 2
        if self.analysis.grid is not None and self.analysis.grid > half:
            raise ValueError(
                f"analysis.grid={self.analysis.grid} exceeds M/2={half}, the resolution of TPR_i; "
                f"set analysis.grid <= {half} or train more models"
            )
        ck = self.checkpoints
        if ck.schedule == "list":
            if not ck.epochs:
                raise ValueError("checkpoints.epochs: give at least one epoch with schedule=list")
            bad = [e for e in ck.epochs if not 1 <= e <= self.training.epochs]
            if bad:
                raise ValueError(
                    f"checkpoints.epochs: {bad} outside 1..training.epochs={self.training.epochs}"
                )
        self._check_training()
        self._check_defence()
        return self

    def _check_source(self) -> None:
        """Names privdyn must resolve are registered; labels of outside models and data are free."""
        src = self.source.kind
        if src == "train" and self.dataset.name not in DATASETS:
            raise ValueError(f"dataset.name: unknown dataset {self.dataset.name!r}; available: "
                             f"{', '.join(DATASETS.names())} (`privdyn datasets` lists them with where they are "
                             "looked for)")
        if src == "train" and self.model.arch not in MODELS:
            raise ValueError(f"model.arch: unknown model {self.model.arch!r}; available: {', '.join(MODELS.names())}")
        if self.source.trained_here:
            if self.training.n_models % 2:
                raise ValueError(f"training.n_models: must be even (got {self.training.n_models}): each sample "
                                 "is IN for exactly half the models")
            for q in self.queries:
                if not (src == "python" and q.startswith(USER_QUERY)):  # given as callables to privdyn.audit
                    check_query(q)

    def _check_training(self) -> None:
        tc, E = self.training, self.training.epochs
        bad = [e for e in self.checkpoints.save_weights if not 0 <= e <= E]
        if bad:
            raise ValueError(f"checkpoints.save_weights: {bad} outside 0..training.epochs={E}")
        if tc.schedule == "step":
            if not tc.milestones:
                raise ValueError("training.milestones: give at least one epoch with schedule=step "
                                 "(or use schedule=constant)")
            bad = [e for e in tc.milestones if not 1 <= e <= E]
            if bad:
                raise ValueError(f"training.milestones: {bad} outside 1..training.epochs={E}")
        if tc.dp.enabled:
            if tc.compile:
                raise ValueError("training.compile: DP-SGD trains plain modules through Opacus; set "
                                 "training.compile=false")
            if tc.optimizer.name == "sam":
                raise ValueError("training.dp: DP-SGD does not combine with optimizer.name=sam; "
                                 "use sgd, adam or adamw")
            if self.model.norm == "batch":
                raise ValueError("training.dp: DP-SGD needs per-sample gradients and BatchNorm mixes "
                                 "samples; set model.norm=group or none")

    def _check_defence(self) -> None:
        """The defence's rule, epoch and action against the training setup (docs/defences.md)."""
        d, tc, E = self.defence, self.training, self.training.epochs
        if not d.enabled:
            return
        if self.source.kind != "train":
            raise ValueError(f"defence: interventions run inside privdyn's own training; source.kind="
                             f"{self.source.kind} trains elsewhere. Set defence.enabled=false.")
        if d.is_oracle:
            path, _ = d.oracle_source()
            if not path:
                raise ValueError("defence.rule: oracle needs a run directory, e.g. oracle:runs/baseline or "
                                 "oracle:runs/baseline:lira_online")
        elif d.rule != RANDOM_RULE:
            from privdyn.analysis.proxies import PROXIES

            if d.rule not in PROXIES:
                raise ValueError(f"defence.rule: {d.rule!r} is no early-warning proxy; use one of "
                                 f"{', '.join(PROXIES.names())}, {RANDOM_RULE} or oracle:RUN_DIR[:ATTACK]")
            accepted = list(inspect.signature(PROXIES[d.rule].score).parameters)[1:]
            unknown = [k for k in d.proxy_options if k not in accepted]
            if unknown:
                raise ValueError(f"defence.proxy_options: {unknown} are no options of proxy {d.rule} (it takes "
                                 f"{accepted or 'none'})")
        if d.proxy_options and (d.is_oracle or d.rule == RANDOM_RULE):
            raise ValueError(f"defence.proxy_options: rule {d.rule} takes no options; leave them empty")
        ckpts = self.checkpoint_epochs()
        valid = sorted({e for e in ckpts if e < E} | ({0} if d.is_oracle else set()))
        if d.epoch not in valid:
            why = ("is not before the last epoch" if d.epoch >= E else
                   "is not a checkpoint epoch, so no signals exist there to flag from")
            oracle = ", or 0 for an oracle" if d.is_oracle else ""
            raise ValueError(f"defence.epoch={d.epoch} {why}; pick one of {valid} (the checkpoint epochs before "
                             f"the last{oracle}) or change checkpoints")
        self.check_removal(self.dataset.n_pool // 2 if self.dataset.n_pool else None)
        if tc.compile:
            raise ValueError("training.compile: not with a defence (its steps change the loss per batch); "
                             "set training.compile=false")
        if d.action == "clip":
            why = ("DP-SGD already clips every sample's gradient (set training.dp.enabled=false, or use "
                   "defence.action remove or weight)" if tc.dp.enabled else
                   "SAM's two-pass step has no per-sample form here (use optimizer sgd, adam or adamw)"
                   if tc.optimizer.name == "sam" else
                   "per-sample gradients need samples that do not mix, and BatchNorm mixes them (set "
                   "model.norm=group or none)" if self.model.norm == "batch" else "")
            if why:
                raise ValueError(f"defence.action=clip: {why}")

    def check_removal(self, n_members: int | None) -> None:
        """Refuse a ``remove`` defence that would take every member of a model: k =
        ``defence.flag_count(n)`` members at each of :meth:`flag_epochs` (ValueError naming the fix).
        Before the pool size is known (``n_members`` None) it is judged on the share alone."""
        d = self.defence
        if not d.enabled or d.action != "remove":
            return
        epochs = self.flag_epochs()
        if n_members is None:  # the pool size is not known yet: judged on the share
            per_flagging, removed, what = "that share", d.share * len(epochs), "every member"
        else:
            k = d.flag_count(n_members)
            per_flagging = f"k = max(1, round(share x {n_members} members)) = {k}"
            removed, what = k * len(epochs) / n_members, f"all {n_members} members a model trains on"
        if removed >= 1:
            raise ValueError(f"defence.share={d.share:g}: {per_flagging} removed at each of {len(epochs)} flaggings "
                             f"(epochs {epochs}) would remove {what}; lower defence.share, flag less often "
                             "(defence.continuous=false or a later defence.epoch), or use a larger pool")

    # ----- derived quantities ---------------------------------------------------------------
    def flag_epochs(self) -> list[int]:
        """The epochs at whose end a defence flags: t_d, and with ``continuous`` every later
        checkpoint before the last epoch."""
        d, E = self.defence, self.training.epochs
        ckpts = self.checkpoint_epochs()
        return [e for e in range(E) if e == d.epoch or (d.continuous and e > d.epoch and e in ckpts)]

    def checkpoint_epochs(self) -> list[int]:
        """Sorted checkpoint epochs e_1 < ... < e_T (0 first when include_init)."""
        ck, E = self.checkpoints, self.training.epochs
        if ck.schedule == "list":
            epochs = sorted(set(ck.epochs))
        else:
            if ck.schedule == "every":
                epochs = list(range(ck.every, E + 1, ck.every))
            else:  # dense_early
                dense = min(ck.dense_until, E)
                epochs = list(range(1, dense + 1)) + list(range(dense + ck.every_after, E + 1, ck.every_after))
            if not epochs or epochs[-1] != E:
                epochs.append(E)
        return ([0] if ck.include_init else []) + epochs

    def grid_size(self) -> int:
        """G of the G x G plane grid: ``analysis.grid``, or min(10, M/2) when unset."""
        return self.analysis.grid if self.analysis.grid is not None else min(10, self.training.n_models // 2)

    def model_label(self) -> str:
        """The model in a few words: the zoo arch with the width and depth set (unset ones are the
        arch's defaults) when privdyn built it, else ``model.arch`` alone (a model from outside)."""
        m = self.model
        sizes = [f"{k} {v}" for k, v in (("width", m.width), ("depth", m.depth)) if v is not None]
        return " ".join([m.arch, *sizes]) if self.source.kind == "train" else m.arch

    def optimizer_label(self, lr: bool = False) -> str:
        """The optimizer in a word: ``training.optimizer``'s name (and learning rate) when privdyn
        built it, else ``source.optimizer`` (what the user's recipe or the import named) or unknown."""
        o = self.training.optimizer
        if self.source.kind == "train":
            return f"{o.name} lr {o.lr:g}" if lr else o.name
        return self.source.optimizer or "unknown"

    def default_attack(self) -> str:
        """The attack analysed and reported by default: ``analysis.default_attack``, else the first listed."""
        return self.analysis.default_attack or self.attacks[0]

    def attack_digest(self, attack: str) -> str:
        """What produced ``scores/ATTACK``: the training setup, the reference rule, the attack's own
        options and the privdyn version (its inputs' provenance, DESIGN.md)."""
        from privdyn import __version__

        options = self.options_for(attack)
        blob = json.dumps({"train": self.section_hash(*TRAIN_SECTIONS), "references": self.references,
                           "attack": attack, "options": options.model_dump(mode="json"),
                           "version": __version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named top-level sections: what produced an artifact.

        ``dataset.root`` is left out: it says where the files are, not what they hold; so are
        ``training.devices`` and ``training.backend``: where the groups train, not what they learn;
        and ``analysis.workers``: how many processes analyse, not what comes out.
        So are fields at their defaults, so that a field a later version adds keeps old hashes, and
        a section of :data:`LATER_SECTIONS` at its defaults (or a defence that is off) entirely.
        """
        data = self.model_dump(mode="json", exclude_defaults=True,
                               exclude={"dataset": {"root"}, "training": {"devices", "backend"},
                                        "analysis": {"workers"}})
        if not self.defence.enabled:  # a defence that is off changes nothing, whatever its other fields
            data.pop("defence", None)
        blob = json.dumps({s: data.get(s) for s in sections if s in data or s not in LATER_SECTIONS},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: Sections whose change invalidates each stage's artifacts.
TRAIN_SECTIONS = ("seed", "source", "dataset", "model", "training", "checkpoints", "queries", "defence")
#: Sections added after hashes were first recorded: left out of a hash while at their defaults,
#: so that every run made before them keeps its hashes.
LATER_SECTIONS = ("defence",)
SCORE_SECTIONS = (*TRAIN_SECTIONS, "attacks", "references", "attack_options")
ANALYZE_SECTIONS = (*SCORE_SECTIONS, "analysis")



def check_rule(rule: str, where: str = "") -> str:
    """``rule`` when it parses; otherwise a :class:`PrivdynError` (a user error, exit 2)."""
    try:
        parse_rule(rule)
    except ValueError as e:
        raise PrivdynError(f"{where}{e}") from None
    return rule


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b]... = value`` for the dotted key ``a.b...``, creating the sections on the way."""
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise PrivdynError(f"--set {key}: {p!r} is not a section")
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (numbers, lists, booleans)."""
    for item in overrides:
        if "=" not in item:
            raise PrivdynError(f"--set {item!r}: expected key=value, e.g. --set training.epochs=10")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            problem = str(err).splitlines()[0]
            raise PrivdynError(f"--set {item!r}: the value is not valid YAML ({problem}). Quote lists and "
                               "mappings whole, e.g. --set 'attacks=[lira_online,rmia]'.") from None
        set_dotted(data, key.strip(), value)
    return data


def format_validation_error(err: ValidationError, source: str, schema: type[BaseModel] | None = None,
                            what: str = "config",
                            fix: str = "Fix the field(s) above in the YAML file or with --set key=value; "
                                       "docs/config.md lists every key.") -> str:
    """A pydantic error as a message for the user: one ``field.path: problem`` line per error, an
    unknown key with the close match among its section's keys (``schema``, default RunConfig)."""
    lines = [f"Invalid {what} ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = _unknown_key(schema or RunConfig, e["loc"])
        lines.append(f"  - {loc}: {msg}" if loc else f"  - {msg}")  # a model-level check names its fields
    lines.append(fix)
    return "\n".join(lines)


def _unknown_key(schema: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """What to say about an unknown key: the close match among the keys its section has."""
    for part in loc[:-1]:
        field = schema.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return "not a known key"
        schema = field.annotation
    keys = list(schema.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"not a known key; {hint}the keys here are {', '.join(keys)}"


def config_from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate ``data`` as a :class:`RunConfig`; a :class:`PrivdynError` lists every invalid field."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise PrivdynError(format_validation_error(err, source)) from None


def read_text_file(path: Path, what: str, alternative: str = "") -> str:
    """The UTF-8 text of a file the user named; a :class:`PrivdynError` that says what is wrong
    (missing, a directory, not text) otherwise."""
    fix = "Pass the path to a YAML file" + (f", {alternative}." if alternative else ".")
    if path.is_dir():
        raise PrivdynError(f"{what} {path} is a directory, not a file. {fix}")
    if not path.is_file():
        raise PrivdynError(f"{what} {path} does not exist. {fix}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise PrivdynError(f"{what} {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}), "
                           f"so it cannot be read as YAML: save it as UTF-8 encoded YAML. {fix}") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (None = the built-in quickstart) and apply overrides."""
    if path is None:
        text = resources.files("privdyn").joinpath("configs/quickstart.yaml").read_text()
        source = "built-in quickstart"
    else:
        p = Path(path)
        text, source = read_text_file(p, "Config file", "or no CONFIG at all for the built-in quickstart"), str(p)
    data = yaml_mapping(text, source)
    return config_from_dict(apply_overrides(data, overrides or []), source)


def yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """``text`` parsed as YAML with a mapping at the top (empty: ``{}``); a :class:`PrivdynError`
    naming ``source`` otherwise."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise PrivdynError(f"{source} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise PrivdynError(f"{source} must hold a mapping (key: value lines) at the top level")
    return data


def dump_config(cfg: RunConfig) -> str:
    """``cfg`` as YAML with every default filled in, sections in field order (what ``RUN/config.yaml`` holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
