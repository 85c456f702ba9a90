import json
import os
import sys
from pathlib import Path

from motifpipe.config import (
    expand_tasks,
    experiment_name,
    heatmap_jobs,
    jobs,
    report_figures,
    train_config,
    validate,
)
from motifpipe.errors import MotifpipeError

try:
    _validated = validate(
        config, schema=Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
    )
except MotifpipeError as exc:
    sys.exit(f"motifpipe: {exc}")
config.clear()
config.update(_validated)
config["tracking"].setdefault("experiment", experiment_name(config))

STUDY = config["study"]
RESULTS = f"results/{STUDY}"
REPORTS = f"reports/{STUDY}"
JOB = f"{RESULTS}/{{task}}/n{{n}}/seed{{seed}}"
JOBS = jobs(config)
TASKS = expand_tasks(config)  # sweeps expanded, `scale` applied
FIGURES = report_figures(config)
HEATMAPS = heatmap_jobs(config)
ENV = "../envs/motifpipe.yaml"  # for --sdm conda; the Makefile uses .venv instead


wildcard_constraints:
    task="[A-Za-z0-9_-]+",
    n=r"\d+",
    seed=r"\d+",
    arm="mimicry|scratch|mlp|deepsets",


def as_json(value):
    """Params reach the CLI as one JSON argument (quoted with {params.x:q})."""
    return json.dumps(value, sort_keys=True)


def job_results(wildcards=None):
    """Every per-job result file the summary joins: the kernel arm plus each trained arm."""
    out = []
    for j in JOBS:
        prefix = JOB.format(**j)
        out.append(f"{prefix}/baseline.json")
        out += [f"{prefix}/train/{arm}.json" for arm in config["arms"]]
    return out


def curves(wildcards=None):
    return [
        f"{JOB.format(**j)}/train/{arm}.curve.csv"
        for j in JOBS
        for arm in config["arms"]
    ]


def data_path(task, n, seed):
    """A task's data set; tasks that only sweep baseline settings share their first task's."""
    return f"{RESULTS}/{TASKS[task]['data']}/n{n}/seed{seed}/data.safetensors"


def data_file(wildcards):
    return data_path(wildcards.task, wildcards.n, wildcards.seed)


def task_files(wildcards):
    """A `table` task reads a user's file: an input, so that editing it reruns the study."""
    params = TASKS[wildcards.task]["task"].get("params", {})
    return [params["path"]] if "path" in params else []


def arm_settings(arms):
    """The train settings of each arm, as the CLI's --params JSON."""
    return as_json({arm: train_config(config, arm) for arm in arms})


def wants_gpu(arms):
    return int(any(train_config(config, a)["accelerator"] == "gpu" for a in arms))


def heatmap_inputs(wildcards=None):
    """What the report draws on a 2-D grid: data, baseline, the mimicry and mlp nets."""
    nets = [arm for arm in ("mimicry", "mlp") if arm in config["arms"]]
    files = []
    for job in HEATMAPS:
        prefix = JOB.format(**job)
        files += [data_path(**job), f"{prefix}/baseline.safetensors"]
        files += [f"{prefix}/train/{arm}.safetensors" for arm in nets]
    return files


def network_flag(wildcards, input):
    return f"--network {input.network}" if "network" in input.keys() else ""


def train_inputs(wildcards):
    inputs = {
        "data": data_file(wildcards),
        "baseline": f"{JOB}/baseline.safetensors",
        "tracking": f"{RESULTS}/tracking.json",
    }
    arms = [wildcards.arm] if "arm" in wildcards.keys() else config["arms"]
    # mimicry starts from the transfer; scratch copies its architecture
    if {"mimicry", "scratch"} & set(arms):
        inputs["network"] = f"{JOB}/network.safetensors"
    return inputs
