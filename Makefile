# Quickstart: `make demo` runs the main job end to end, `make test` runs the test suite.
# Both install from constraints.txt (the versions CI last tested together), so a fresh clone gets
# exactly what CI saw. `make test-latest` runs the suite on the newest installable versions and
# `make test-compat` the transformers-dependent tests on the oldest claimed transformers.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
# Torch is pinned everywhere: the CPU wheel on local disk. An unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

# The oldest transformers pyproject.toml claims; keep the two in step.
COMPAT_TRANSFORMERS := 5.9.0
COMPAT_VENV := .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.installed-$(COMPAT_TRANSFORMERS)
# The tests (and doctests) that import transformers or sentence-transformers.
HF_TESTS := tests/prune/test_hf_heads.py tests/prune/test_hf_bloom.py tests/prune/test_hf_pruning.py tests/prune/test_hf_pretrained.py \
	tests/prune/test_sentence_transformers_save.py tests/prune/test_onnx_export.py tests/prune/test_io.py \
	tests/prune/test_hf_coverage.py tests/prune/test_hf_checks.py tests/prune/test_pruned_fixtures.py tests/prune/test_count_hand.py \
	tests/prune/test_hf_moe_experts.py src/torchpare/prune/moe_experts.py \
	tests/distill/test_hf_distill.py tests/zoo/test_zoo.py tests/engine/test_demo_text_quiet.py \
	tests/integrations/test_hf_trainer.py tests/engine/test_user_models.py \
	src/torchpare/zoo/hf.py src/torchpare/prune/hf_pretrained.py

LATEST_VENV := .venv-latest
LATEST_PY := $(LATEST_VENV)/bin/python

.PHONY: demo test lint docs bench install clean constraints test-compat test-latest

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev,hf,onnx,data]" $(TORCH)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/torchpare demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples docs/_ext

# The documentation site (mkdocs.yml) into site/; --strict: a broken link, anchor or API reference fails
# (not with -q: it hides the warnings --strict counts). The variable silences Material's banner.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Write the versions of a green .venv (torchpare itself left out) into constraints.txt.
constraints: $(STAMP)
	{ head -2 $(CONSTRAINTS); $(PY) -m pip freeze --exclude-editable | grep -v -i '^torchpare'; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

# The oldest claimed transformers (other packages unconstrained), transformers-dependent tests only.
$(COMPAT_STAMP): pyproject.toml Makefile
	test -x $(COMPAT_PY) || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install -q --upgrade pip
	$(COMPAT_PY) -m pip install -q $(TORCH)
	$(COMPAT_PY) -m pip install -q -e ".[dev,hf,onnx,data]" "transformers==$(COMPAT_TRANSFORMERS)" $(TORCH)
	rm -f $(COMPAT_VENV)/.installed-*
	touch $(COMPAT_STAMP)

test-compat: $(COMPAT_STAMP)
	OMP_NUM_THREADS=1 $(COMPAT_PY) -m pytest -q -n 2 --dist loadfile $(HF_TESTS)

# The newest installable versions (no constraints file), upgraded on every run: the drift check.
test-latest:
	test -x $(LATEST_PY) || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_PY) -m pip install -q --upgrade pip
	$(LATEST_PY) -m pip install -q $(TORCH)
	$(LATEST_PY) -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev,hf,onnx,data]" $(TORCH)
	$(LATEST_PY) -m pip list 2>/dev/null | grep -i -E '^(transformers|tokenizers|huggingface-hub|onnx|onnxruntime|sentence-transformers) '
	OMP_NUM_THREADS=1 $(LATEST_PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m pip install -q -c $(CONSTRAINTS) "torch-pruning>=1.4" $(TORCH)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(LATEST_VENV) runs site .pytest_cache
