"""motifpipe: Motif Mimicry experiments with Snakemake, Lightning and MLflow.

Submodules are imported on demand so that ``import motifpipe`` (done by the
Snakemake DAG build) stays free of torch and Lightning.
"""

__version__ = "0.1.0"
