# pixelrnn_tf: `make demo` (install, train on the built-in digits, sample) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-all test-numerics demo lint bench clean

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

# The numerics-sensitive tests (causality by perturbation, sampling and export exactness) once
# more on other CPU kernels than the machine's own: float32 sums round by the kernels' blocking,
# which differs between CPUs. oneDNN is limited to the next instruction set down: AVX2 on an
# AVX-512 machine (the kernels an AVX2-only CPU runs), SSE4.1 on an AVX2 one.
NUMERICS_ISA ?= $(shell grep -qw avx512f /proc/cpuinfo && echo AVX2 || echo SSE41)
NUMERICS_TESTS := tests/test_causality.py::test_causality_by_perturbation \
	tests/test_multiscale.py::test_stage2_perturbation_given_fixed_small_image \
	tests/test_sampling.py \
	tests/test_multiscale_sampling.py::test_cached_and_naive_agree_and_stage_1_is_the_small_model \
	tests/test_export.py::test_causality_through_the_export \
	tests/test_export.py::test_sampling_signatures \
	tests/test_multiscale_export.py::test_pixel_log_prob_in_the_model_s_order \
	tests/test_multiscale_export.py::test_sampling_signatures
test-numerics: install
	ONEDNN_MAX_CPU_ISA=$(NUMERICS_ISA) $(PY) -m pytest -q -x $(NUMERICS_TESTS) \
		-k "not distribution and not bad_arguments and not in_graph_checks"

demo: install
	$(PY) -m pixelrnn_tf.cli.demo --out demo_out

lint: install
	$(VENV)/bin/ruff check pixelrnn_tf data_prep tests benchmarks examples train.py export.py

bench: install
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/sampling.py

clean:
	rm -rf $(VENV) demo_out *.egg-info
