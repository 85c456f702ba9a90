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
    spec = SPEED["tasks"][task]
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
