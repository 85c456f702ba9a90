"""The pipeline's stages as functions of file paths: the I/O edge of each module.

Each ``run_*`` reads its inputs, calls the pure modules, logs one MLflow run and
writes its outputs atomically at the end, so a failed job leaves no output and a
FAILED run. The CLI (``python -m motifpipe <stage>``) maps arguments onto these.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from motifpipe.errors import MotifpipeError
from motifpipe.io import atomic_path, read_json, write_json

log = logging.getLogger("motifpipe")


def _job_tags(rule: str, study: str, **wildcards) -> dict:
    key = ":".join([rule, study, *(f"{k}={v}" for k, v in sorted(wildcards.items()))])
    return {"rule": rule, "study": study, "job_key": key,
            "wildcards": json.dumps(wildcards, sort_keys=True), **wildcards}


def _run(tracking: dict, run_name: str, tags: dict):
    from motifpipe.tracking import job_run

    return job_run(tracking["uri"], tracking["experiment"], run_name, tags,
                   tracking.get("artifacts"), tracking.get("parent_run_id"))


def run_init_tracking(config: dict, out: Path) -> None:
    """Create the store, the experiment and the study's parent run; write their ids."""
    from motifpipe.config import experiment_name
    from motifpipe.tracking import start_parent_run

    t = config["tracking"]
    ids = start_parent_run(t["uri"], experiment_name(config), t["artifacts"],
                           config["study"], config)
    write_json(out, {**ids, "artifacts": t["artifacts"], "study": config["study"]})


def run_generate(name: str, task: dict, n: int, seed: int, val: float, test: float,
                 out: Path) -> None:
    """Draw one data set; no MLflow run (generation is cheap and fully determined)."""
    from motifpipe import data

    task = data.check_task(name, task)
    ds = data.generate(task, n=n, seed=seed, val=val, test=test)
    data.save_dataset(ds, out)
    log.info("generate: %s n=%d seed=%d D=%d -> %s", name, n, seed, ds.X.shape[1], out)


def _kernel_metrics(model, ds) -> dict:
    out = {}
    for part in ("val", "test"):
        X, y, f = ds.part(part)
        pred = model.predict(X)
        out[f"{part}_mse"] = float(np.mean((pred - y) ** 2))
        if part == "test" and f is not None:
            out["excess_risk"] = float(np.mean((pred - f) ** 2))
    return out


def run_fit_baseline(data_path: Path, cfg: dict, tracking_path: Path, wc: dict,
                     out_model: Path, out_json: Path) -> None:
    """Fit the convex baseline (the ``kernel`` arm) and log it."""
    from motifpipe import baselines, data

    tracking = read_json(tracking_path)
    ds = data.load_dataset(data_path)
    tags = _job_tags("fit_baseline", tracking["study"], arm="kernel", **wc)
    with _run(tracking, f"kernel {wc['task']} n={wc['n']} seed={wc['seed']}", tags) as run:
        run.log_params({"baseline": cfg, "data": ds.meta})
        X, y, _ = ds.part("train")
        Xv, yv, _ = ds.part("val")
        model = baselines.fit_baseline(X, y, Xv, yv, cfg, seed=wc["seed"])
        metrics = _kernel_metrics(model, ds)
        info = model.info
        run.log_metrics([{"epoch": 0, **metrics, "fit_time_s": info["fit_time_s"],
                          "gamma": model.gamma, "lam": info.get("lam", np.nan),
                          "selection_score": info.get("score", np.nan)}])
        run.set_tags({"solver": info.get("solver", cfg.get("kind", ""))})
        with tempfile.TemporaryDirectory() as tmp:
            selection = Path(tmp) / "selection.json"
            selection.write_text(json.dumps(info.get("curve", []), indent=1, default=str))
            run.log_artifact(selection)
        baselines.save_model(model, out_model)
        result = {**wc, "study": tracking["study"], "arm": "kernel", **metrics,
                  "n_train": int(len(y)), "dim": int(X.shape[1]),
                  "wall_time_s": info["fit_time_s"], "epochs": 0, "best_epoch": 0,
                  "n_params": int(np.size(model.coef)) + 1, "mlflow_run_id": run.run_id,
                  "gamma": model.gamma, "lam": info.get("lam")}
        write_json(out_json, result)
        log.info("fit_baseline: %s gamma=%.4g lam=%.3g in %.2f s; val MSE %.4g, test MSE %.4g;"
                 " MLflow run %s", info.get("solver"), model.gamma, info.get("lam", np.nan),
                 info["fit_time_s"], metrics["val_mse"], metrics["test_mse"], run.run_id)


def run_transfer(model_path: Path, data_path: Path, cfg: dict, tracking_path: Path,
                 wc: dict, out_net: Path, out_json: Path) -> None:
    """Transfer the baseline into a network and check its fidelity before training."""
    from motifpipe import baselines, data, transfer

    tracking = read_json(tracking_path)
    tags = _job_tags("transfer", tracking["study"], arm="mimicry", **wc)
    with _run(tracking, f"transfer {wc['task']} n={wc['n']} seed={wc['seed']}", tags) as run:
        run.log_params({"transfer": cfg})
        model = baselines.load_model(model_path)
        ds = data.load_dataset(data_path)
        domain = (ds.X.min(axis=0), ds.X.max(axis=0))  # every split, for the relu bound
        net, fid64, fid32, transfer_s = transfer.measured_transfer(
            model, cfg, ds.part("val")[0], domain)
        fid = {f"fidelity_{k}": v for k, v in fid64.items()}
        fid.update({f"fidelity32_{k}": v for k, v in fid32.items()})
        arch = transfer.architecture(net)
        run.log_metrics([{"epoch": 0, **fid, "transfer_s": transfer_s,
                          "n_params": arch["n_params"]}])
        run.set_tags({f"arch.{k}": v for k, v in arch.items()})
        transfer.check_fidelity(cfg, fid64, fid32)
        transfer.save_network(net, out_net, {"transfer_s": transfer_s})
        write_json(out_json, {**wc, **fid, "transfer_s": transfer_s, "architecture": arch,
                              "mlflow_run_id": run.run_id})
        log.info("transfer %s: %d parameters, fidelity max abs %.2e, max rel %.2e (float64),"
                 " max rel %.2e (float32); MLflow run %s", cfg["kind"], arch["n_params"],
                 fid64["max_abs"], fid64["max_rel"], fid32["max_rel"], run.run_id)


def _initial_net(arm: str, ds, model, net_path: Path | None, nets: dict, seed: int):
    """The starting network of an arm and the seconds charged before training."""
    from motifpipe import transfer

    X, _, _ = ds.part("train")
    if arm == "mimicry":
        net, meta = transfer.load_network(net_path)
        return net, model.info["fit_time_s"] + meta.get("transfer_s", 0.0)
    if arm == "scratch":  # the transferred architecture, randomly initialised
        net, _ = transfer.load_network(net_path)
        return transfer.reinitialise(net, X, seed), 0.0
    import torch

    torch.manual_seed(seed)
    if arm == "mlp":
        return transfer.MLP(X.shape[1], **nets.get("mlp", {})), 0.0
    if arm == "deepsets":
        params = ds.meta.get("params", {})
        if ds.meta.get("generator") != "invariant":
            raise MotifpipeError(f"arm deepsets needs set-valued inputs (generator invariant), "
                                 f"not {ds.meta.get('generator')!r}")
        return transfer.DeepSets(params["m"], params["k"], **nets.get("deepsets", {})), 0.0
    raise MotifpipeError(f"unknown arm {arm!r}; expected mimicry, scratch, mlp or deepsets")


def run_train(arms: list[str], data_path: Path, baseline_path: Path, net_path: Path | None,
              cfgs: dict[str, dict], nets: dict, tracking_path: Path, wc: dict,
              threads: int, out_dir: Path) -> None:
    """Retrain arms one after the other in this process, one MLflow run each.

    Writes ``out_dir/<arm>.safetensors``, ``.curve.csv`` and ``.json`` per arm.
    ``nets`` holds the ``mlp`` and ``deepsets`` config sections (architectures).
    Several arms per process share the ~6 s of imports a training job pays.
    """
    import torch

    from motifpipe import baselines, data

    torch.set_num_threads(max(1, threads))
    missing = [arm for arm in arms if arm not in cfgs]
    if missing:
        raise MotifpipeError(f"train --params has no settings for arm {missing[0]!r}")
    tracking = read_json(tracking_path)
    ds = data.load_dataset(data_path)
    model = baselines.load_model(baseline_path)
    for arm in arms:
        _train_one(arm, ds, model, net_path, cfgs[arm], nets, tracking, wc, Path(out_dir))


def _train_one(arm, ds, model, net_path, cfg, nets, tracking, wc, out_dir: Path) -> None:
    import pandas as pd

    from motifpipe import train, transfer

    out_net, out_curve = out_dir / f"{arm}.safetensors", out_dir / f"{arm}.curve.csv"
    tags = _job_tags("train", tracking["study"], arm=arm, **wc)
    with _run(tracking, f"{arm} {wc['task']} n={wc['n']} seed={wc['seed']}", tags) as run:
        run.log_params({"train": cfg, "arch": nets.get(arm, {}), "arm": arm})
        net, offset = _initial_net(arm, ds, model, net_path, nets, wc["seed"])
        lam = model.info.get("lam", 0.0) or 0.0
        res = train.train_arm(net, ds, cfg, wc["seed"], transferred=arm == "mimicry",
                              penalty=lam if arm in ("mimicry", "scratch") else 0.0,
                              time_offset_s=offset, flush=run.log_metrics)
        run.log_metrics(res["unflushed"])
        run.log_metrics([{"epoch": 0, "lr_chosen": res["lr"],
                          "lr_search_s": res.get("search_s", 0.0)}])
        arch = transfer.architecture(res["net"])
        run.set_tags({"precision": res["precision"], "device": res["device"],
                      "arch.n_params": arch["n_params"]})
        curve = pd.DataFrame(res["curve"]).assign(arm=arm, **wc)
        with atomic_path(out_curve) as tmp_curve:
            curve.to_csv(tmp_curve, index=False)
        transfer.save_network(res["net"], out_net, {"arm": arm})
        # Logged under their final names; if logging fails, Snakemake removes the outputs.
        run.log_artifact(out_curve, "curve")
        run.log_artifact(out_net, "model")
        keys = ("val_mse", "test_mse", "excess_risk", "wall_time_s", "epochs", "best_epoch",
                "lr")
        write_json(out_dir / f"{arm}.json",
                   {**wc, "study": tracking["study"], "arm": arm,
                    **{k: res[k] for k in keys}, "n_params": arch["n_params"],
                    "n_train": int(len(ds.part("train")[1])), "dim": int(ds.X.shape[1]),
                    "curve": str(out_curve), "mlflow_run_id": run.run_id})
        log.info("train %s: %d epochs (best %d) in %.1f s on %s/%s; val MSE %.4g, test MSE"
                 " %.4g; MLflow run %s", arm, res["epochs"], res["best_epoch"],
                 res["wall_time_s"], res["device"], res["precision"], res["val_mse"],
                 res["test_mse"], run.run_id)


def run_evaluate(result_paths: list[Path], out: Path, config: dict | None = None) -> None:
    """Join per-job results into ``summary.csv``; ``config`` adds family and swept value."""
    import pandas as pd

    from motifpipe import evaluate
    from motifpipe.config import expand_tasks

    results = [read_json(p) for p in result_paths]
    curves = {r["curve"]: pd.read_csv(r["curve"]) for r in results if r.get("curve")}
    tasks = expand_tasks(config) if config else None
    table = evaluate.summary(results, curves, tasks)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)


def run_report(summary_path: Path, curve_paths: list[Path], tracking_path: Path,
               config: dict, heatmap_dirs: list[Path], out_html: Path, out_slopes: Path,
               fig_dir: Path) -> None:
    """Draw the study's figures, write the HTML and the fitted rates, attach to the parent run."""
    import pandas as pd

    from motifpipe import report
    from motifpipe.config import report_figures
    from motifpipe.tracking import finish_parent_run

    summary = pd.read_csv(summary_path, keep_default_na=True)
    curves = (pd.concat([pd.read_csv(p) for p in curve_paths], ignore_index=True)
              if curve_paths else pd.DataFrame())
    panels = [_heatmap_panel(config, Path(d)) for d in heatmap_dirs]
    figures = report.draw_figures(summary, curves, fig_dir, report_figures(config), config,
                                  panels)
    slopes = report.rate_slopes(summary, config)
    tracking = read_json(tracking_path)
    html = report.render_html(config, summary, figures, tracking.get("parent_run_id"), slopes)
    with atomic_path(out_slopes) as tmp:
        slopes.to_csv(tmp, index=False)
    with atomic_path(out_html) as tmp:
        tmp.write_text(html)
    finish_parent_run(tracking["uri"], tracking["parent_run_id"],
                      [out_html, out_slopes, *figures.values()])


HEATMAP_RESOLUTION = 120


def _data_of(job_dir: Path, spec: dict) -> Path:
    """``results/<study>/<task>/n<n>/seed<s>/`` -> the data set that job used (maybe shared)."""
    return job_dir.parents[2] / spec["data"] / job_dir.parent.name / job_dir.name / (
        "data.safetensors")


def _heatmap_panel(config: dict, job_dir: Path) -> dict:
    """Truth, kernel fit and the mimicry and mlp fits (if trained) of one 2-D job on a grid.

    ``job_dir`` is ``results/<study>/<task>/n<n>/seed<seed>``; returns the dict
    :func:`motifpipe.report.draw_figures` takes: arrays (r, r) in meshgrid 'xy' layout.
    """
    import torch

    from motifpipe import baselines, data, transfer
    from motifpipe.config import expand_tasks

    task = job_dir.parent.parent.name
    spec = expand_tasks(config).get(task)
    if spec is None:
        raise MotifpipeError(f"--heatmap-dir {job_dir}: task {task!r} is not in the config")
    grid = data.truth_grid(spec["task"], 0, HEATMAP_RESOLUTION)
    if grid is None:
        raise MotifpipeError(f"--heatmap-dir {job_dir}: task {task!r} has no 2-D grid")
    xx, yy, truth = grid
    points = np.column_stack([xx.ravel(), yy.ravel()])
    kernel = baselines.load_model(job_dir / "baseline.safetensors").predict(points)
    panel = {"task": task, "extent": (float(xx.min()), float(xx.max())), "truth": truth,
             "kernel": kernel.reshape(xx.shape),
             "X_train": data.load_dataset(_data_of(job_dir, spec)).part("train")[0]}
    for arm in ("mimicry", "mlp"):  # the trained networks worth drawing beside the kernel
        net_path = job_dir / "train" / f"{arm}.safetensors"
        if net_path.exists():
            net, _ = transfer.load_network(net_path)
            with torch.no_grad():
                panel[arm] = net(torch.as_tensor(points)).numpy().reshape(xx.shape)
    return panel
