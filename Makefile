# Two commands do all set-up: `make demo` and `make test` create .venv when it is missing, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cxrdistill-installed
# torch/torchvision pinned to the builds this kind of machine holds on disk; override on a GPU box, e.g.
#   make test TORCH_PIN="torch==2.5.1 torchvision==0.20.1"
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
PYTEST_WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test bench bench-scale browser clean lint docs notebooks

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Headless Chromium (Debian's package) for the report's browser test.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { echo "error: could not install chromium (apt-get install chromium as root)"; exit 1; }; }

demo: venv
	$(VENV)/bin/cxrdistill demo --out runs/demo

test: venv browser
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=15 tests

bench: venv
	$(PY) -m cxrdistill.bench --out BENCHMARKS.md

# Cost growth with the cohort's size (not part of `make bench`: about an hour on 2 cores): every study stage at n and
# 10n rows of `synth --like` of CheXpert's train.csv (2,400 and 24,000), per-image cost ratio and peak RSS.
bench-scale: venv
	$(PY) -m cxrdistill.bench --only scale --out BENCHMARKS-scale.md

# The documentation site (MkDocs + Material, strict: broken links fail) in site/; open site/index.html offline.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo "built site/ — open site/index.html"

# Re-run the notebooks in docs/notebooks/ and store their outputs (the site shows them).
notebooks: venv
	OMP_NUM_THREADS=1 $(PY) tools/run_notebooks.py

clean:
	rm -rf runs site .pytest_cache
