# `make` or `make help` lists the targets. Everything runs in .venv (CPU torch).
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.stamp
# The torch pin lives in pyproject.toml; torch is installed on its own, before anything else,
# so that no other package can pull in a different (e.g. CUDA) build.
TORCH_PIN := $(shell grep -oE '"torch==[^"]+"' pyproject.toml | head -n 1 | tr -d '"')
# Which torch build `make setup` installs: CUDA=cu126 (or cu128, ...) takes PyTorch's CUDA wheel
# of the same version, for GPU clusters; CPU=1 the CPU wheel from PyTorch's index; neither: what
# pip finds first (here, the CPU wheel on disk). TORCH_PIP_FLAGS overrides both.
CUDA ?=
CPU ?=
TORCH_PIP_FLAGS ?= $(if $(CUDA),--index-url https://download.pytorch.org/whl/$(CUDA),$(if $(CPU),--index-url https://download.pytorch.org/whl/cpu))
# timm is only a numerical reference in tests; --no-deps keeps its requirements off torch.
TIMM_PIN := timm==1.0.31
# `make sweep` runs the experiments of $(SWEEP) marked default (or EXPERIMENT="a b").
SWEEP ?= sweep.yaml
EXPERIMENT ?=
# e.g. SWEEP_FLAGS=--local to run here even where sbatch exists, or --dry-run
SWEEP_FLAGS ?=
# Where experiments are written and read: results/ (not committed). The committed CPU
# reproduction is in reproduction/, read-only to every target but `make reproduce`
# (make figures RESULTS=reproduction draws it into results/reproduction-figures/).
RESULTS ?= results
# Where `make figures` draws: by default <RESULTS>/figures, or results/reproduction-figures/...
# for a folder under reproduction/ (ablations.analysis.figures.figures_root)
FIGURES ?=
# `make gpu-check` validates and times this machine's first CUDA device into benchmarks/gpu/;
# GPU_CHECK_DEVICE=cpu runs the same checks on the CPU with tiny shapes (what the tests run),
# into results/gpu-check/. GPU_CHECK_BUDGET=<seconds> (default 480): no check starts after it.
GPU_CHECK_DEVICE ?= cuda
GPU_CHECK_BUDGET ?=
# `make dashboard` serves on this port of 127.0.0.1
PORT ?= 8080
# FORCE=1: `make collect` may replace a table with one of fewer trials or rows
FORCE ?=
# `make reproduce` reruns the committed reproduction in $(STAGING), then publishes it;
# `make reproduce-map` the same for the regime map (sweeps/regime_map.yaml), `make
# reproduce-scaling` for the batch-scaling study (sweeps/batch_scaling.yaml).
STAGING := results/reproduction
MAP_STAGING := results/regime_map
SCALING_STAGING := results/batch_scaling
RESOLVED_STAGING := results/batch_resolved

.PHONY: help setup test test-fast lint docs bench gpu-check try sweep collect figures dashboard reproduce reproduce-map reproduce-scaling reproduce-resolved slurm-up slurm-down clean distclean

# variables a target's help text names, printed with their values
HELP_VALUES := PORT

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}' \
		| sed $(foreach v,$(HELP_VALUES),-e 's|$$($(v))|$($(v))|g')

setup: $(STAMP) ## create .venv and install torch (CPU), the package and test/dev tools

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install $(TORCH_PIP_FLAGS) '$(TORCH_PIN)'
	$(PIP) install -e '.[harness,trackers,test,dev]'
	$(PIP) install --no-deps '$(TIMM_PIN)'
	# the harness is run from this checkout (not part of the distribution): a .pth puts the repo
	# root on the venv's path, for workers, Jupyter kernels and scripts started anywhere
	$(PY) -c 'import site, sys; open(site.getsitepackages()[0] + "/ablations-repo.pth", "w").write(sys.argv[1] + "\n")' '$(CURDIR)'
	touch $@

test: setup ## run all tests, slow end-to-end ones included (what CI runs)
	$(PY) -m pytest

test-fast: setup ## run the tests not marked slow
	$(PY) -m pytest -m "not slow"

lint: setup ## ruff check + ruff format --check + the rooms' import contracts (lint-imports)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache  # its cache can miss a changed import

docs: setup ## build the documentation site into site/ (strict: a broken link or stale reference fails)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: setup ## run every benchmarks/*.py
	@for f in benchmarks/*.py; do \
		[ -e "$$f" ] || continue; \
		echo "== $$f"; \
		$(PY) "$$f" || exit 1; \
	done

gpu-check: setup ## validate and time this machine's GPU, ~8 min (GPU_CHECK_DEVICE=cpu: the same, tiny, on the CPU) -> benchmarks/gpu/
	$(PY) -m ablations gpu-check --device '$(GPU_CHECK_DEVICE)' $(if $(GPU_CHECK_BUDGET),--budget '$(GPU_CHECK_BUDGET)')

try: setup ## first run: 2 variants x 300 steps, here (about 2 min) -> a table and results/figures/try/
	$(PY) -m ablations sweep --file sweeps/try.yaml --local
	$(PY) -m ablations.analysis.compare results/try

sweep: setup ## run the sweep (SWEEP=sweep.yaml, EXPERIMENT=name) into results/: SLURM where sbatch works, else local
	$(PY) -m ablations sweep --file '$(SWEEP)' $(if $(filter command line environment,$(origin RESULTS)),--results '$(RESULTS)') $(foreach e,$(EXPERIMENT),--experiment '$(e)') $(SWEEP_FLAGS)

collect: setup ## results/<experiment>/{curves,runs,layers}.parquet from its trials (RESULTS=dir; FORCE=1 may shrink a table)
	$(PY) -m ablations.results collect $(if $(FORCE),--force) $(or $(foreach e,$(EXPERIMENT),$(RESULTS)/$(e)),$(patsubst %/sweep.json,%,$(wildcard $(RESULTS)/*/sweep.json)))

dashboard: setup ## optuna-dashboard on http://127.0.0.1:$(PORT) of EXPERIMENT= in RESULTS= (a folder alone will do) or SWEEP=; none named: the list (read-only)
	$(PY) -m ablations dashboard $(if $(or $(filter command line environment,$(origin SWEEP)),$(if $(filter command line environment,$(origin RESULTS)),,x)),--file '$(SWEEP)') $(if $(filter command line environment,$(origin RESULTS)),--results '$(RESULTS)') $(if $(EXPERIMENT),--experiment '$(EXPERIMENT)') --port $(PORT)

figures: setup ## execute notebooks/ headless (real Jupyter kernel) -> results/figures/ (RESULTS=reproduction: the committed ones)
	$(PY) -m ablations.analysis.figures run --results $(RESULTS) $(if $(FIGURES),--out $(FIGURES)) $(foreach e,$(EXPERIMENT),--experiment '$(e)')

reproduce: setup ## rerun the committed NVLAMB reproduction (sweeps/nvlamb_cpu.yaml, ~45 min here) and replace reproduction/ with it (reproduce-* are the only targets that write tracked files)
	$(PY) -m ablations sweep --file sweeps/nvlamb_cpu.yaml --local --results $(STAGING)
	$(PY) -m ablations.analysis.figures run --results $(STAGING) --out $(STAGING)/figures
	$(PY) -m ablations.analysis.reproduction publish $(STAGING) reproduction --rerun '`make reproduce`'

reproduce-map: setup ## rerun the regime map (sweeps/regime_map.yaml, ~1.7 h here; resumable) and replace reproduction/regime_map/ with it
	$(PY) -m ablations sweep --file sweeps/regime_map.yaml --local --results $(MAP_STAGING)
	$(PY) -m ablations.studies.regime calibrate $(MAP_STAGING)/lr_sensitivity --variant 'baseline,preset=apex,lr=0.006' --seed 0 --out $(MAP_STAGING)/calibration.json
	$(PY) -m ablations.analysis.figures run --results $(MAP_STAGING) --out $(MAP_STAGING)/figures
	$(PY) -m ablations.analysis.reproduction publish $(MAP_STAGING) reproduction/regime_map --rerun '`make reproduce-map`'

reproduce-scaling: setup ## run the batch-scaling study (sweeps/batch_scaling.yaml, ~3 h here; resumable) and replace reproduction/batch_scaling/ with it
	$(PY) -m ablations sweep --file sweeps/batch_scaling.yaml --local --results $(SCALING_STAGING)
	$(PY) -m ablations sweep --file sweeps/batch_scaling.yaml --local --results $(SCALING_STAGING) --experiment lars_lr_edge
	$(PY) -m ablations.analysis.figures run --results $(SCALING_STAGING) --out $(SCALING_STAGING)/figures
	$(PY) -m ablations.analysis.reproduction publish $(SCALING_STAGING) reproduction/batch_scaling --rerun '`make reproduce-scaling`'

reproduce-resolved: setup ## the batch-scaling rerun on an lr grid (sweeps/batch_resolved.yaml, ~5 h here; resumable) and replace reproduction/batch_resolved/ with it
	$(PY) -m ablations sweep --file sweeps/batch_resolved.yaml --local --results $(RESOLVED_STAGING)
	$(PY) -m ablations.analysis.figures run --results $(RESOLVED_STAGING) --out $(RESOLVED_STAGING)/figures
	$(PY) -m ablations.analysis.reproduction publish $(RESOLVED_STAGING) reproduction/batch_resolved --rerun '`make reproduce-resolved`'

slurm-up: ## start a local one-node SLURM cluster (installs slurm via apt as root); prints SLURM_CONF
	bash ablations/slurm/local_cluster.sh up

slurm-down: ## stop the local SLURM cluster started by slurm-up
	bash ablations/slurm/local_cluster.sh down

clean: ## remove caches and build outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
