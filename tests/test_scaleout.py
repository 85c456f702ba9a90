"""Scale-out and fault tolerance with real processes: an `mlflow server` on 127.0.0.1,
many concurrent jobs on a fresh SQLite store, and kill -9 in the middle of training."""

import os
import signal
import subprocess
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient
from test_workflow import _free_port, copy_workflow, snakemake

from motifpipe.tracking import store_lock


def write_config(wd, name="study.yaml", **changes):
    cfg = yaml.safe_load((wd / "config/smoke.yaml").read_text())
    for key, value in changes.items():
        cfg[key] = value if not isinstance(value, dict) else {**cfg.get(key, {}), **value}
    (wd / name).write_text(yaml.safe_dump(cfg))
    return name


def runs_by_job(client, experiment="motifpipe/smoke"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    jobs = {}
    for r in runs:
        jobs.setdefault(r.data.tags.get("job_key"), []).append(r)
    return runs, jobs


def wait_for_http(url, timeout=120):
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout} s"
            time.sleep(1)


@pytest.mark.slow
def test_smoke_study_against_a_real_mlflow_server(tmp_path):
    copy_workflow(tmp_path)
    port = _free_port()
    server = subprocess.Popen(
        ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health")
        name = write_config(tmp_path, tracking={"uri": uri})
        out = snakemake(tmp_path, "--configfile", name)
        assert out.returncode == 0, out.stderr[-3000:]
        client = MlflowClient(uri)
        runs, jobs = runs_by_job(client)
        assert len(runs) == 6  # parent, baseline, transfer, three arms
        assert {r.info.status for r in runs} == {"FINISHED"}
        for r in runs:
            if r.data.tags.get("rule") == "train":
                assert len(client.get_metric_history(r.info.run_id, "val_mse")) >= 2
                assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"curve",
                                                                                   "model"}
        assert not (tmp_path / "mlflow.db").exists()  # nothing went to the default store
        assert sorted(p.name for p in (tmp_path / "server-artifacts").rglob("*.curve.csv")) == [
            "mimicry.curve.csv", "mlp.curve.csv", "scratch.curve.csv"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # its worker processes can ignore SIGTERM
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.slow
def test_concurrent_jobs_on_a_fresh_sqlite_store(tmp_path):
    """18 training jobs (6 seeds x 3 arms) at --cores 8: none lost, duplicated or failed."""
    copy_workflow(tmp_path)
    name = write_config(tmp_path, seeds=list(range(6)),
                        train={"max_epochs": 3, "patience": 5})
    out = subprocess.run(["snakemake", "--cores", "8", "--configfile", name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    runs, jobs = runs_by_job(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"))
    train_jobs = {k: v for k, v in jobs.items() if k and k.startswith("train:")}
    assert len(train_jobs) == 18
    assert all(len(v) == 1 for v in jobs.values()), "a job has more than one run"
    assert {r.info.status for r in runs} == {"FINISHED"}


def _start(wd, *args):
    log = open(wd / "snakemake.out", "w")  # noqa: SIM115 - closed when the process ends
    return subprocess.Popen(["snakemake", "--cores", "2", *args], cwd=wd, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_kill_9_mid_training_then_resume(tmp_path):
    copy_workflow(tmp_path)
    name = write_config(tmp_path, train={"max_epochs": 100000, "max_time_s": 12,
                                         "patience": 100000})
    proc = _start(tmp_path, "--configfile", name)
    db = tmp_path / "mlflow.db"
    deadline = time.monotonic() + 300
    while True:  # wait until a training run is RUNNING in the store
        assert proc.poll() is None, ("workflow ended before it could be killed:\n"
                                     + (tmp_path / "snakemake.out").read_text()[-3000:])
        assert time.monotonic() < deadline, "no training run started"
        if db.exists():
            try:
                # Under the pipeline's lock: a client opening the store while init_tracking
                # creates its schema races the migration (as two pipeline jobs would).
                with store_lock(f"sqlite:///{db}"):
                    _, jobs = runs_by_job(MlflowClient(f"sqlite:///{db}"))
            except Exception:
                jobs = {}
            if any(k and k.startswith("train:") and v[0].info.status == "RUNNING"
                   for k, v in jobs.items()):
                break
        time.sleep(1)
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process tree, no cleanup
    proc.wait()

    # Every output under its final name is complete (written to a temp file, renamed).
    from motifpipe.data import load_dataset
    from motifpipe.io import read_json

    for f in tmp_path.glob("results/**/*.json"):
        read_json(f)
    for f in tmp_path.glob("results/**/data.safetensors"):
        load_dataset(f)

    # kill -9 leaves Snakemake's lock behind: --unlock, then resume.
    unlock = snakemake(tmp_path, "--configfile", name, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    out = snakemake(tmp_path, "--configfile", name, "--rerun-incomplete")
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{db}")
    runs, jobs = runs_by_job(client)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed = [r for r in runs if r.info.status in ("KILLED", "FAILED")]
    assert killed, "the killed training run was not closed"
    for key, job_runs in jobs.items():
        finished = [r for r in job_runs if r.info.status == "FINISHED"]
        assert len(finished) == 1, f"{key}: {len(finished)} FINISHED runs"

    n_runs = len(runs)
    again = snakemake(tmp_path, "--configfile", name)
    assert "Nothing to be done" in again.stdout + again.stderr
    assert len(runs_by_job(client)[0]) == n_runs  # a finished workflow logs nothing new
