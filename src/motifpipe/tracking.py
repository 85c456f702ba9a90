"""MLflow tracking: store initialisation, one run per job, batched metrics, provenance.

Every job talks to MLflow through :func:`job_run`, which
- creates the SQLite schema under a file lock (eight processes opening a fresh
  SQLite store at once all failed in a measurement; serialising the first open fixes it),
- marks runs that an earlier, killed attempt of the same job left RUNNING as KILLED,
- tags the run with the study, the job's wildcards and its provenance,
- marks the run FAILED (with the reason) if the job raises, KILLED on SIGTERM.

mlflow is imported lazily: it costs about 2 s per process.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import math
import os
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from motifpipe.errors import MotifpipeError

# MLflow's log_batch limits per request.
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise store initialisation between processes on one machine (SQLite only)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def client(uri: str):
    """An ``MlflowClient`` for ``uri`` whose schema and experiment are ready."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str, artifacts: str | None) -> str:
    """Create the store's schema and the experiment once; return the experiment id.

    On a SQLite store the experiment's artifacts go to ``artifacts`` (an absolute
    path is recorded); a tracking server chooses its own artifact location.
    """
    with store_lock(uri):
        c = client(uri)
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if sqlite_path(uri) is not None and artifacts:
            location = Path(artifacts).resolve().as_uri()
        try:
            return c.create_experiment(name, artifact_location=location)
        except Exception:  # a concurrent creator on a tracking server won the race
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id


def provenance() -> dict[str, str]:
    """Tags that say where and with what a run was produced."""
    tags = {
        "host": socket.gethostname(),
        "git_commit": _git_commit(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
    }
    for pkg in ("motifpipe", "torch", "pytorch-lightning", "mlflow", "snakemake"):
        tags[f"version.{pkg}"] = _version(pkg)
    return {k: v for k, v in tags.items() if v}


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def flatten(d: Mapping, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}} -> {"a.b": "1"}``: MLflow params are flat strings."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


class RunLogger:
    """Thin, batched logging onto one MLflow run."""

    def __init__(self, mlflow_client, run_id: str):
        self.client = mlflow_client
        self.run_id = run_id

    def log_params(self, params: Mapping) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_PARAMS])

    def set_tags(self, tags: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), _MAX_TAGS):
            self.client.log_batch(self.run_id, tags=items[i : i + _MAX_TAGS])

    def log_metrics(self, rows: list[Mapping[str, float]], step_key: str = "epoch") -> None:
        """Log many steps in as few requests as MLflow allows; NaN/inf values are skipped."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(key, float(value), now, int(row.get(step_key, 0)))
            for row in rows
            for key, value in row.items()
            if key != step_key and value is not None and math.isfinite(float(value))
        ]
        for i in range(0, len(items), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=items[i : i + _MAX_METRICS])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


class _Terminated(BaseException):
    """Raised from the SIGTERM handler so that the run is closed as KILLED."""


def _kill_stale_runs(c, experiment_id: str, job_key: str) -> None:
    """Runs of this job left RUNNING by a killed attempt (kill -9) are closed as KILLED."""
    stale = c.search_runs(
        [experiment_id],
        filter_string=f"tags.job_key = '{job_key}' and attributes.status = 'RUNNING'",
    )
    for run in stale:
        c.set_tag(run.info.run_id, "motifpipe.closed_by", "next attempt of the same job")
        c.set_terminated(run.info.run_id, status="KILLED")


@contextlib.contextmanager
def job_run(
    uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, object],
    artifacts: str | None = None,
    parent_run_id: str | None = None,
) -> Iterator[RunLogger]:
    """One MLflow run for one job; FINISHED on success, FAILED or KILLED otherwise.

    ``tags`` must contain ``job_key``, a string unique to the job (rule + wildcards).
    """
    exp_id = ensure_experiment(uri, experiment, artifacts)
    c = client(uri)
    _kill_stale_runs(c, exp_id, str(tags["job_key"]))
    all_tags = {**provenance(), **{k: str(v) for k, v in tags.items()}}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = c.create_run(exp_id, run_name=run_name, tags=all_tags)
    logger = RunLogger(c, run.info.run_id)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Terminated()

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield logger
    except _Terminated:
        c.set_tag(run.info.run_id, "motifpipe.failure", "terminated by SIGTERM")
        c.set_terminated(run.info.run_id, status="KILLED")
        raise SystemExit(143) from None
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"[:5000]
        c.set_tag(run.info.run_id, "motifpipe.failure", reason)
        c.set_terminated(run.info.run_id, status="FAILED")
        raise
    else:
        c.set_terminated(run.info.run_id, status="FINISHED")
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_parent_run(
    uri: str, experiment: str, artifacts: str | None, study: str, params: Mapping
) -> dict:
    """Create the study-level parent run that job runs nest under; return its ids."""
    exp_id = ensure_experiment(uri, experiment, artifacts)
    c = client(uri)
    tags = {**provenance(), "study": study, "rule": "init_tracking", "motifpipe.level": "study"}
    run = c.create_run(exp_id, run_name=f"study:{study}", tags=tags)
    RunLogger(c, run.info.run_id).log_params(params)
    return {"uri": uri, "experiment": experiment, "experiment_id": exp_id,
            "parent_run_id": run.info.run_id}


def finish_parent_run(uri: str, parent_run_id: str, files: list[Path]) -> None:
    """Attach the study's report to the parent run and close it as FINISHED."""
    c = client(uri)
    try:
        c.get_run(parent_run_id)
    except Exception as exc:
        raise MotifpipeError(
            f"parent MLflow run {parent_run_id} not found in {uri} "
            f"(was the store deleted? remove results/<study>/tracking.json): {exc}"
        ) from None
    for f in map(Path, files):
        c.log_artifact(parent_run_id, str(f), "report/figures" if f.suffix == ".png" else "report")
    c.set_terminated(parent_run_id, status="FINISHED")
