"""The run config of an import: labels for what privdyn did not train, and the checkpoints and
models of the imported logits."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from privdyn.config import NAME_RE, RunConfig, apply_overrides, config_from_dict
from privdyn.errors import PrivdynError
from privdyn.ingest.source import LogitSource

#: The config keys an import takes from the imported files (or writes itself, ``source``): ``--set``
#: may not change them, or config.yaml would describe other models than the ones imported.
DETERMINED = ("checkpoints", "training.epochs", "training.n_models", "queries", "dataset.name", "dataset.n_pool",
              "dataset.n_test", "model.arch", "source")
_ABSENT = object()


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
    base = config_from_dict(copy.deepcopy(data), "the import's config")
    changed = apply_overrides(copy.deepcopy(data), overrides or [])
    try:
        cfg = config_from_dict(changed, "the import's config")
    except PrivdynError:
        keys = [d for k in DETERMINED for d in _changes(_lookup(data, k), _lookup(changed, k), k)]
        if keys:  # the refusal, not a config error caused by the changed key (e.g. epochs < checkpoints)
            raise _refusal(keys) from None
        raise
    keys = [d for k in DETERMINED for d in _changes(_lookup(base, k), _lookup(cfg, k), k)]
    if keys:
        raise _refusal(keys)
    return cfg


def _lookup(obj: Any, key: str) -> Any:
    """The value at the dotted ``key`` of a config (attributes) or of its dict (items); absent: a marker."""
    for part in key.split("."):
        obj = obj.get(part, _ABSENT) if isinstance(obj, dict) else getattr(obj, part, _ABSENT)
        if obj is _ABSENT:
            break
    return obj


def _changes(old: Any, new: Any, key: str) -> list[str]:
    """The dotted keys at or below ``key`` whose values differ between ``old`` and ``new``."""
    if isinstance(old, BaseModel) and isinstance(new, BaseModel):
        old, new = old.model_dump(mode="json"), new.model_dump(mode="json")
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _changes(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{key}.{k}")]
    return [] if old == new else [key]


def _refusal(keys: list[str]) -> PrivdynError:
    return PrivdynError(f"--set changed {', '.join(keys)}, but an import takes these from the imported files (the "
                        "checkpoint epochs, the models, the queries and the data) and records where they came "
                        "from, so config.yaml would describe other models than the imported ones. Leave "
                        "checkpoints.*, training.epochs, training.n_models, queries, dataset.name, dataset.n_pool, "
                        "dataset.n_test, model.arch and source.* as they are (name the queries with --queries; the "
                        "epochs and models come from the files).")
