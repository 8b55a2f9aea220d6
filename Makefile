# dfattn: two commands do everything from a fresh clone.
#   make book   set up, run every chapter in order with papermill, build the HTML book
#   make test   set up, lib tests, nbval on the notebooks (smoke profile), book build + browser check
#   make bench  throughput benchmarks (data synthesis, models)
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ready
# Chapters, in reading order (notebooks/NN_name.py is the source, .ipynb the executed pair).
CHAPTERS := $(sort $(basename $(notdir $(wildcard notebooks/[0-9][0-9]*.py))))
PROFILE ?=
PAPERMILL_ARGS ?=
export PYTHONHASHSEED := 0

.PHONY: setup book test bench notebooks lib-test nb-test clean
.DEFAULT_GOAL := help

help:
	@echo "make book | make test | make bench | make setup | make clean"

# The environment: a venv with the package (editable) and the book + test extras. torch and
# torchvision come from this machine's disk where pip finds them (see environment.yml).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e ".[book,test]"
	$(PY) -m pip install -q --no-deps "facenet-pytorch==2.6.0" "mediapipe==0.10.21" && $(PY) -m pip install -q absl-py "flatbuffers>=2.0" protobuf attrs requests || echo "warning: the optional face detectors (mtcnn, mediapipe) did not install"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

# Run every chapter in order, in place, with its default parameters (PROFILE=smoke|cpu|gpu sets
# DFATTN_PROFILE; no papermill -p, so no injected-parameters cell lands in the committed notebooks).
notebooks: $(STAMP)
	for nb in $(CHAPTERS); do
	  echo "== $$nb"
	  $(VENV)/bin/jupytext --to ipynb --update notebooks/$$nb.py -q 2>/dev/null || $(VENV)/bin/jupytext --to ipynb notebooks/$$nb.py
	  $(if $(PROFILE),DFATTN_PROFILE=$(PROFILE)) $(VENV)/bin/papermill notebooks/$$nb.ipynb \
	    notebooks/$$nb.ipynb --cwd notebooks $(PAPERMILL_ARGS) --kernel python3
	done

book: notebooks book-html

lib-test: $(STAMP)
	$(PY) -m pytest lib/tests -q -p no:cacheprovider

# nbval re-runs each notebook under the smoke profile and checks that it runs cleanly (outputs
# that depend on timing or figures are not compared: see nbval-sanitize.cfg and --nbval-lax).
nb-test: $(STAMP)
	DFATTN_PROFILE=smoke $(PY) -m pytest --nbval-lax --nbval-current-env notebooks/ -q -p no:cacheprovider \
	  --nbval-sanitize-with nbval-sanitize.cfg

test: setup lib-test nb-test book-check

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf _build runs

include mk/book.mk
