import pytest
import yaml

from conftest import ROOT
from motifpipe.config import jobs, sizes, validate
from motifpipe.errors import MotifpipeError

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def minimal():
    return {"study": "s", "tasks": {"a": {"generator": "nonsmooth", "n": 100}}}


def test_defaults_are_filled():
    cfg = validate(minimal(), SCHEMA)
    assert cfg["seeds"] == [0]
    assert cfg["train"]["batch_size"] == 64
    assert cfg["split"] == {"val": 0.2, "test": 0.2}
    assert cfg["tracking"]["uri"] == "sqlite:///mlflow.db"
    assert cfg["tasks"]["a"]["noise"] == 0.1


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("**/*.yaml")))
def test_shipped_configs_validate(path):
    validate(yaml.safe_load(path.read_text()), SCHEMA)


def test_misspelt_key_is_named_on_one_line():
    cfg = minimal() | {"train": {"max_epoch": 3}}
    with pytest.raises(MotifpipeError) as err:
        validate(cfg, SCHEMA)
    msg = str(err.value)
    assert "\n" not in msg
    assert "train.max_epoch" in msg and "did you mean 'max_epochs'" in msg


def test_wrong_type_names_key_and_expectation():
    cfg = minimal() | {"seeds": ["zero"]}
    with pytest.raises(MotifpipeError, match=r"seeds\.0: 'zero' is not of type 'integer'"):
        validate(cfg, SCHEMA)


def test_bad_enum_and_bound():
    with pytest.raises(MotifpipeError, match="arms.0"):
        validate(minimal() | {"arms": ["mimicri"]}, SCHEMA)
    with pytest.raises(MotifpipeError, match="train.lr"):
        validate(minimal() | {"train": {"lr": -1}}, SCHEMA)


def test_task_params_checked_by_generator():
    cfg = minimal()
    cfg["tasks"]["a"]["params"] = {"jumpp": 1.0}
    with pytest.raises(MotifpipeError, match="jumpp"):
        validate(cfg, SCHEMA)


def test_job_grid():
    cfg = validate(minimal() | {"seeds": [0, 1]}, SCHEMA)
    cfg["tasks"]["a"]["n"] = [100, 200]
    assert sizes(cfg["tasks"]["a"]) == [100, 200]
    assert jobs(cfg) == [{"task": "a", "n": n, "seed": s} for n in (100, 200) for s in (0, 1)]


def test_train_defaults_match_schema():
    from motifpipe.train import DEFAULTS

    schema = yaml.safe_load(SCHEMA.read_text())
    props = schema["properties"]["train"]["properties"]
    assert {k: v["default"] for k, v in props.items()} == DEFAULTS


def test_arm_overrides_are_merged_and_checked():
    from motifpipe.config import train_config

    cfg = validate(minimal() | {"arm_train": {"scratch": {"lr": 0.01}}}, SCHEMA)
    assert train_config(cfg, "scratch")["lr"] == 0.01
    assert train_config(cfg, "mlp")["lr"] == cfg["train"]["lr"]
    with pytest.raises(MotifpipeError, match=r"arm_train.scratch.lrr: unknown key"):
        validate(minimal() | {"arm_train": {"scratch": {"lrr": 0.01}}}, SCHEMA)
    with pytest.raises(MotifpipeError, match=r"arm_train.mlp.batch_size"):
        validate(minimal() | {"arm_train": {"mlp": {"batch_size": 0}}}, SCHEMA)
