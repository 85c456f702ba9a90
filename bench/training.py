"""Lightning's training loop against a plain torch loop, same model, same in-memory data.

Both loops run the same MLP (or RBF net) on the same tensors with the same batch size
and optimiser; the script prints median seconds per epoch for each and their ratio
(target: Lightning / plain <= 1.3). Measured side by side, alternating, in one process.

    python bench/training.py [--n 10000] [--epochs 5] [--repeat 3] [--net mlp|rbf]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.nn import functional as F

from motifpipe import train, transfer
from motifpipe.data import Dataset


def dataset(n: int, dim: int = 2, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.random((n, dim))
    f = np.sin(6 * X[:, 0]) + (X[:, 1] > 0.5)
    split = np.zeros(n, np.int8)
    split[int(0.6 * n):int(0.8 * n)], split[int(0.8 * n):] = 1, 2
    return Dataset(X, f + 0.1 * rng.normal(size=n), f, split, {})


def make_net(kind: str, X: np.ndarray):
    torch.manual_seed(0)
    if kind == "mlp":
        return transfer.MLP(X.shape[1], 3, 128)
    return transfer.random_rbf(X[:300], 300, seed=0).float()


def plain_epoch_time(net, ds: Dataset, epochs: int, batch: int) -> tuple[float, list[float]]:
    """Seconds per epoch of a hand-written loop with the same per-epoch validation.

    One optimiser step per mini-batch of ``batch`` rows, in the order Lightning's run
    uses (same seed, same permutation per epoch); each epoch's rows are gathered once
    and sliced, the cheapest way to feed a plain loop. Also returns val MSE per epoch.
    """
    tr, val, _ = train.to_splits(ds, torch.device("cpu"), torch.float32)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    epoch = train.InMemoryBatches(tr, batch, seed=0, steps_per_block=len(tr.y))
    curve = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        for xs, ys in epoch:  # one block: the whole shuffled epoch
            for i in range(0, len(ys), batch):
                loss = F.mse_loss(net(xs[i : i + batch]), ys[i : i + batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            curve.append(F.mse_loss(net(val.X), val.y).item())
    return (time.perf_counter() - t0) / epochs, curve


def lightning_epoch_time(net, ds: Dataset, epochs: int, batch: int) -> tuple[float, list[float]]:
    """Seconds per epoch of :func:`motifpipe.train.train_arm` (same maths as the plain loop:
    Adam at 1e-3, no warm-up, no clipping) and its val MSE per epoch."""
    cfg = {"max_epochs": epochs, "batch_size": batch, "warmup_epochs": 0, "grad_clip": 0,
           "patience": 10**6, "accelerator": "cpu", "precision": "32-true"}
    res = train.train_arm(net, ds, cfg, seed=0, transferred=False)
    times = [r["time_s"] for r in res["curve"]]
    return (times[-1] - times[0]) / epochs, [r["val_mse"] for r in res["curve"][1:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--net", choices=["mlp", "rbf"], default="mlp")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = dataset(args.n)
    X = ds.part("train")[0]
    plain, light, gap = [], [], 0.0
    for _ in range(args.repeat):  # alternate so that machine noise hits both alike
        t, ref = plain_epoch_time(make_net(args.net, X), ds, args.epochs, args.batch)
        plain.append(t)
        t, got = lightning_epoch_time(make_net(args.net, X), ds, args.epochs, args.batch)
        light.append(t)
        gap = max(gap, *(abs(a - b) / b for a, b in zip(got, ref, strict=True)))
    p, lt = statistics.median(plain), statistics.median(light)
    print(f"net={args.net} n={args.n} batch={args.batch} epochs={args.epochs} "
          f"repeat={args.repeat} threads={args.threads}")
    for label, med, runs in (("plain torch loop", p, plain), ("Lightning", lt, light)):
        each = ", ".join(f"{v * 1000:.0f}" for v in runs)
        print(f"{label:17s}: {med * 1000:8.1f} ms/epoch (median; runs {each})")
    print(f"same updates: per-epoch val MSE differs by at most {gap:.1e} (relative)")
    print(f"ratio Lightning/plain = {lt / p:.2f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
