import copy
import math

import numpy as np
import pytest
import torch

from motifpipe import train, transfer
from motifpipe.data import Dataset
from motifpipe.errors import TrainingDiverged

CFG = {"max_epochs": 6, "batch_size": 32, "patience": 50, "accelerator": "cpu"}


def test_in_memory_batches_cover_every_row_once():
    split = train.Split(torch.arange(10.0)[:, None], torch.arange(10.0))
    batches = list(train.InMemoryBatches(split, 4, seed=0))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(10))


def test_mlp_training_is_deterministic_on_cpu(small_ds):
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        net = transfer.MLP(2, 2, 16)
        res = train.train_arm(net, small_ds, CFG, seed=0, transferred=False)
        states.append(res["net"].state_dict())
        assert res["epochs"] == 6 and len(res["curve"]) == 7  # epoch 0 + 6 epochs
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0)


def test_learning_curve_columns_and_clock(small_ds):
    net = transfer.MLP(2, 1, 8)
    res = train.train_arm(net, small_ds, CFG, seed=1, transferred=False, time_offset_s=5.0)
    times = [r["time_s"] for r in res["curve"]]
    assert times[0] >= 5.0 and times == sorted(times)
    assert {"train_loss", "val_mse", "test_mse", "excess_risk"} <= set(res["curve"][1])


def test_mimicry_never_returns_worse_than_the_transfer(small_ds, kernel_model):
    net = transfer.to_network(kernel_model)
    start = train.train_arm(net, small_ds, CFG | {"max_epochs": 1, "lr": 1.0}, seed=0,
                            transferred=True)
    # A deliberately huge learning rate may hurt training, but the best-validation
    # snapshot (epoch 0 is the transferred net) is what comes back.
    assert start["val_mse"] <= start["curve"][0]["val_mse"] + 1e-12


def test_krr_penalty_makes_the_transfer_a_stationary_point(small_ds, kernel_model):
    """With the baseline's own ridge penalty, the head's gradient vanishes at the transfer."""
    net = transfer.to_network(kernel_model)
    X, y, _ = small_ds.part("train")
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    loss = torch.mean((net(Xt) - yt) ** 2) + kernel_model.info["lam"] * net.rkhs_norm2()
    loss.backward()
    assert float(net.w.grad.abs().max()) < 1e-6 * (1 + float(net.w.detach().abs().max()))


def test_nan_loss_stops_with_a_clear_error(small_ds):
    y = small_ds.y.copy()
    y[small_ds.split == 0] = np.nan
    bad = Dataset(small_ds.X, y, small_ds.f, small_ds.split, small_ds.meta)
    with pytest.raises(TrainingDiverged, match="training loss became nan at epoch 1"):
        train.train_arm(transfer.MLP(2, 1, 8), bad, CFG, seed=0, transferred=False)


def test_precision_auto_is_32_on_cpu():
    assert train.resolve_precision("auto", "cpu") == "32-true"
    assert train.resolve_precision("64-true", "auto") == "64-true"


@pytest.mark.parametrize("protocol", ["freeze_then_unfreeze", "lbfgs"])
def test_protocols_run_and_do_not_regress_at_the_start(small_ds, kernel_model, protocol):
    net = transfer.to_network(kernel_model)
    cfg = CFG | {"protocol": protocol, "freeze_epochs": 2, "max_epochs": 4}
    res = train.train_arm(net, small_ds, cfg, seed=0, transferred=True,
                          penalty=kernel_model.info["lam"])
    curve = res["curve"]
    assert len(curve) == 5
    assert curve[1]["val_mse"] <= 1.05 * curve[0]["val_mse"]


def test_freeze_then_unfreeze_moves_only_the_head_at_first(small_ds, kernel_model):
    net = transfer.to_network(kernel_model)
    centers = net.centers.detach().clone()
    cfg = CFG | {"protocol": "freeze_then_unfreeze", "freeze_epochs": 5, "max_epochs": 2,
                 "patience": 1000}
    res = train.train_arm(net, small_ds, cfg, seed=0, transferred=True)
    trained = res["net"]
    torch.testing.assert_close(trained.centers.detach().double(), centers)
    assert all(p.requires_grad for p in trained.parameters())


def test_lr_search_is_charged_to_the_arm(small_ds):
    torch.manual_seed(0)
    cfg = CFG | {"lr_search": [1e-4, 1e-2], "lr_search_epochs": 2, "max_epochs": 2}
    res = train.train_arm(transfer.MLP(2, 1, 8), small_ds, cfg, seed=0, transferred=False)
    assert set(res["lr_scores"]) == {1e-4, 1e-2}
    assert res["lr"] == min(res["lr_scores"], key=res["lr_scores"].get)
    assert res["curve"][0]["time_s"] >= res["search_s"] > 0


def test_out_of_memory_names_the_batch_size(small_ds):
    from motifpipe.errors import MotifpipeError

    class Greedy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")

    msg = r"out of device memory at train.batch_size=32; lower it"
    with pytest.raises(MotifpipeError, match=msg):
        train.train_arm(Greedy(), small_ds, CFG, seed=0, transferred=False)


def test_unknown_protocol_is_named(small_ds):
    from motifpipe.errors import MotifpipeError

    with pytest.raises(MotifpipeError, match="train.protocol 'sgd'"):
        train.train_arm(transfer.MLP(2, 1, 4), small_ds, CFG | {"protocol": "sgd"}, seed=0,
                        transferred=False)
    with pytest.raises(MotifpipeError, match="train.precision '16-mixed'.*bf16-mixed"):
        train.train_arm(transfer.MLP(2, 1, 4), small_ds, CFG | {"precision": "16-mixed"},
                        seed=0, transferred=False)


def _reference_loop(net, ds, cfg, seed, penalty=0.0):
    """One optimiser step per mini-batch, written out by hand: the updates ``train_arm``
    must make. Returns the val MSE and the weights after each epoch."""
    tr, val, _ = train.to_splits(ds, torch.device("cpu"), torch.float32)
    net = net.float()
    n, size = len(tr.y), cfg["batch_size"]
    rbf = isinstance(net, transfer.RBFNet)
    groups = ([{"params": [net.centers, net.log_gamma], "lr": cfg["transfer_lr"]},
               {"params": [net.w, net.bias], "lr": cfg["lr"]}] if rbf
              else [{"params": list(net.parameters()), "lr": cfg["lr"]}])
    base = [g["lr"] for g in groups]
    opt = torch.optim.Adam(groups)
    warmup = max(1, cfg["warmup_epochs"] * math.ceil(n / size))
    generator, step, val_mse, states = torch.Generator().manual_seed(seed), 0, [], []
    for _ in range(cfg["max_epochs"]):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, size):
            idx = order[i : i + size]
            for g, lr in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr * min(1.0, (step + 1) / warmup)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(tr.X[idx]), tr.y[idx])
            if rbf and penalty:
                loss = loss + penalty * net.rkhs_norm2()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["grad_clip"])
            opt.step()
            step += 1
        with torch.no_grad():
            val_mse.append(float(torch.nn.functional.mse_loss(net(val.X), val.y)))
        states.append(copy.deepcopy(net.state_dict()))
    return val_mse, states


@pytest.mark.parametrize("arm", ["scratch_mlp", "transferred_rbf"])
def test_blocked_steps_make_the_same_updates_as_one_batch_per_step(
        small_ds, kernel_model, arm, monkeypatch):
    """Several mini-batches per Lightning step (train.STEPS_PER_BLOCK) must not change the
    maths: same permutation, batch boundaries, warm-up per optimiser step, clipping."""
    n_train = int((small_ds.split == 0).sum())
    # batch 7: 18 steps per epoch, so two blocks (16 + 2 mini-batches) and a last
    # mini-batch of one row; warm-up ends inside the run.
    cfg = train.DEFAULTS | CFG | {"batch_size": 7, "max_epochs": 3, "warmup_epochs": 1,
                                  "grad_clip": 0.5, "lr": 3e-3, "transfer_lr": 1e-3}
    steps = math.ceil(n_train / 7)
    assert steps > train.STEPS_PER_BLOCK and n_train % 7 == 1
    if arm == "scratch_mlp":
        torch.manual_seed(0)
        net, transferred, penalty = transfer.MLP(2, 2, 16), False, 0.0
    else:
        net, transferred, penalty = transfer.to_network(kernel_model), True, 1e-3
    ref_val, ref_states = _reference_loop(copy.deepcopy(net), small_ds, cfg, 3, penalty)

    calls = []
    adam_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step",
                        lambda self, *a, **k: calls.append(1) or adam_step(self, *a, **k))
    res = train.train_arm(net, small_ds, cfg, seed=3, transferred=transferred,
                          penalty=penalty)

    assert len(calls) == cfg["max_epochs"] * steps  # one optimiser step per mini-batch
    got_val = [row["val_mse"] for row in res["curve"][1:]]
    np.testing.assert_allclose(got_val, ref_val, rtol=1e-6, atol=0)
    best = ref_states[res["best_epoch"] - 1] if res["best_epoch"] else None
    assert best is not None  # the run improved on its start, so a trained state came back
    for key, value in res["net"].state_dict().items():
        torch.testing.assert_close(value, best[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("protocol", "batch_size", "steps"),
                         [("adam", 7, 18), ("adam", 500, 1), ("lbfgs", 7, 1)])
def test_optimiser_steps_per_epoch(small_ds, monkeypatch, protocol, batch_size, steps):
    """ceil(n_train / batch_size) steps per epoch; L-BFGS stays full batch, one per epoch."""
    assert math.ceil(int((small_ds.split == 0).sum()) / 7) == 18
    optimiser = torch.optim.LBFGS if protocol == "lbfgs" else torch.optim.Adam
    calls = []
    step = optimiser.step
    monkeypatch.setattr(optimiser, "step",
                        lambda self, *a, **k: calls.append(1) or step(self, *a, **k))
    cfg = CFG | {"protocol": protocol, "batch_size": batch_size, "max_epochs": 2,
                 "lbfgs_max_iter": 3}
    res = train.train_arm(transfer.MLP(2, 1, 8), small_ds, cfg, seed=0, transferred=False)
    assert res["epochs"] == 2 and len(calls) == 2 * steps
