"""The run config of an import: labels for what privdyn did not train, and the checkpoints and
models of the imported logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privdyn.config import NAME_RE, RunConfig, apply_overrides, config_from_dict
from privdyn.errors import PrivdynError
from privdyn.ingest.source import LogitSource


def query_names(q: int, given: list[str] | None) -> list[str]:
    """Names of the Q imported augmentations: ``given`` (checked), else identity, aug1, aug2, ..."""
    if given is None:
        return ["identity", *(f"aug{j}" for j in range(1, q))]
    names = [g.strip() for g in given if g.strip()]
    if len(names) != q or len(set(names)) != q:
        raise PrivdynError(f"--queries names {len(names)} augmentation(s) ({', '.join(names) or 'none'}), but the "
                           f"logits hold Q={q}: give {q} distinct names, in the order of the logits' query axis "
                           "(the one evaluated on the plain input named identity).")
    return names


def default_name(source: Path) -> str:
    """The run's name: the source folder's name when it is a valid run name, else ``import``."""
    return source.resolve().name if NAME_RE.match(source.resolve().name) else "import"


def import_config(src: LogitSource, fingerprint: str, name: str | None = None, queries: list[str] | None = None,
                  attacks: list[str] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The config of a run made from ``src``: ``source.kind=import`` with its description and fingerprint,
    sizes and checkpoint epochs from the logits, queries named, then ``key=value`` ``overrides``."""
    T, M, N, Q, C = src.shape
    epochs = [int(e) for e in src.epochs]
    data: dict[str, Any] = {
        "name": name or default_name(src.path),
        "source": {"kind": "import", "description": f"{src.layout} layout at {src.path.resolve()}",
                   "fingerprint": fingerprint, "optimizer": "unknown (imported)"},
        "dataset": {"name": f"imported:{src.path.resolve().name}", "n_pool": N,
                    "n_test": len(src.test.labels) if src.test else None},
        "model": {"arch": "imported"},
        "training": {"n_models": M, "epochs": epochs[-1]},
        "checkpoints": {"schedule": "list", "epochs": [e for e in epochs if e > 0], "include_init": epochs[0] == 0,
                        "save_logits": True},
        "queries": query_names(Q, queries),
    }
    if attacks:
        data["attacks"] = attacks
    cfg = config_from_dict(apply_overrides(data, overrides or []), "the import's config")
    if cfg.checkpoint_epochs() != epochs or cfg.training.n_models != M or len(cfg.queries) != Q:
        raise PrivdynError("--set changed the checkpoints, models or queries of the import; those come from the "
                           "imported files. Leave checkpoints.*, training.epochs, training.n_models and queries "
                           "as they are.")
    return cfg
