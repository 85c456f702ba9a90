"""End to end: real Snakemake on config/smoke.yaml in a temporary directory."""

import shutil
import subprocess

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import ROOT


def copy_workflow(dst):
    shutil.copy(ROOT / "Snakefile", dst)
    shutil.copytree(ROOT / "workflow", dst / "workflow")
    shutil.copytree(ROOT / "config", dst / "config")


def snakemake(cwd, *args):
    return subprocess.run(["snakemake", "--cores", "2", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("smoke")
    copy_workflow(wd)
    out = snakemake(wd, "--configfile", "config/smoke.yaml")
    assert out.returncode == 0, out.stderr[-4000:]
    return wd


@pytest.mark.slow
def test_smoke_outputs(smoke_run):
    cfg = yaml.safe_load((smoke_run / "config/smoke.yaml").read_text())
    summary = pd.read_csv(smoke_run / "results/smoke/summary.csv")
    n_jobs = len(cfg["tasks"]) * len(cfg["seeds"])
    assert len(summary) == n_jobs * (len(cfg["arms"]) + 1)  # + the kernel arm
    assert set(summary["arm"]) == {"kernel", *cfg["arms"]}
    assert summary["test_mse"].notna().all() and (summary["test_mse"] > 0).all()
    html = (smoke_run / "reports/smoke/report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    assert "learning_curves" in html


@pytest.mark.slow
def test_smoke_mlflow_runs(smoke_run):
    c = MlflowClient(f"sqlite:///{smoke_run}/mlflow.db")
    exp = c.get_experiment_by_name("motifpipe/smoke")
    runs = c.search_runs([exp.experiment_id])
    by_rule = {}
    for r in runs:
        by_rule.setdefault(r.data.tags.get("rule"), []).append(r)
    assert len(by_rule["train"]) == 3 and len(by_rule["fit_baseline"]) == 1
    assert all(r.info.status == "FINISHED" for r in runs)
    parent = by_rule["init_tracking"][0].info.run_id
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in by_rule["train"])
    keys = [r.data.tags["job_key"] for r in by_rule["train"]]
    assert len(set(keys)) == len(keys)  # one run per job
    for r in by_rule["train"]:
        assert len(c.get_metric_history(r.info.run_id, "val_mse")) >= 2
        artifacts = {a.path for a in c.list_artifacts(r.info.run_id)}
        assert {"curve", "model"} <= artifacts
        arm = r.data.tags["arm"]
        assert [a.path for a in c.list_artifacts(r.info.run_id, "curve")] == [
            f"curve/{arm}.curve.csv"]


@pytest.mark.slow
def test_second_run_does_nothing(smoke_run):
    out = snakemake(smoke_run, "--configfile", "config/smoke.yaml")
    assert out.returncode == 0
    assert "Nothing to be done" in out.stdout + out.stderr


@pytest.mark.slow
def test_snakemake_report(smoke_run):
    out = snakemake(smoke_run, "--configfile", "config/smoke.yaml",
                    "--report", "snakemake_report.html")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (smoke_run / "snakemake_report.html").stat().st_size > 10_000


def test_misspelt_key_fails_before_any_job(tmp_path):
    copy_workflow(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config/smoke.yaml").read_text())
    cfg["train"]["max_epoch"] = cfg["train"].pop("max_epochs")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", "bad.yaml")
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()
    assert len(err) == 1, out.stderr
    assert err[0].startswith("motifpipe: config key train.max_epoch: unknown key "
                             "(did you mean 'max_epochs'?); allowed keys here: accelerator,")
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_failed_job_leaves_no_output_and_a_failed_run(tmp_path):
    """An impossible fidelity bound fails the transfer job: FAILED run, no network file."""
    copy_workflow(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config/smoke.yaml").read_text())
    cfg["transfer"] = {"max_rel_error": 1e-30}
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/smoke/nonsmooth2d/n300/seed0/network.safetensors"
    out = snakemake(tmp_path, target, "--configfile", "strict.yaml")
    assert out.returncode != 0
    assert not list(tmp_path.glob("results/smoke/**/network.safetensors"))
    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = c.search_runs([c.get_experiment_by_name("motifpipe/smoke").experiment_id],
                         filter_string="tags.rule = 'transfer'")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "exceeds transfer.max_rel_error" in runs[0].data.tags["motifpipe.failure"]


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_ui_serves_the_store(smoke_run):
    """What `make ui` starts: the MLflow UI on 127.0.0.1 over the study's SQLite store."""
    import json
    import time
    import urllib.request

    port = _free_port()
    ui = subprocess.Popen(["mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
                           "--backend-store-uri", "sqlite:///mlflow.db"], cwd=smoke_run,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/experiments/search?max_results=50") as r:
                    experiments = json.load(r)["experiments"]
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui did not answer in 120 s"
                time.sleep(1)
        exp = next(e for e in experiments if e["name"] == "motifpipe/smoke")
        req = urllib.request.Request(
            f"{base}/runs/search", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode())
        with urllib.request.urlopen(req) as r:
            runs = json.load(r)["runs"]
        assert len(runs) >= 6  # parent + baseline + transfer + 3 arms
        train = next(r for r in runs if {"key": "rule", "value": "train"} in r["data"]["tags"])
        with urllib.request.urlopen(
                f"{base}/artifacts/list?run_id={train['info']['run_id']}") as r:
            paths = {f["path"] for f in json.load(r)["files"]}
        assert {"curve", "model"} <= paths
    finally:
        ui.terminate()
        ui.wait(timeout=30)


def test_train_jobs_ask_for_a_gpu_only_when_configured(tmp_path):
    copy_workflow(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config/smoke.yaml").read_text())
    cfg["arm_train"]["mlp"] = {"accelerator": "gpu"}
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", "gpu.yaml", "-n", "--printshellcmds")
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = out.stdout.split("\n\n")
    train = [j for j in jobs if "rule train:" in j]
    assert len(train) == 3
    for job in train:
        wants_gpu = "arm=mlp" in job
        assert ("gpu=1" in job) == wants_gpu, job


def test_table_task_file_is_an_input_of_generate(tmp_path):
    import numpy as np
    import pandas as pd

    copy_workflow(tmp_path)
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.random(60), "b": rng.random(60), "y": rng.random(60)}).to_csv(
        tmp_path / "mydata.csv", index=False)
    cfg = yaml.safe_load((tmp_path / "config/smoke.yaml").read_text())
    cfg["tasks"] = {"mine": {"generator": "table", "n": 60,
                             "params": {"path": "mydata.csv", "target": "y"}}}
    (tmp_path / "table.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", "table.yaml", "-n", "--printshellcmds")
    assert out.returncode == 0, out.stderr[-2000:]
    generate = next(j for j in out.stdout.split("\n\n") if "rule generate:" in j)
    assert "input: mydata.csv" in generate


@pytest.mark.slow
def test_group_arms_trains_every_arm_in_one_job(tmp_path):
    copy_workflow(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config/smoke.yaml").read_text()) | {"group_arms": True}
    (tmp_path / "grouped.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", "grouped.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "train_arms" in out.stderr and "rule train:" not in out.stderr
    assert [p.name for p in (tmp_path / "logs/smoke/train").iterdir()] == [
        "nonsmooth2d_n300_seed0.log"]
    summary = pd.read_csv(tmp_path / "results/smoke/summary.csv")
    assert sorted(summary["arm"]) == ["kernel", "mimicry", "mlp", "scratch"]
    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = c.search_runs([c.get_experiment_by_name("motifpipe/smoke").experiment_id],
                         filter_string="tags.rule = 'train'")
    assert sorted(r.data.tags["arm"] for r in runs) == ["mimicry", "mlp", "scratch"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def _mini_study(wd, name: str, **changes) -> dict:
    """A shipped study config, shrunk for CI (same keys, smaller numbers), as a file."""
    cfg = yaml.safe_load((ROOT / f"config/studies/{name}.yaml").read_text())
    cfg |= {"seeds": [0], "study": f"mini_{name}"} | changes
    (wd / f"mini_{name}.yaml").write_text(yaml.safe_dump(cfg))
    return cfg


def _check_report(wd, study: str, figures: set[str]):
    from matplotlib.image import imread

    report_dir = wd / "reports" / study
    html = (report_dir / "report.html").read_text()
    assert {p.stem for p in (report_dir / "figures").glob("*.png")} == figures
    for name in figures:
        img = imread(report_dir / "figures" / f"{name}.png")
        assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.05
    assert html.count("data:image/png;base64,") == len(figures)
    c = MlflowClient(f"sqlite:///{wd}/mlflow.db")
    exp = c.get_experiment_by_name(f"motifpipe/{study}")
    parent = c.search_runs([exp.experiment_id], "tags.rule = 'init_tracking'")[0]
    assert parent.info.run_id in html
    attached = {a.path for a in c.list_artifacts(parent.info.run_id, "report")}
    assert any(p.endswith("report.html") for p in attached), attached
    return html


@pytest.mark.slow
def test_rates_study_reports_both_fitted_slopes(tmp_path):
    copy_workflow(tmp_path)
    _mini_study(tmp_path, "nonsmooth_rates", scale=0.1,
                train={"max_epochs": 20, "patience": 10, "batch_size": 32})
    out = snakemake(tmp_path, "--configfile", "mini_nonsmooth_rates.yaml")
    assert out.returncode == 0, out.stderr[-4000:]
    slopes = pd.read_csv(tmp_path / "reports/mini_nonsmooth_rates/slopes.csv")
    assert set(slopes["arm"]) == {"kernel", "mlp"}
    assert slopes["slope"].notna().all() and (slopes["points"] == 5).all()
    assert (slopes["low"] < slopes["high"]).all()
    assert dict(zip(slopes["arm"], slopes["theory"], strict=True)) == pytest.approx(
        {"kernel": -1 / 3, "mlp": -2 / 3})
    html = _check_report(tmp_path, "mini_nonsmooth_rates",
                         {"learning_curves", "final_errors", "rates", "heatmaps"})
    assert "slope" in html


@pytest.mark.slow
def test_invariance_study_trains_the_deepsets_arm(tmp_path):
    copy_workflow(tmp_path)
    cfg = _mini_study(tmp_path, "invariance", train={"max_epochs": 5, "patience": 5})
    cfg["tasks"]["sets"] |= {"n": 300, "sweep": {"params.m": [2, 4]}}
    cfg["arms"] = ["mimicry", "mlp", "deepsets"]
    (tmp_path / "mini_invariance.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", "mini_invariance.yaml")
    assert out.returncode == 0, out.stderr[-4000:]
    summary = pd.read_csv(tmp_path / "results/mini_invariance/summary.csv")
    assert set(summary["task"]) == {"sets-m2", "sets-m4"}
    assert set(summary["sweep_value"]) == {2, 4} and set(summary["family"]) == {"sets"}
    ds = summary[summary["arm"] == "deepsets"]
    assert len(ds) == 2 and ds["test_mse"].notna().all()
    assert (ds["dim"] == ds["sweep_value"] * 2).all()
    _check_report(tmp_path, "mini_invariance", {"learning_curves", "final_errors", "sweep"})


@pytest.mark.slow
def test_double_descent_study_runs_baselines_only(tmp_path):
    copy_workflow(tmp_path)
    cfg = _mini_study(tmp_path, "double_descent", scale=0.25)
    for task in cfg["tasks"].values():
        task["sweep"] = {"baseline.features": [120, 600, 2400]}
    (tmp_path / "mini_double_descent.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", "mini_double_descent.yaml")
    assert out.returncode == 0, out.stderr[-4000:]
    summary = pd.read_csv(tmp_path / "results/mini_double_descent/summary.csv")
    assert set(summary["arm"]) == {"kernel"} and len(summary) == 6
    assert sorted(set(summary["sweep_value"])) == [30, 150, 600]  # scaled with n
    assert (summary["n_train"] == 150).all()
    # a sweep of baseline settings reuses one data set per family and seed
    data = sorted(p.parent.parent.parent.name for p in
                  (tmp_path / "results/mini_double_descent").glob("*/n*/seed*/data.safetensors"))
    assert data == ["ridge-features30", "ridgeless-features30"]
    _check_report(tmp_path, "mini_double_descent", {"final_errors", "double_descent"})
