import json
import os
import sys
from pathlib import Path

from motifpipe.config import experiment_name, jobs, train_config, validate
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
ENV = "../envs/motifpipe.yaml"  # for --sdm conda; the Makefile uses .venv instead


wildcard_constraints:
    task="[A-Za-z0-9_-]+",
    n=r"\d+",
    seed=r"\d+",
    arm="mimicry|scratch|mlp",


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


def task_files(wildcards):
    """A `table` task reads a user's file: an input, so that editing it reruns the study."""
    params = config["tasks"][wildcards.task].get("params", {})
    return [params["path"]] if "path" in params else []


def arm_settings(arms):
    """The train settings of each arm, as the CLI's --params JSON."""
    return as_json({arm: train_config(config, arm) for arm in arms})


def wants_gpu(arms):
    return int(any(train_config(config, a)["accelerator"] == "gpu" for a in arms))


def network_flag(wildcards, input):
    return f"--network {input.network}" if "network" in input.keys() else ""


def train_inputs(wildcards):
    inputs = {
        "data": f"{JOB}/data.safetensors",
        "baseline": f"{JOB}/baseline.safetensors",
        "tracking": f"{RESULTS}/tracking.json",
    }
    arms = [wildcards.arm] if "arm" in wildcards.keys() else config["arms"]
    # mimicry starts from the transfer; scratch copies its architecture
    if {"mimicry", "scratch"} & set(arms):
        inputs["network"] = f"{JOB}/network.safetensors"
    return inputs
