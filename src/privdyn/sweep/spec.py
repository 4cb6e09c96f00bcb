"""Sweep files: a base run config, a grid of dotted config keys, zip groups and seeds.

A sweep file is YAML validated with pydantic. ``expand`` turns it into the list of points, each a
fully validated ``RunConfig`` with a readable, unique slug naming its run directory. Every point
is validated before anything runs, so a typo in the sweep file costs seconds, not hours.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from privdyn.config import (
    RunConfig,
    config_from_dict,
    format_validation_error,
    parse_rule,
    read_text_file,
    set_dotted,
    yaml_mapping,
)
from privdyn.errors import PrivdynError

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RESERVED = ("name", "label")
#: In a zip group, ``label`` names its entries (slug and table column) without setting any config key.
LABEL = "label"
_MAX_VALUE_CHARS = 40


def _distinct(values: list[Any]) -> int:
    return len({json.dumps(v, sort_keys=True, default=str) for v in values})


def _check_keys(keys: list[str], where: str) -> None:
    for k in keys:
        if k == LABEL and where.startswith("zip"):
            continue
        if not _KEY_RE.match(k):
            raise ValueError(f"{where}: {k!r} is not a dotted config key such as training.optimizer.name")
        if k in _RESERVED:
            raise ValueError(f"{where}: {k!r} cannot vary: the sweep names each run after its point")


class SweepSpec(BaseModel):
    """The validated content of a sweep file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the sweep's name: letters, digits, '.', '_' or '-'")
    description: str | None = None
    base: dict[str, Any] | str = Field(default_factory=dict,
                                       description="a run config inline, or the path to one "
                                                   "(relative to the sweep file)")
    grid: dict[str, list[Any]] = Field(default_factory=dict,
                                       description="dotted config key -> values; the cartesian product is taken")
    zip: list[dict[str, list[Any]]] = Field(default_factory=list,
                                            description="groups of keys whose value lists vary together")
    seeds: list[int] | None = Field(None, description="each point is run once per seed (sets `seed`)")
    run_reports: bool = Field(True, description="write each run's HTML report (report/index.html); "
                              "false saves its time, and `privdyn report RUN` writes one later")
    rules: list[str] = Field(default_factory=list, description="extra operating-point rules (e.g. score:0, "
                             "fpr:0.1) whose headline dynamics get METRIC@RULE columns in the comparison tables")

    @field_validator("rules")
    @classmethod
    def _rules(cls, v: list[str]) -> list[str]:
        for r in v:
            parse_rule(r)
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"{v!r}: use letters, digits, '.', '_' or '-' (it names the output folder)")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        _check_keys(list(v), "grid")
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"give at least one value for {empty}")
        repeated = [k for k, vals in v.items() if _distinct(vals) != len(vals)]
        if repeated:
            raise ValueError(f"{repeated}: a value is listed twice, which would run the same point twice")
        return v

    @field_validator("zip")
    @classmethod
    def _zip(cls, v: list[dict[str, list[Any]]]) -> list[dict[str, list[Any]]]:
        for j, group in enumerate(v):
            if not group:
                raise ValueError(f"group {j} is empty: list keys with equally long value lists")
            _check_keys(list(group), f"zip group {j}")
            lengths = {k: len(vals) for k, vals in group.items()}
            if len(set(lengths.values())) != 1 or 0 in lengths.values():
                raise ValueError(f"group {j}: every key needs the same, non-zero number of values (got {lengths})")
            entries = [list(e) for e in zip(*group.values())]
            if _distinct(entries) != len(entries):
                raise ValueError(f"group {j}: an entry is listed twice, which would run the same point twice")
            labels = group.get(LABEL)
            if labels is not None and (not all(isinstance(x, str) and x for x in labels)
                                       or len(set(labels)) != len(labels)):
                raise ValueError(f"group {j}: `label` needs distinct non-empty strings (got {labels})")
        if sum(LABEL in g for g in v) > 1:
            raise ValueError("give `label` in one zip group only (it becomes the table column `label`)")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"give distinct seeds, e.g. [0, 1, 2] (got {v})")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> SweepSpec:
        seen: dict[str, str] = {}
        groups = [("grid", list(self.grid))] + [(f"zip group {j}", list(g)) for j, g in enumerate(self.zip)]
        for where, keys in groups:
            for k in keys:
                if k in seen:
                    raise ValueError(f"{k!r} varies in both {seen[k]} and {where}; list each key once")
                seen[k] = where
        if self.seeds is not None and "seed" in seen:
            raise ValueError(f"'seed' varies in {seen['seed']} and in `seeds`; use `seeds` only")
        return self


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its slug, the values it sets, and the validated config."""

    slug: str
    values: dict[str, Any]  # every varying key -> this point's value (plus `seed`)
    config: RunConfig
    configuration: str      # the slug without the seed: shared by the seeds of one configuration


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: the spec, the resolved base config mapping and the expanded points."""

    spec: SweepSpec
    base: dict[str, Any]
    points: list[SweepPoint]
    varying: list[str]  # dotted keys that take more than one value, in sweep-file order

    def resolved_yaml(self) -> str:
        """The sweep file with its base inlined: what reproduces this sweep on its own."""
        data = self.spec.model_dump(mode="json", exclude_none=True)
        data["base"] = self.base
        return yaml.safe_dump(data, sort_keys=False)


def _read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    return yaml_mapping(read_text_file(path, what), f"{what} {path}")


def parse_spec(data: dict[str, Any], source: str = "sweep") -> SweepSpec:
    """Validate a sweep file's mapping as a :class:`SweepSpec`; a :class:`PrivdynError` lists every invalid field."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        fix = "Fix the field(s) above; docs/sweeps.md describes the format."
        raise PrivdynError(format_validation_error(err, source, SweepSpec, "sweep file", fix)) from None


def load_sweep(path: str | Path, data_root: str | Path | None = None) -> Sweep:
    """Read, validate and expand a sweep file (a ``base`` path is taken relative to it)."""
    path = Path(path)
    spec = parse_spec(_read_yaml_mapping(path, "Sweep file"), str(path))
    return expand(spec, base_dir=path.parent, data_root=data_root)


# ----- expansion ----------------------------------------------------------------------------

def _combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of grid values x zip entries x seeds, seeds innermost."""
    axes: list[list[dict[str, Any]]] = [[{k: v} for v in vals] for k, vals in spec.grid.items()]
    for group in spec.zip:
        keys = list(group)
        axes.append([dict(zip(keys, entry)) for entry in zip(*group.values())])
    if spec.seeds is not None:
        axes.append([{"seed": s} for s in spec.seeds])
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


def _slug_keys(spec: SweepSpec, varying: list[str]) -> list[str]:
    """Varying grid keys, and per zip group the fewest leading varying keys that tell its entries apart."""
    keys = [k for k in spec.grid if k in varying]
    for group in spec.zip:
        if LABEL in group and LABEL in varying:
            keys.append(LABEL)
            continue
        gkeys = [k for k in group if k in varying]
        for n in range(1, len(gkeys) + 1):
            entries = list(zip(*(group[k] for k in gkeys[:n])))
            if _distinct([list(e) for e in entries]) == len(entries):
                keys += gkeys[:n]
                break
        else:
            keys += gkeys
    return keys


def _labels(keys: list[str]) -> dict[str, str]:
    """Per key the shortest dotted suffix no other key shares, '.' -> '-'; a trailing `.name` is
    dropped first (dataset.name -> dataset, training.optimizer.name -> optimizer)."""
    paths = {k: k.split(".")[:-1] if k.endswith(".name") else k.split(".") for k in keys}

    def shared(k: str, suffix: list[str]) -> bool:
        return any(o != k and p[-len(suffix):] == suffix for o, p in paths.items() if len(p) >= len(suffix))

    labels = {}
    for k, parts in paths.items():
        n = next((n for n in range(1, len(parts) + 1) if not shared(k, parts[-n:])), None)
        if n is None:  # e.g. dataset.name beside dataset.options.dataset: spell every key out
            return {k: k.replace(".", "-") for k in keys}
        labels[k] = "-".join(parts[-n:])
    return labels


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def value_slug(v: Any) -> str:
    """A folder-safe rendering of one value: letters, digits and . _ + - only."""
    if v is None or isinstance(v, bool):
        text = str(v).lower()
    elif isinstance(v, float):
        text = format(v, "g")
    elif isinstance(v, (int, str)):
        text = str(v)
    else:
        text = json.dumps(v, sort_keys=True, separators=(",", ":"))
    text = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-._") or "x"
    if len(text) > _MAX_VALUE_CHARS:
        text = f"{text[:_MAX_VALUE_CHARS - 9]}-{_short_hash(v)}"
    return text


def _names(combos: list[dict[str, Any]], slug_keys: list[str], with_seed: bool) -> list[str]:
    """Per combination, ``label-value`` parts of ``slug_keys`` (and the seed) joined by ``_``.

    Without the seed this names a combination's configuration, which its seeds share. Names
    that different values render alike (e.g. 'a/b' and 'a-b') get a hash of those values.
    """
    seeded = with_seed and bool(combos) and "seed" in combos[0] and "seed" not in slug_keys
    keys = [*slug_keys, *(["seed"] if seeded else [])]
    labels = _labels([k for k in keys if k != LABEL])

    def part(k: str, v: Any) -> str:
        return value_slug(v) if k == LABEL else f"{labels[k]}-{value_slug(v)}"

    named = [(c if with_seed else {k: v for k, v in c.items() if k != "seed"},
              "_".join(part(k, c[k]) for k in keys) or "point") for c in combos]
    owners: dict[str, set[str]] = {}
    for values, name in named:
        owners.setdefault(name, set()).add(_short_hash(values))
    return [f"{name}_{_short_hash(values)}" if len(owners[name]) > 1 else name for values, name in named]


def _resolve_base(base: dict[str, Any] | str, base_dir: Path | None) -> dict[str, Any]:
    if isinstance(base, dict):
        return copy.deepcopy(base)
    p = Path(base)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return _read_yaml_mapping(p, "Sweep base config")


def expand(spec: SweepSpec, base_dir: Path | None = None, data_root: str | Path | None = None) -> Sweep:
    """Every point of the sweep as a validated config; raises on the first invalid point.

    ``data_root`` fills ``dataset.root`` wherever the sweep leaves it unset.
    """
    base = _resolve_base(spec.base, base_dir)
    combos = _combinations(spec)
    all_keys = [*spec.grid, *(k for g in spec.zip for k in g)]
    varying = [k for k in all_keys if _distinct([c[k] for c in combos]) > 1]
    slug_keys = _slug_keys(spec, varying)
    slugs = _names(combos, slug_keys, with_seed=True)
    configurations = _names(combos, slug_keys, with_seed=False)
    points = []
    for slug, configuration, combo in zip(slugs, configurations, combos, strict=True):
        data = copy.deepcopy(base)
        try:
            for k, v in combo.items():
                if k == LABEL:
                    continue
                set_dotted(data, k, copy.deepcopy(v))
        except PrivdynError as err:
            raise PrivdynError(f"Sweep {spec.name}, point {slug}: {err}") from None
        data["name"] = f"{spec.name}-{slug}"
        if data_root is not None and not (data.get("dataset") or {}).get("root"):
            data.setdefault("dataset", {})["root"] = str(Path(data_root).expanduser().resolve())
        cfg = config_from_dict(data, f"sweep {spec.name}, point {slug}")
        values = {k: combo[k] for k in varying}
        values["seed"] = cfg.seed
        points.append(SweepPoint(slug, values, cfg, configuration))
    return Sweep(spec, base, points, varying)
