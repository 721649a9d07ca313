# pixelrnn_tf: `make demo` (install, train on the built-in digits, sample) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-all demo lint bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -x --durations=15

test-all: install
	$(PY) -m pytest -q -m "" --durations=25

demo: install
	$(PY) -m pixelrnn_tf.demo --out demo_out

lint: install
	$(VENV)/bin/ruff check pixelrnn_tf data_prep tests benchmarks train.py export.py

bench: install
	$(PY) benchmarks/step_time.py

clean:
	rm -rf $(VENV) demo_out *.egg-info
