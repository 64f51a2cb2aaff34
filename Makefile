# heritage-damage: the compendium's two commands are `make paper` and `make test`.
# Everything below sets itself up: a fresh clone needs only python3.11 and make.

PYTHON    ?= python3.11
VENV      := .venv
PY        := $(VENV)/bin/python
PROFILE   ?= smoke
SCHEDULER ?= local
DATA      ?=
# SET="key=value ...": RunConfig fields for every run of the plan (they enter the config hash), e.g.
# SET="pretrained=false epochs=10". KEEP_STALE=1 keeps finished runs made by other code (say so in the paper).
SET       ?=
KEEP_STALE ?=
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
# Stamp files make `make env` a no-op when pyproject.toml has not changed.
STAMP     := $(VENV)/.installed-test
LAB_STAMP := $(VENV)/.installed-lab

.PHONY: env data paper html lab test test-fast gpu-check strip clean help

help:
	@echo "make paper   run the whole compendium (PROFILE=smoke|full, SCHEDULER=local|slurm, DATA=path,"
	@echo "             SET=\"key=value ...\" for every run, KEEP_STALE=1 to keep runs made by other code)"
	@echo "make test    unit tests, notebooks under nbval, end-to-end smoke paper (what CI runs)"
	@echo "make test-fast   the unit tests only: no slow (end-to-end) and no slurm (daemon) tests"
	@echo "make gpu-check   the GPU acceptance run (bench/gpu_check.py; a CPU dry run without a GPU)"
	@echo "make env | data | html | lab | strip | clean"

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name heritage --display-name "heritage (.venv)" >/dev/null
	@touch $@

# Synthetic stand-in by default; DATA=path/to/damaged-media (parquet shards or an exported folder)
# ingests the real ARTeFACT instead.
data: env
	$(PY) -m heritage paper --prepare-data-only --profile $(PROFILE) $(if $(DATA),--data $(DATA))

paper: env
	$(PY) -m heritage paper --profile $(PROFILE) --scheduler $(SCHEDULER) $(if $(DATA),--data $(DATA)) \
		$(if $(strip $(SET)),--set $(SET)) $(if $(filter-out 0,$(KEEP_STALE)),--keep-stale)

html: env
	$(PY) -m heritage paper --render-only --profile $(PROFILE) $(if $(strip $(SET)),--set $(SET))

$(LAB_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,lab]'
	@touch $@

# The data first (the notebooks read it), then JupyterLab with the project kernel "heritage (.venv)";
# Jupyter refuses to start as root without --allow-root (containers, CI machines).
lab: $(LAB_STAMP) data
	$(VENV)/bin/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root)

# The end-to-end smoke paper keeps its folder in build/test, so nbval then finds the POC notebooks'
# runs complete and re-executes the notebooks against them instead of training again. Absolute:
# nbval runs each notebook with notebooks/ as its working directory.
TEST_ROOT := $(CURDIR)/build/test

test: env
	rm -rf $(TEST_ROOT)
	HERITAGE_E2E_ROOT=$(TEST_ROOT) $(PY) -m pytest
	HERITAGE_DATA=$(TEST_ROOT)/data HERITAGE_RUNS=$(TEST_ROOT)/runs HERITAGE_PAPER=$(TEST_ROOT)/nbval-paper \
		$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

# The unit tests alone, for the edit-test loop: the slow ones (smoke paper, notebooks, learning run,
# the GPU check's dry run, DDP and signalled train processes) and those needing SLURM daemons are left
# out. CI runs `make test`.
test-fast: env
	$(PY) -m pytest -m "not slow and not slurm"

# The GPU acceptance run (< 8 min on one H100/H200): one JSON in bench/results/. Without a GPU it is
# a CPU dry run of the same steps at tiny sizes (tests/test_bench.py runs that one).
gpu-check: env
	$(PY) bench/gpu_check.py

# Notebooks are stored without outputs.
strip: env
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace --log-level=WARN $(NOTEBOOKS)

clean:
	find runs paper -mindepth 1 -not -name README.md -delete 2>/dev/null || true
	rm -rf data/synthetic data/synthetic-smoke build
