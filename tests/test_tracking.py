"""MLflow tracking against a real SQLite store (no mocks)."""

import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from motifpipe import tracking


def _uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def _tags(key="job:1"):
    return {"job_key": key, "study": "t", "arm": "mlp"}


def test_finished_run_with_batched_metrics(tmp_path):
    uri = _uri(tmp_path)
    with tracking.job_run(uri, "exp", "r", _tags(), str(tmp_path / "art")) as run:
        run.log_params({"train": {"lr": 0.1, "depth": 3}})
        run.log_metrics([{"epoch": e, "val_mse": 1.0 / (e + 1)} for e in range(1500)])
        run_id = run.run_id
    c = MlflowClient(uri)
    r = c.get_run(run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["train.lr"] == "0.1"
    assert r.data.tags["study"] == "t" and r.data.tags["version.mlflow"]
    history = c.get_metric_history(run_id, "val_mse")
    assert len(history) == 1500 and {m.step for m in history} == set(range(1500))


def test_failed_run_records_reason(tmp_path):
    uri = _uri(tmp_path)
    with pytest.raises(ValueError), tracking.job_run(uri, "exp", "r", _tags()) as run:
        run_id = run.run_id
        raise ValueError("bad thing")
    r = MlflowClient(uri).get_run(run_id)
    assert r.info.status == "FAILED"
    assert "bad thing" in r.data.tags["motifpipe.failure"]


def test_stale_running_run_is_killed_by_next_attempt(tmp_path):
    uri = _uri(tmp_path)
    exp = tracking.ensure_experiment(uri, "exp", None)
    c = MlflowClient(uri)
    stale = c.create_run(exp, tags=_tags("job:x")).info.run_id  # as left by kill -9
    with tracking.job_run(uri, "exp", "r", _tags("job:x")) as run:
        fresh = run.run_id
    assert c.get_run(stale).info.status == "KILLED"
    assert c.get_run(fresh).info.status == "FINISHED"


def test_sigterm_marks_run_killed(tmp_path):
    uri = _uri(tmp_path)
    script = textwrap.dedent(f"""
        import os, signal
        from motifpipe import tracking
        with tracking.job_run({uri!r}, "exp", "r", {{"job_key": "k"}}) as run:
            print(run.run_id, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 143, out.stderr
    run_id = out.stdout.split()[0]
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"


def test_concurrent_first_open_of_a_fresh_store(tmp_path):
    """8 processes opening a fresh SQLite store at once: all runs land (the lock works)."""
    uri = _uri(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        from motifpipe import tracking
        with tracking.job_run({uri!r}, "exp", "r", {{"job_key": sys.argv[1]}}) as run:
            run.log_metrics([{{"epoch": 0, "x": 1.0}}])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, f"k{i}"], stderr=subprocess.PIPE)
             for i in range(8)]
    errors = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("exp").experiment_id])
    assert sorted(r.data.tags["job_key"] for r in runs) == sorted(f"k{i}" for i in range(8))
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_parent_run_nests_children(tmp_path):
    uri = _uri(tmp_path)
    ids = tracking.start_parent_run(uri, "exp", None, "study", {"a": 1})
    with tracking.job_run(uri, "exp", "child", _tags(), None, ids["parent_run_id"]) as run:
        child = run.run_id
    c = MlflowClient(uri)
    assert c.get_run(child).data.tags["mlflow.parentRunId"] == ids["parent_run_id"]
    report = tmp_path / "report.html"
    report.write_text("<html></html>")
    figure = tmp_path / "rates.png"
    figure.write_bytes(b"\x89PNG")
    tracking.finish_parent_run(uri, ids["parent_run_id"], [report, figure])
    parent = c.get_run(ids["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert [a.path for a in c.list_artifacts(ids["parent_run_id"], "report")] == [
        "report/figures", "report/report.html"]
    assert [a.path for a in c.list_artifacts(ids["parent_run_id"], "report/figures")] == [
        "report/figures/rates.png"]


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {
        "a.b": "1", "a.c": "[1, 2]", "d": "x"}
