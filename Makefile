# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ROWS   ?= 1000000

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt setup.cfg setup.py pyproject.toml models/layers/field_attention.cpp \
          models/layers/dice.cpp models/layers/avx2_math.h recsys_embed/compression/kernels.cpp
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check setuptools==84.2.1 wheel==0.48.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/recsys-embed demo --rows $(ROWS)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/tables.py
	$(PY) benchmarks/scoring.py

clean:
	rm -rf $(VENV) runs build dist *.egg-info
