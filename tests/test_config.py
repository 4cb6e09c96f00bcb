import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from privdyn.config import RunConfig, config_from_dict, load_config, parse_rule
from privdyn.errors import PrivdynError


def test_quickstart_config_loads_and_resolves():
    cfg = load_config(None)
    assert cfg.training.n_models == 16 and cfg.dataset.name == "mnist1d"
    assert cfg.checkpoint_epochs() == list(range(1, cfg.training.epochs + 1))
    assert cfg.grid_size() == 8


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["training.epochs=3", "attacks=[lira_online]", "checkpoints.include_init=true"])
    assert cfg.training.epochs == 3 and cfg.attacks == ["lira_online"]
    assert cfg.checkpoint_epochs() == [0, 1, 2, 3]


@pytest.mark.parametrize("data,needle", [
    ({"training": {"n_models": 7}}, "training.n_models: must be even"),
    ({"analysis": {"grid": 20}}, "exceeds M/2=8"),
    ({"attacks": ["nope"]}, "unknown ['nope']"),
    ({"trainig": {}}, "trainig: not a known key; did you mean 'training'?"),
    ({"analysis": {"rule": "fpr:2"}}, "alpha must lie in (0, 1)"),
    ({"training": {"n_models": 16, "optimzer": {}}}, "training.optimzer: not a known key; did you mean 'optimizer'?"),
    ({"analysis": {"zzz": 1}}, "analysis.zzz: not a known key; the keys here are default_attack, rule,"),
    ({"queries": ["rotate"]}, "query 'rotate' is not one of"),
    ({"checkpoints": {"schedule": "list", "epochs": [0, 99]}, "training": {"epochs": 5}}, "outside 1..training.epochs"),
])
def test_invalid_configs_name_field_and_fix(data, needle):
    with pytest.raises(PrivdynError) as e:
        config_from_dict({**{"training": {"n_models": 16}}, **data} if "training" not in data else data)
    assert needle in str(e.value)


def test_defaults_and_grid_default():
    cfg = RunConfig()
    assert cfg.grid_size() == 8  # min(10, M/2) with M = 16
    assert parse_rule("score:-1.5") == ("score", -1.5)


@pytest.mark.parametrize(("source", "model", "optimizer"), [
    ({"kind": "train"}, "mlp", "sgd"),
    ({"kind": "python", "optimizer": "Adam"}, "mlp", "Adam"),
    ({"kind": "record"}, "mlp", "unknown"),
    ({"kind": "import", "optimizer": "unknown (imported)"}, "mlp", "unknown (imported)"),
])
def test_setup_labels_describe_only_what_privdyn_built(source, model, optimizer):
    """Width, depth and learning rate belong to privdyn's zoo and recipe: a run from outside shows
    its own labels, never the config's defaults, which did not build it."""
    cfg = config_from_dict({"source": source, "model": {"arch": "mlp", "width": 64}})
    assert cfg.optimizer_label() == optimizer
    built = source["kind"] == "train"
    assert cfg.model_label() == ("mlp width 64" if built else model)
    assert cfg.optimizer_label(lr=True) == ("sgd lr 0.05" if built else optimizer)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(PrivdynError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_checkpoint_every_k_always_ends_at_last_epoch():
    cfg = config_from_dict({"training": {"epochs": 10}, "checkpoints": {"every": 3}})
    assert cfg.checkpoint_epochs() == [3, 6, 9, 10]



# --- docs/config.md lists every field of the config, with its default and what it does -----------

REFERENCE = Path(__file__).parent.parent / "docs" / "config.md"
BEGIN, END = "<!-- reference: kept equal to RunConfig by tests/test_config.py -->", "<!-- end of reference -->"


def _kind(annotation: Any) -> str:
    """A field's type as a reader of YAML sees it: choices, or the YAML type names."""
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return " or ".join(_kind(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return f"list of {_kind(typing.get_args(annotation)[0])}"
    if typing.get_origin(annotation) is dict:
        return "mapping"
    return {type(None): "null", bool: "bool", int: "int", float: "float", str: "string"}[annotation]


def _reference(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The reference's lines for ``model``: one table per section, then its subsections."""
    rows, subsections = [], []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            subsections.append((prefix + name, field.annotation))
            continue
        default = yaml.safe_dump(field.get_default(call_default_factory=True), default_flow_style=True)
        default = default.removesuffix("\n").removesuffix("\n...")
        rows.append(f"| `{prefix}{name}` | {_kind(field.annotation)} | `{default}` | {field.description} |")
    section = prefix.rstrip(".")
    doc = " ".join((model.__doc__ or "").split()).removeprefix(f"``{section}``: ") if section else "Outside sections."
    doc = re.sub(r":\w+:`", "`", doc).replace("``", "`")  # the docstring's reST as Markdown
    lines = [f"### `{section}`" if section else "### Top level", "", doc[:1].upper() + doc[1:], "",
             "| key | type | default | what |",
             "|---|---|---|---|", *rows, ""] if rows else []
    for path, sub in subsections:
        lines += _reference(sub, path + ".")
    return lines


def test_config_reference_lists_every_field_with_its_default():
    expected = "\n".join([BEGIN, "", *_reference(RunConfig), END])
    text = REFERENCE.read_text()
    assert BEGIN in text and END in text, f"{REFERENCE} lost its reference markers"
    found = text[text.index(BEGIN):text.index(END) + len(END)]
    assert found == expected, f"docs/config.md is out of date; its reference should read:\n{expected}"


def test_every_config_field_says_what_it_does():
    missing = [line for line in _reference(RunConfig) if line.endswith("| None |")]
    assert not missing, missing
