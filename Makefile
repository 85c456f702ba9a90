# motifpipe: `make run` runs the default study, `make test` runs the test suite.
# Both create .venv and install the pinned environment first.

PYTHON    ?= python3
VENV      ?= .venv
# A CPU build of torch is enough here and installs in seconds; override for CUDA,
# e.g. `make run TORCH_REQ="torch==2.13.0" PIP_EXTRA="--index-url ..."`.
TORCH_REQ ?= torch==2.13.0
CORES     ?= all
CONFIG    ?= config/config.yaml
PORT      ?= 5000
SCALE     ?= 1
STUDIES   := mimicry_speed nonsmooth_rates intrinsic_dim invariance double_descent

BIN   := $(VENV)/bin
STAMP := $(VENV)/.motifpipe-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run smoke studies $(STUDIES) test test-fast ui lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_REQ)" $(PIP_EXTRA)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	@echo "report:  $$(ls -1 reports/*/report.html | tr '\n' ' ')"
	@echo "MLflow:  sqlite:///$(CURDIR)/mlflow.db (artifacts in $(CURDIR)/mlartifacts); browse with 'make ui'"

smoke: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml

# One study (`make nonsmooth_rates`, `make double_descent SCALE=4`) or all five.
$(STUDIES): setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/studies/$@.yaml --config scale=$(SCALE)
	@echo "report:  reports/$@/report.html"

studies: $(STUDIES)

# The whole suite, end-to-end and SLURM tests included (SLURM tests skip without a cluster).
test: setup
	$(BIN)/python -m pytest -m "" -q

# The fast default selection (no end-to-end runs).
test-fast: setup
	$(BIN)/python -m pytest -q

ui: setup
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(PORT) --backend-store-uri sqlite:///mlflow.db

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile config/smoke.yaml

bench: setup
	$(BIN)/python bench/data.py
	$(BIN)/python bench/baselines.py --quick

clean:
	rm -rf results reports/*/ logs .snakemake mlflow.db mlflow.db.lock mlartifacts
