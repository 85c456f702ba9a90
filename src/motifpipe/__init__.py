"""motifpipe: Motif Mimicry experiments with Snakemake, Lightning and MLflow.

Submodules are imported on demand so that ``import motifpipe`` (done by the
Snakemake DAG build) stays free of torch and Lightning; ``MotifMimicryRegressor``
is loaded from :mod:`motifpipe.estimator` on first access (scikit-learn then, torch
and Lightning only when it fits or predicts).
"""

__version__ = "0.1.0"
__all__ = ["MotifMimicryRegressor", "__version__"]

_LAZY = {"MotifMimicryRegressor": "motifpipe.estimator"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'motifpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
