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
	# TF Serving gRPC client for examples/serving_client.py: --no-deps, because its wheel
	# requires the full `tensorflow` (572 MB) although tensorflow-cpu provides the same modules.
	$(PY) -m pip install --quiet --no-deps "tensorflow-serving-api==2.21.0"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -x --durations=15

test-all: install
	$(PY) -m pytest -q -m "" --durations=25

demo: install
	$(PY) -m pixelrnn_tf.demo --out demo_out

lint: install
	$(VENV)/bin/ruff check pixelrnn_tf data_prep tests benchmarks examples train.py export.py

bench: install
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/sampling.py

clean:
	rm -rf $(VENV) demo_out *.egg-info
