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


def test_sweep_expands_into_named_tasks_with_the_value_set():
    from motifpipe.config import expand_tasks

    cfg = minimal()
    cfg["tasks"]["a"] = {"generator": "manifold", "n": 100, "params": {"d": 2},
                         "sweep": {"params.D": [3, 12]}}
    tasks = expand_tasks(validate(cfg, SCHEMA))
    assert list(tasks) == ["a-D3", "a-D12"]
    assert tasks["a-D12"]["task"]["params"]["D"] == 12
    assert tasks["a-D12"]["family"] == "a" and tasks["a-D12"]["sweep"] == {"params.D": 12}
    assert tasks["a-D12"]["data"] == "a-D12"
    assert jobs(validate(cfg, SCHEMA))[0]["task"] == "a-D3"


def test_baseline_sweep_and_task_override_merge_over_the_global_section():
    from motifpipe.config import expand_tasks

    cfg = minimal() | {"baseline": {"kind": "rff", "gamma_factors": [1.0]}}
    cfg["tasks"]["a"] |= {"baseline": {"lambda_grid": [0.0]},
                          "sweep": {"baseline.features": [10, 20]}}
    spec = expand_tasks(validate(cfg, SCHEMA))["a-features20"]
    assert spec["baseline"]["features"] == 20 and spec["baseline"]["lambda_grid"] == [0.0]
    assert spec["baseline"]["kind"] == "rff" and spec["baseline"]["gamma_factors"] == [1.0]
    assert spec["data"] == "a-features10"  # baseline sweeps share one data set


def test_scale_grows_n_and_swept_sizes_together():
    from motifpipe.config import expand_tasks

    cfg = minimal() | {"scale": 2, "baseline": {"kind": "rff"}}
    cfg["tasks"]["a"] |= {"n": [100, 150], "sweep": {"baseline.features": [50]}}
    spec = expand_tasks(validate(cfg, SCHEMA))["a-features100"]
    assert spec["task"]["n"] == [200, 300] and spec["baseline"]["features"] == 100


@pytest.mark.parametrize("bad, match", [
    ({"sweep": {"params.D": []}}, r"tasks.a.sweep.params.D"),
    ({"sweep": {"train.lr": [1]}}, r"tasks.a.sweep: key 'train.lr' is not allowed here"),
    ({"sweep": {"params.D": [3], "noise": [0.1]}},
     r"tasks.a.sweep: at most 1 key\(s\) allowed, got params.D, noise"),
    ({"sweep": {"params.D": [1]}}, r"tasks.a.sweep.params.D: value 1 .* must be >= 2"),
    ({"sweep": {"params.Dd": [3]}}, r"Dd"),
    ({"baseline": {"kind": "rfff"}}, r"tasks.a.baseline.kind"),
    ({"baseline": {"features": 0}}, r"tasks.a.baseline.features"),
])
def test_bad_sweeps_and_overrides_are_named(bad, match):
    cfg = minimal()
    cfg["tasks"]["a"] |= bad
    with pytest.raises(MotifpipeError, match=match) as err:
        validate(cfg, SCHEMA)
    assert "\n" not in str(err.value)


def test_deepsets_arm_needs_set_valued_tasks():
    with pytest.raises(MotifpipeError, match=r"arms: deepsets .* task 'a'"):
        validate(minimal() | {"arms": ["deepsets"]}, SCHEMA)
    cfg = minimal() | {"arms": ["deepsets"]}
    cfg["tasks"]["a"] = {"generator": "invariant", "n": 100}
    assert validate(cfg, SCHEMA)["deepsets"]["pool"] == "mean"


def test_report_figures_follow_what_the_study_runs():
    from motifpipe.config import heatmap_jobs, report_figures

    cfg = validate(minimal() | {"arms": []}, SCHEMA)
    assert report_figures(cfg) == ["final_errors", "heatmaps"]
    assert heatmap_jobs(cfg) == [{"task": "a", "n": 100, "seed": 0}]
    cfg = minimal()
    cfg["tasks"]["a"] = {"generator": "manifold", "n": [100, 200, 400], "params": {"d": 2},
                         "sweep": {"params.D": [3, 4]}}
    assert report_figures(validate(cfg, SCHEMA)) == [
        "learning_curves", "final_errors", "rates", "sweep"]
