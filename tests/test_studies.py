"""Properties the studies' configs promise, checked through the library path."""

import numpy as np
import pytest
import yaml

from conftest import ROOT
from motifpipe import baselines, config, data, train, transfer

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SPEED = config.validate(yaml.safe_load((ROOT / "config/studies/mimicry_speed.yaml").read_text()),
                        SCHEMA)


@pytest.mark.parametrize("task", sorted(SPEED["tasks"]))
def test_default_protocol_never_regresses_in_the_first_epoch(task):
    """After one epoch, mimicry's validation MSE is within 5 % of the transferred model's."""
    spec = config.expand_tasks(SPEED)[task]["task"]
    ds = data.generate(spec, n=config.sizes(spec)[0], seed=0, **SPEED["split"])
    X, y, _ = ds.part("train")
    Xv, yv, _ = ds.part("val")
    model = baselines.fit_baseline(X, y, Xv, yv, SPEED["baseline"], seed=0)
    cfg = config.train_config(SPEED, "mimicry") | {"max_epochs": 1, "accelerator": "cpu"}
    res = train.train_arm(transfer.to_network(model), ds, cfg, seed=0, transferred=True,
                          penalty=model.info["lam"])
    start, first = res["curve"][0]["val_mse"], res["curve"][1]["val_mse"]
    assert np.isclose(start, np.mean((model.predict(Xv) - yv) ** 2), rtol=1e-4)
    assert first <= 1.05 * start, f"{task}: epoch 1 val {first:.4g} vs transfer {start:.4g}"


STUDIES = ["mimicry_speed", "nonsmooth_rates", "intrinsic_dim", "invariance", "double_descent"]


def study(name: str, **overrides) -> dict:
    raw = yaml.safe_load((ROOT / f"config/studies/{name}.yaml").read_text())
    return config.validate(raw | overrides, SCHEMA)


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_builds_its_dag(name, tmp_path):
    """Snakemake itself plans each shipped study (dry run): config, sweeps, figures."""
    import subprocess

    out = subprocess.run(["snakemake", "-n", "--quiet", "rules", "--configfile",
                          f"config/studies/{name}.yaml"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "report" in out.stdout and "fit_baseline" in out.stdout
    cfg = study(name)
    assert cfg["study"] == name
    assert len(config.jobs(cfg)) >= 3 * len(cfg["seeds"])


def test_scale_knob_grows_a_study():
    small, big = study("nonsmooth_rates"), study("nonsmooth_rates", scale=4)
    assert len(config.jobs(big)) == len(config.jobs(small))
    assert max(j["n"] for j in config.jobs(big)) == 4 * max(j["n"] for j in config.jobs(small))


def _dd_errors(cfg: dict, seeds: list[int]) -> dict[str, list[tuple[float, float]]]:
    """Mean test excess risk per (family, features / n_train), sorted by the ratio."""
    out: dict[str, list] = {}
    for spec in config.expand_tasks(cfg).values():
        errs = []
        for seed in seeds:
            ds = data.generate(spec["task"], n=spec["task"]["n"], seed=seed, **cfg["split"])
            (X, y, _), (Xv, yv, _), (Xt, _, ft) = (ds.part(p) for p in ("train", "val", "test"))
            model = baselines.fit_baseline(X, y, Xv, yv, spec["baseline"], seed=seed)
            errs.append(np.mean((model.predict(Xt) - ft) ** 2))
        ratio = spec["baseline"]["features"] / len(y)
        out.setdefault(spec["family"], []).append((ratio, float(np.mean(errs))))
    return {k: sorted(v) for k, v in out.items()}


def test_double_descent_peaks_at_the_interpolation_threshold_and_ridge_removes_it():
    """Ridgeless rff test error peaks within 1.5x of features = n_train; ridge has no peak."""
    errs = _dd_errors(study("double_descent", scale=0.5), seeds=[0, 1])
    ratio, peak = max(errs["ridgeless"], key=lambda r: r[1])
    assert 1 / 1.5 <= ratio <= 1.5, errs["ridgeless"]
    ridge = dict(errs["ridge"])
    assert peak > 10 * ridge[ratio]  # the peak is an artefact of interpolation
    # ridge: beyond the smallest models, error never rises more than 30 % above its best so far
    best = np.inf
    for r, e in errs["ridge"]:
        assert r < 0.5 or e <= 1.3 * best, errs["ridge"]
        best = min(best, e)
