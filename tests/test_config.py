import pytest

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
    ({"trainig": {}}, "trainig: Extra inputs are not permitted"),
    ({"analysis": {"rule": "fpr:2"}}, "alpha must lie in (0, 1)"),
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


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(PrivdynError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_checkpoint_every_k_always_ends_at_last_epoch():
    cfg = config_from_dict({"training": {"epochs": 10}, "checkpoints": {"every": 3}})
    assert cfg.checkpoint_epochs() == [3, 6, 9, 10]

