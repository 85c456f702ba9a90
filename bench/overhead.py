"""Per-job fixed cost of a pipeline job against the compute inside it.

Each training job is a fresh `python -m motifpipe train` process: it pays the
interpreter start, the imports (torch, Lightning, MLflow) and the MLflow run
creation before any training. This script measures those pieces side by side in
fresh subprocesses (median of --repeat runs) and prints them as fractions of a
measured job's wall time.

    python bench/overhead.py [--repeat 5] [--summary results/smoke/summary.csv]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

SNIPPETS = {
    "interpreter": "pass",
    "import torch": "import torch",
    "import pytorch_lightning": "import pytorch_lightning",
    "import mlflow": "import mlflow",
    "import motifpipe.train (all of the above)": "import motifpipe.train, mlflow.tracking",
}

RUN_CREATION = """
import time
import mlflow.tracking, mlflow.entities  # import cost is measured above, not here
from motifpipe import tracking
t0 = time.perf_counter()
with tracking.job_run({uri!r}, "bench", "r", {{"job_key": "k{i}"}}) as run:
    run.log_metrics([{{"epoch": e, "x": 1.0}} for e in range(100)])
print(time.perf_counter() - t0)
"""


def wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--summary", help="a summary.csv whose train jobs to compare against")
    args = ap.parse_args()

    rows = {name: statistics.median(wall(code) for _ in range(args.repeat))
            for name, code in SNIPPETS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        times = []
        for i in range(args.repeat + 1):
            out = subprocess.run([sys.executable, "-c", RUN_CREATION.format(uri=uri, i=i)],
                                 check=True, capture_output=True, text=True)
            times.append(float(out.stdout.split()[-1]))
        rows["MLflow run: create, 100 metrics, close (store exists)"] = statistics.median(
            times[1:])
        rows["MLflow run on a fresh store (schema creation)"] = times[0]

    print(f"| piece | median s (n={args.repeat}) |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.2f} |")
    fixed = rows["import motifpipe.train (all of the above)"] + rows[
        "MLflow run: create, 100 metrics, close (store exists)"]
    print(f"\nfixed cost per training job ~ {fixed:.2f} s")
    if args.summary:
        import pandas as pd

        df = pd.read_csv(args.summary)
        trained = df[df["arm"] != "kernel"]
        for _, r in trained.iterrows():
            ratio = fixed / (fixed + r["wall_time_s"])
            print(f"{r['task']} n={r['n']} seed={r['seed']} {r['arm']:8s}: "
                  f"compute {r['wall_time_s']:.2f} s, fixed/total = {ratio:.0%}")


if __name__ == "__main__":
    main()
