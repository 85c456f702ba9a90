"""Shared fixtures: a small 2-D data set and a fitted kernel model built from it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


# Subprocesses (`python -m motifpipe` in Snakemake rules, snakemake itself) must find
# this interpreter's environment, also when pytest is called without activating it.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def task():
    from motifpipe import data

    return data.check_task("t", {"generator": "nonsmooth", "n": 240, "noise": 0.1,
                                 "params": {"D": 2, "pieces": 2}})


@pytest.fixture(scope="session")
def small_ds(task):
    from motifpipe import data

    return data.generate(task, n=240, seed=0, val=0.25, test=0.25)


@pytest.fixture(scope="session")
def kernel_model(small_ds):
    from motifpipe import baselines

    X, y, _ = small_ds.part("train")
    Xv, yv, _ = small_ds.part("val")
    return baselines.fit_baseline(X, y, Xv, yv, {"kind": "krr"}, seed=0)


def random_kernel_model(rng: np.random.Generator, m: int = 50, dim: int = 3):
    """A KernelModel with random centres, width and (large) coefficients."""
    from motifpipe.baselines import KernelModel

    return KernelModel("gaussian", float(rng.uniform(0.5, 20)), rng.random((m, dim)),
                       rng.normal(0, 300, m), float(rng.normal()))
