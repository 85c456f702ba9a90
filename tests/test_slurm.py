"""Integration tests: the workflow through a real SLURM cluster (sbatch, squeue, srun).

Needs a running cluster, e.g. the one-node cluster of this repository:

    sudo scripts/slurm_cluster.sh install && sudo scripts/slurm_cluster.sh start
    pytest -m slurm tests/test_slurm.py

Skipped, with the reason, when `sinfo` is not on PATH or the controller does not
answer. See docs/slurm.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
# Lines the SLURM executor prints for every submission.
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")


def _cluster_or_skip() -> dict[str, int]:
    """CPUs and memory (MB) of the cluster's largest idle-able node, or skip."""
    for tool in ("sinfo", "sbatch", "squeue"):
        if shutil.which(tool) is None:
            pytest.skip(
                f"SLURM client '{tool}' not on PATH "
                "(install and start a cluster: scripts/slurm_cluster.sh install && start)"
            )
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T %c %m"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("SLURM controller did not answer `sinfo` within 20 s")
    if out.returncode != 0:
        pytest.skip(f"SLURM controller not responding: {out.stderr.strip() or out.stdout.strip()}")
    usable = []
    for line in out.stdout.splitlines():
        state, cpus, mem = line.split()
        if state.rstrip("*~#!%$@^-") in {"idle", "mixed", "allocated", "completing"}:
            usable.append({"cpus": int(cpus), "mem_mb": int(re.sub(r"\D", "", mem) or 0)})
    if not usable:
        pytest.skip(f"no SLURM node is up (sinfo: {out.stdout.strip()!r})")
    return max(usable, key=lambda n: (n["cpus"], n["mem_mb"]))


def _env() -> dict[str, str]:
    """The submitting environment; sbatch --export=ALL hands it to every job.

    The rules call `python -m motifpipe`, so this interpreter's bin directory must
    come first on PATH -- inside the SLURM job too.
    """
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("VIRTUAL_ENV", str(Path(sys.executable).parent.parent))
    # A SLURM_* variable from an enclosing allocation would leak into the jobs.
    for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
        del env[key]
    return env


def _snakemake(
    workdir: Path, *args: str, timeout: int
) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(PROFILE), *args]
    start = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
        tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs[-5:])
        pytest.fail(
            f"snakemake exited {proc.returncode} after {elapsed:.0f} s: {' '.join(cmd)}\n"
            f"--- stderr (tail)\n{proc.stderr[-6000:]}\n{tails}"
        )
    return proc, elapsed


def _submitted_ids(proc: subprocess.CompletedProcess) -> set[str]:
    return set(SUBMITTED.findall(proc.stdout + proc.stderr))


# --------------------------------------------------------------------------------------
# The profile and the cluster alone: three trivial rules, no motifpipe code.

PROBE_SNAKEFILE = r"""
rule all:
    input: "out/c.txt"

rule a:
    output: "out/a.txt"
    shell: "echo job=${{SLURM_JOB_ID:-}} host=$(hostname) python=$(command -v python) > {output}"

rule b:
    output: "out/b.txt"
    shell: "echo job=${{SLURM_JOB_ID:-}} host=$(hostname) python=$(command -v python) > {output}"

rule c:
    input: "out/a.txt", "out/b.txt"
    output: "out/c.txt"
    shell: "echo job=${{SLURM_JOB_ID:-}} host=$(hostname) python=$(command -v python) > {output}"
"""


def test_profile_submits_every_job_through_sbatch(tmp_path):
    _cluster_or_skip()
    (tmp_path / "Snakefile").write_text(PROBE_SNAKEFILE)
    proc, elapsed = _snakemake(tmp_path, timeout=300)

    submitted = _submitted_ids(proc)
    assert len(submitted) == 3, f"expected 3 sbatch submissions, saw {sorted(submitted)}"
    venv_python = str(Path(sys.executable).parent / "python")
    for name in "abc":
        fields = dict(
            kv.split("=", 1) for kv in (tmp_path / "out" / f"{name}.txt").read_text().split()
        )
        assert fields["job"] in submitted, f"rule {name} did not run in a submitted SLURM job"
        assert fields["python"] == venv_python, (
            f"rule {name}: `python` inside the SLURM job is {fields['python']!r}, not the "
            f"submitting environment's {venv_python!r} (sbatch --export=ALL lost PATH?)"
        )
    print(f"3 jobs (2 levels) round-tripped through sbatch in {elapsed:.1f} s")


# --------------------------------------------------------------------------------------
# The real workflow: config/smoke.yaml end to end through sbatch, tracked in MLflow.


def test_smoke_study_runs_as_slurm_jobs(tmp_path):
    node = _cluster_or_skip()
    for needed in ("Snakefile", "workflow", "config/smoke.yaml"):
        if not (REPO / needed).exists():
            pytest.skip(f"workflow not in the repository yet: {needed} missing")

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy2(REPO / "Snakefile", work / "Snakefile")
    ignore = shutil.ignore_patterns("__pycache__", ".snakemake")
    for tree in ("workflow", "config", "profiles"):
        if (REPO / tree).is_dir():
            shutil.copytree(REPO / tree, work / tree, ignore=ignore)

    # Absolute tracking URI: the jobs' working directory is set by sbatch -D, and a
    # store outside the work tree proves nothing is found by accident.
    # SQLite is fine here because every job runs on this one node (see docs/slurm.md).
    db = tmp_path / "mlflow.db"
    override = tmp_path / "tracking.yaml"
    override.write_text(
        f"tracking:\n  uri: sqlite:///{db}\n  artifacts: {tmp_path / 'mlartifacts'}\n"
    )

    proc, elapsed = _snakemake(
        work,
        "--configfile",
        "config/smoke.yaml",
        str(override),
        # a rule asking more threads than the node has would never be scheduled
        "--max-threads",
        str(node["cpus"]),
        timeout=1800,
    )
    print(f"smoke study through SLURM: {elapsed:.0f} s")

    assert (work / "results/smoke/summary.csv").stat().st_size > 0
    assert (work / "reports/smoke/report.html").stat().st_size > 0

    submitted = _submitted_ids(proc)
    assert submitted, "no job went through sbatch:\n" + proc.stderr[-3000:]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("motifpipe/smoke")
    assert exp is not None, "experiment 'motifpipe/smoke' not in the MLflow store"
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    assert runs, "no MLflow runs logged"

    missing = [
        (r.info.run_name, r.data.tags.get("rule"))
        for r in runs
        if not r.data.tags.get("slurm_job_id")
    ]
    assert not missing, f"runs without a slurm_job_id tag (run name, rule): {missing}"
    foreign = {
        r.info.run_name: r.data.tags["slurm_job_id"]
        for r in runs
        if r.data.tags["slurm_job_id"] not in submitted
    }
    assert not foreign, (
        f"runs tagged with SLURM job ids this workflow did not submit: {foreign}; "
        f"submitted: {sorted(submitted, key=int)}"
    )
