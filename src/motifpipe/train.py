"""Retraining with PyTorch Lightning: the ``mimicry``, ``scratch`` and ``mlp`` arms.

All data lives in memory on the training device and is batched by
:class:`InMemoryBatches` (no DataLoader workers, no collation cost). Per-epoch
metrics are computed on full validation and test tensors by :class:`EpochMetrics`;
the clock it reports excludes the test-set evaluation (monitoring a real user would
not pay) but includes everything else. For ``mimicry`` the clock starts at the
baseline fit: the caller passes the fit and transfer time as ``time_offset_s``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

from motifpipe.errors import MotifpipeError, TrainingDiverged
from motifpipe.transfer import RBFNet

for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def _quiet() -> None:
    """Warnings Lightning raises on every run that say nothing about this one."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # Lightning suggests srun whenever it finds SLURM's client; jobs here are single-task.
    warnings.filterwarnings("ignore", message=".*`srun` command is available.*")


# Mirrors the `train:` section of workflow/schemas/config.schema.yaml (a test keeps
# them equal) so that the library and a hand-run CLI work without the workflow.
DEFAULTS = {
    "max_epochs": 100, "max_time_s": 600, "batch_size": 64, "lr": 1e-3, "transfer_lr": 1e-4,
    "warmup_epochs": 2, "weight_decay": 0, "grad_clip": 1.0, "patience": 20,
    "precision": "auto", "accelerator": "auto", "protocol": "adam", "freeze_epochs": 5,
    "lbfgs_max_iter": 20, "lr_search": [], "lr_search_epochs": 3,
}


@dataclass
class Split:
    """In-memory tensors of one data split: X (n, D), y (n,), f (n,) or None."""

    X: torch.Tensor
    y: torch.Tensor
    f: torch.Tensor | None = None


class InMemoryBatches:
    """Shuffled mini-batches of device tensors, reproducible from ``seed``.

    Iterating yields ``(x, y)`` blocks of ``steps_per_block`` consecutive mini-batches
    of ``batch_size`` rows (``x`` (rows, D), ``y`` (rows,); the last block and the last
    mini-batch may be shorter). Each pass draws a new permutation from a generator
    seeded once, so epoch k's order depends only on the seed and k, and the
    mini-batches (rows ``[i, i + batch_size)`` of the permutation) do not depend on
    ``steps_per_block``: a block only changes how many of them one Lightning step carries.
    """

    def __init__(self, split: Split, batch_size: int, seed: int, steps_per_block: int = 1):
        self.split, self.batch_size = split, batch_size
        self.steps_per_block = max(1, steps_per_block)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def steps(self) -> int:
        """Mini-batches (optimiser steps) per epoch."""
        return math.ceil(len(self.split.y) / self.batch_size)

    def __len__(self) -> int:
        """Blocks per epoch: the batches Lightning sees."""
        return math.ceil(self.steps / self.steps_per_block)

    def __iter__(self):
        n = len(self.split.y)
        order = torch.randperm(n, generator=self.generator).to(self.split.y.device)
        rows = self.batch_size * self.steps_per_block
        for i in range(0, n, rows):
            idx = order[i : i + rows]
            yield self.split.X[idx], self.split.y[idx]


# Mini-batches per Lightning step. Lightning's loop costs ~0.3 ms per step on CPU
# (hooks, progress tracking, batch transfer, timer), a third of a whole optimiser step
# of a small MLP at batch 64; carrying 16 mini-batches per step makes it ~0.02 ms per
# optimiser step. The updates are the same: see InMemoryBatches and Regressor.
STEPS_PER_BLOCK = 16


class Regressor(pl.LightningModule):
    """Least squares on ``net`` (plus ``penalty * |w|^2`` for RBF nets) under a protocol.

    Protocols (``cfg["protocol"]``):
    - ``adam``: Adam with linear warm-up; transferred motifs (RBF centres and width) at
      ``transfer_lr``, the head at ``lr``; a transferred ReLU net wholly at ``transfer_lr``.
    - ``freeze_then_unfreeze``: as ``adam``, but a transferred net trains only its head
      (RBF: ``w`` and bias; otherwise the last Linear layer) for ``freeze_epochs``.
    - ``lbfgs``: full-batch L-BFGS with a strong-Wolfe line search (small n).
    """

    def __init__(self, net: nn.Module, cfg: dict, transferred: bool, penalty: float,
                 steps_per_epoch: int, batch_size: int | None = None):
        super().__init__()
        # Manual optimisation: with Lightning's automatic loop (closure, hooks per step)
        # an epoch cost 1.67x a plain torch loop on a small MLP at batch 64, manual
        # 1.41x, manual with STEPS_PER_BLOCK mini-batches per Lightning step 1.17x, and
        # that with a direct backward (see training_step) 1.06-1.09x (bench/training.py).
        self.automatic_optimization = False
        self.net, self.cfg = net, cfg
        self.transferred, self.penalty = transferred, penalty
        self.steps_per_epoch = steps_per_epoch
        # Rows per optimiser step; a training batch (block) is cut into such mini-batches.
        self.batch_size = batch_size
        self.warmup_steps = max(1, cfg["warmup_epochs"] * steps_per_epoch)
        # A plain dict: nn.Module.__setattr__ on every step costs measurable time.
        self.epoch_loss = {"sum": 0.0, "count": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(self.net(x).float(), y.float())
        if self.penalty and isinstance(self.net, RBFNet):
            loss = loss + self.penalty * self.net.rkhs_norm2().float()
        return loss

    def training_step(self, batch, batch_idx):
        """One optimiser step per mini-batch of the block ``batch`` (L-BFGS: one per block).

        Every step: zero grads, loss on ``batch_size`` consecutive rows of the block,
        backward, clip, Adam step, warm-up step: the same updates as one mini-batch
        per Lightning step. Lightning's hooks (``on_train_batch_*``) run per block.
        """
        x, y = batch
        opt = self.optimizers(use_pl_optimizer=False)
        if self.cfg["protocol"] == "lbfgs":
            def closure():
                opt.zero_grad(set_to_none=True)
                loss = self.loss(x, y)
                self.manual_backward(loss)
                return loss

            self._add_loss(opt.step(closure).detach(), 1)
            return
        sched = self.lr_schedulers()
        clip = self.cfg["grad_clip"]
        params = list(self.net.parameters())
        size = self.batch_size or len(y)
        # loss.backward(), not manual_backward: that adds four hook dispatches per call
        # (~0.08 ms) that no callback here uses, and no GradScaler needs it (16-mixed is
        # refused in train_arm).
        total = None
        for i in range(0, len(y), size):
            opt.zero_grad(set_to_none=True)
            loss = self.loss(x[i : i + size], y[i : i + size])
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            # The warm-up factor min(1, (s + 1) / warmup_steps) stays 1 once reached:
            # stepping the scheduler further would not change any learning rate.
            if sched.last_epoch < self.warmup_steps - 1:
                sched.step()
            total = loss.detach() if total is None else total + loss.detach()
        self._add_loss(total, math.ceil(len(y) / size))

    def _add_loss(self, total: torch.Tensor, count: int) -> None:
        self.epoch_loss["sum"] = self.epoch_loss["sum"] + total
        self.epoch_loss["count"] += count

    def on_train_epoch_start(self):
        if self.cfg["protocol"] == "freeze_then_unfreeze" and self.transferred:
            frozen = self.current_epoch < self.cfg["freeze_epochs"]
            head = set(map(id, self._head()))
            for p in self.net.parameters():
                p.requires_grad_(not frozen or id(p) in head)

    def configure_optimizers(self):
        if self.cfg["protocol"] == "lbfgs":
            return torch.optim.LBFGS(self.net.parameters(), lr=self.cfg["lr"],
                                     max_iter=self.cfg["lbfgs_max_iter"],
                                     line_search_fn="strong_wolfe")
        opt = torch.optim.Adam(self._param_groups(), weight_decay=self.cfg["weight_decay"])
        warmup = self.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _head(self) -> list[nn.Parameter]:
        if isinstance(self.net, RBFNet):
            return [self.net.w, self.net.bias]
        last = [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1]
        return list(last.parameters())

    def _param_groups(self) -> list[dict]:
        """Transferred motifs (centres, width) learn at ``transfer_lr``; the head at ``lr``."""
        lr = self.cfg["lr"]
        if not self.transferred:
            return [{"params": list(self.net.parameters()), "lr": lr}]
        if not isinstance(self.net, RBFNet):
            return [{"params": list(self.net.parameters()), "lr": self.cfg["transfer_lr"]}]
        motifs = [self.net.centers, self.net.log_gamma]
        return [{"params": motifs, "lr": self.cfg["transfer_lr"]},
                {"params": self._head(), "lr": lr}]

    def pop_train_loss(self) -> float:
        """Mean training loss of the epoch; one device sync per epoch, not per step."""
        value = float(self.epoch_loss["sum"]) / max(1, self.epoch_loss["count"])
        self.epoch_loss.update(sum=0.0, count=0)
        return value


class EpochMetrics(pl.Callback):
    """Per-epoch learning curve, best-validation snapshot and divergence check."""

    def __init__(self, val: Split, test: Split, time_offset_s: float, flush=None,
                 flush_every: int = 50):
        self.val, self.test, self.offset = val, test, time_offset_s
        self.rows: list[dict] = []
        self.best_val, self.best_state, self.best_epoch = math.inf, None, 0
        self.flush, self.flush_every, self._flushed = flush, flush_every, 0
        self.start = self.monitor_s = 0.0

    def on_fit_start(self, trainer, pl_module):
        self.start, self.monitor_s = time.perf_counter(), 0.0
        self._record(pl_module, epoch=0, train_loss=math.nan)

    def on_train_epoch_end(self, trainer, pl_module):
        loss = pl_module.pop_train_loss()
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training loss became {loss} at epoch {trainer.current_epoch + 1}; "
                "lower train.lr or train.transfer_lr, or set train.grad_clip"
            )
        row = self._record(pl_module, trainer.current_epoch + 1, loss)
        pl_module.log("val_mse", row["val_mse"], on_epoch=True, prog_bar=False)
        if self.flush and len(self.rows) - self._flushed >= self.flush_every:
            self.flush(self.rows[self._flushed :])
            self._flushed = len(self.rows)

    def _record(self, pl_module, epoch: int, train_loss: float) -> dict:
        elapsed = time.perf_counter() - self.start - self.monitor_s
        val_mse = _mse(pl_module, self.val.X, self.val.y)
        t0 = time.perf_counter()
        row = {"epoch": epoch, "time_s": self.offset + elapsed, "train_loss": train_loss,
               "val_mse": val_mse, **test_metrics(pl_module, self.test)}
        self.monitor_s += time.perf_counter() - t0
        self.rows.append(row)
        if val_mse < self.best_val:
            self.best_val, self.best_epoch = val_mse, epoch
            self.best_state = copy.deepcopy(pl_module.net.state_dict())
        return row

    def unflushed(self) -> list[dict]:
        return self.rows[self._flushed :]


@torch.no_grad()
def _mse(module: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    was_training = module.training
    module.eval()
    pred = module(X).float()
    module.train(was_training)
    return float(F.mse_loss(pred, y.float()))


def test_metrics(module: nn.Module, test: Split) -> dict:
    """Test MSE against noisy targets and excess risk against the noise-free f*."""
    out = {"test_mse": _mse(module, test.X, test.y)}
    if test.f is not None:
        out["excess_risk"] = _mse(module, test.X, test.f)
    return out


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on a GPU, 32-true on CPU."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("auto", "gpu") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu else "32-true"


def make_trainer(cfg: dict, callbacks: list, precision: str) -> pl.Trainer:
    """A quiet, deterministic (on CPU) Trainer; Lightning's SLURM auto-requeue is off."""
    from pytorch_lightning.callbacks import EarlyStopping
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    early = EarlyStopping("val_mse", patience=cfg["patience"], check_on_train_epoch_end=True)
    return pl.Trainer(
        accelerator=cfg["accelerator"], devices=1, precision=precision,
        max_epochs=cfg["max_epochs"], max_time={"seconds": cfg["max_time_s"]},
        callbacks=[*callbacks, early],  # gradients are clipped in Regressor.training_step
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        deterministic=not torch.cuda.is_available(), plugins=plugins,
    )


def to_splits(data, device: torch.device, dtype: torch.dtype) -> tuple[Split, Split, Split]:
    """Train, val and test tensors of a :class:`motifpipe.data.Dataset` on ``device``."""
    def split(name: str) -> Split:
        X, y, f = data.part(name)
        t = lambda a: None if a is None else torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        return Split(t(X), t(y), t(f))

    return split("train"), split("val"), split("test")


PROTOCOLS = ("adam", "freeze_then_unfreeze", "lbfgs")


def train_arm(net: nn.Module, data, cfg: dict, seed: int, *, transferred: bool,
              penalty: float = 0.0, time_offset_s: float = 0.0, flush=None) -> dict:
    """Train ``net`` on ``data`` and return its learning curve and final metrics.

    The returned net carries the weights of the best validation epoch (epoch 0 is
    the starting network, so a transferred model is never returned worse on val).
    With ``cfg["lr_search"]``, each candidate learning rate first trains a copy of
    ``net`` for ``lr_search_epochs``; the best on validation is kept and the time
    spent searching is added to the arm's clock.
    """
    cfg = {**DEFAULTS, **cfg}
    if cfg["protocol"] not in PROTOCOLS:
        raise MotifpipeError(f"train.protocol {cfg['protocol']!r} is not one of {PROTOCOLS}")
    if cfg["precision"] == "16-mixed":  # float16 needs a GradScaler the manual loop lacks
        raise MotifpipeError("train.precision '16-mixed' is not supported (no loss scaling "
                             "in the manual optimisation loop); use bf16-mixed")
    search = {}
    if cfg["lr_search"]:
        cfg, search = _search_lr(net, data, cfg, seed, transferred, penalty)
        time_offset_s += search["search_s"]
    result = _fit(net, data, cfg, seed, transferred, penalty, time_offset_s, flush)
    return result | search | {"lr": cfg["lr"]}


def _search_lr(net, data, cfg, seed, transferred, penalty) -> tuple[dict, dict]:
    """Short runs at each candidate ``lr`` (``transfer_lr`` keeps its ratio to ``lr``)."""
    t0 = time.perf_counter()
    scores = {}
    for lr in cfg["lr_search"]:
        trial = _scaled(cfg, lr) | {"max_epochs": cfg["lr_search_epochs"], "lr_search": []}
        res = _fit(copy.deepcopy(net), data, trial, seed, transferred, penalty, 0.0, None)
        scores[lr] = res["val_mse"]
    best = min(scores, key=scores.get)
    return _scaled(cfg, best), {"search_s": time.perf_counter() - t0, "lr_scores": scores}


def _scaled(cfg: dict, lr: float) -> dict:
    return cfg | {"lr": lr, "transfer_lr": cfg["transfer_lr"] * lr / cfg["lr"]}


def _fit(net, data, cfg, seed, transferred, penalty, time_offset_s, flush) -> dict:
    with warnings.catch_warnings():
        _quiet()
        return _fit_quietly(net, data, cfg, seed, transferred, penalty, time_offset_s, flush)


def _fit_quietly(net, data, cfg, seed, transferred, penalty, time_offset_s, flush) -> dict:
    pl.seed_everything(seed, workers=False, verbose=False)
    precision = resolve_precision(cfg["precision"], cfg["accelerator"])
    device = torch.device("cuda" if cfg["accelerator"] != "cpu" and torch.cuda.is_available()
                          else "cpu")
    dtype = torch.float64 if precision.startswith("64") else torch.float32
    net = net.to(dtype)
    train, val, test = to_splits(data, device, dtype)
    if len(train.y) == 0 or len(val.y) == 0:
        raise MotifpipeError("the data set has an empty train or validation split")
    batch_size = len(train.y) if cfg["protocol"] == "lbfgs" else cfg["batch_size"]
    batches = InMemoryBatches(train, batch_size, seed, STEPS_PER_BLOCK)
    module = Regressor(net, cfg, transferred, penalty, batches.steps, batch_size)
    metrics = EpochMetrics(val, test, time_offset_s, flush)
    trainer = make_trainer(cfg, [metrics], precision)
    try:
        trainer.fit(module, train_dataloaders=batches)
    except torch.OutOfMemoryError:
        raise MotifpipeError(
            f"out of device memory at train.batch_size={cfg['batch_size']}; lower it"
        ) from None
    net.load_state_dict(metrics.best_state)
    for p in net.parameters():
        p.requires_grad_(True)  # freeze_then_unfreeze may have stopped early, frozen
    best = metrics.rows[metrics.best_epoch]
    return {
        "net": net.cpu(), "curve": metrics.rows, "unflushed": metrics.unflushed(),
        "best_epoch": metrics.best_epoch, "epochs": trainer.current_epoch,
        "wall_time_s": metrics.rows[-1]["time_s"],
        "val_mse": best["val_mse"], "test_mse": best["test_mse"],
        "excess_risk": best.get("excess_risk", np.nan), "precision": precision,
        "device": str(device),
    }
