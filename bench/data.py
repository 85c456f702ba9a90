"""Benchmark: generate + save a large ``nonsmooth`` task; time and peak memory.

Target (issue 3): n = 10^6, D = 10 in <= 10 s on 2 cores, with peak memory <= 2x the
bytes of the arrays written.

    .venv/bin/python bench/data.py                 # n = 10^6, D = 10, 2 cores
    .venv/bin/python bench/data.py --n 100000 --cores 1

Each measurement runs in a fresh subprocess pinned to ``--cores`` CPUs (BLAS threads
capped likewise), so the process high-water mark belongs to this run alone:

* time: wall seconds of ``generate`` and of ``save_dataset`` (best of ``--repeat``);
* rss: growth of ``ru_maxrss`` over the baseline taken after all imports;
* traced: ``tracemalloc`` peak of generate + save (numpy reports its buffers to it),
  measured in a separate run because tracing slows Python code down.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _data_module():
    try:
        return importlib.import_module("motifpipe.data")
    except ModuleNotFoundError:  # not installed: use the checkout
        sys.path.insert(0, str(SRC))
        return importlib.import_module("motifpipe.data")


def child(n: int, D: int, trace: bool) -> dict:
    """One measurement in this (fresh) process; returns figures as a dict."""
    data = _data_module()
    importlib.import_module("safetensors.numpy")  # import cost is not generation cost
    task = {"generator": "nonsmooth", "n": n, "noise": 0.1, "params": {"D": D}}
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    if trace:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.safetensors"
        t0 = time.perf_counter()
        ds = data.generate(task, n, seed=0, val=0.2, test=0.2)
        t1 = time.perf_counter()
        data.save_dataset(ds, path)
        t2 = time.perf_counter()
        file_bytes = path.stat().st_size
    traced = tracemalloc.get_traced_memory()[1] if trace else None
    arrays = ds.X.nbytes + ds.y.nbytes + ds.f.nbytes + ds.split.nbytes
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "generate_s": t1 - t0,
        "save_s": t2 - t1,
        "array_bytes": arrays,
        "file_bytes": file_bytes,
        "rss_growth_bytes": peak_rss - base_rss,
        "traced_peak_bytes": traced,
    }


def run_child(n: int, D: int, cores: int, trace: bool) -> dict:
    """Run :func:`child` in a subprocess pinned to ``cores`` CPUs."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(cores)
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    cmd = [sys.executable, __file__, "--child", "--n", str(n), "--D", str(D)]
    cmd += ["--trace"] if trace else []
    out = subprocess.run(
        cmd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--D", type=int, default=10)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.n, args.D, args.trace)))
        return 0
    runs = [run_child(args.n, args.D, args.cores, trace=False) for _ in range(args.repeat)]
    traced = run_child(args.n, args.D, args.cores, trace=True)
    report = summarise(args, runs, traced)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok = report["total_s"] <= 10 and report["rss_ratio"] <= 2 and report["traced_ratio"] <= 2
    return 0 if ok else 1


def summarise(args, runs: list[dict], traced: dict) -> dict:
    best = min(runs, key=lambda r: r["generate_s"] + r["save_s"])
    arrays = best["array_bytes"]
    return {
        "n": args.n,
        "D": args.D,
        "cores": args.cores,
        "repeat": args.repeat,
        "generate_s": best["generate_s"],
        "save_s": best["save_s"],
        "total_s": best["generate_s"] + best["save_s"],
        "total_s_all_runs": [r["generate_s"] + r["save_s"] for r in runs],
        "array_bytes": arrays,
        "file_bytes": best["file_bytes"],
        "rss_growth_bytes": max(r["rss_growth_bytes"] for r in runs),
        "rss_ratio": max(r["rss_growth_bytes"] for r in runs) / arrays,
        "traced_peak_bytes": traced["traced_peak_bytes"],
        "traced_ratio": traced["traced_peak_bytes"] / arrays,
    }


def print_report(r: dict) -> None:
    mb = 1e6
    print(f"nonsmooth n={r['n']:,} D={r['D']} on {r['cores']} core(s), best of {r['repeat']}")
    print(f"  generate      {r['generate_s']:7.2f} s")
    print(f"  save          {r['save_s']:7.2f} s")
    total_runs = ", ".join(f"{t:.2f}" for t in r["total_s_all_runs"])
    print(f"  total         {r['total_s']:7.2f} s   (target <= 10 s; runs: {total_runs})")
    print(f"  arrays        {r['array_bytes'] / mb:7.1f} MB  (file {r['file_bytes'] / mb:.1f} MB)")
    print(f"  peak RSS +    {r['rss_growth_bytes'] / mb:7.1f} MB  = {r['rss_ratio']:.2f}x arrays")
    print(
        f"  traced peak   {r['traced_peak_bytes'] / mb:7.1f} MB  = {r['traced_ratio']:.2f}x arrays"
    )
    print("  target: peak <= 2.00x arrays")


if __name__ == "__main__":
    sys.exit(main())
