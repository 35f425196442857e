# Models: `make model` prepares $(MODEL) under models/$(MODEL)/ (model.onnx, labels.txt,
# manifest.txt); `make testdata` writes test photos; `make test-models` verifies it all with
# onnxruntime. Python lives in .venv, every package pinned and hash-checked
# (tools/models/requirements*.txt); downloads are cached in models/.cache/.
# MODEL: efficientnet-lite0 (default) | resnet18 | resnet18-synthetic | tiny-test |
#        resnet18-synthetic-int8 (quantised by tools/models/quantize.py: needs the test venv,
#        onnxruntime and Pillow, and the test photos, its calibration set)

# Python >= 3.11 (the pinned wheels are for CPython 3.11/3.12): PYTHON3 if given, else the first
# of PYTHON_CANDIDATES that is recent enough; scripts/nitro/python.sh picks it or says what to
# install (Amazon Linux 2023's python3 is 3.9: `sudo dnf install -y python3.12`).
PYTHON3           ?=
PYTHON_CANDIDATES ?= python3.12 python3.11 python3
PICK_PYTHON   := PYTHON3='$(PYTHON3)' PYTHON_CANDIDATES='$(PYTHON_CANDIDATES)' scripts/nitro/python.sh
VENV          ?= .venv
VENV_PY       := $(VENV)/bin/python
MODELS_TOOLS  := tools/models
MODELS_DIR    := models
MODELS_REQ    := $(MODELS_TOOLS)/requirements.txt
MODELS_REQ_T  := $(MODELS_TOOLS)/requirements-test.txt
MODELS_PIP    := $(VENV_PY) -m pip install --quiet --disable-pip-version-check \
                   --require-hashes --only-binary=:all:
# Models quantised from a float one (tools/models/make_model.py's QUANTISED).
MODELS_INT8   := resnet18-synthetic-int8

.PHONY: model testdata test-models models-venv models-test-venv models-all models-clean

# Up to date = manifest and labels exist and the manifest's sha256 is model.onnx's: then do
# nothing at all (no Python, no venv).
model: ## Prepare MODEL (default efficientnet-lite0) under models/$(MODEL)/
	@d="$(MODELS_DIR)/$(MODEL)"; \
	sha=$$(sed -n 's/^sha256[[:space:]]*=[[:space:]]*//p' "$$d/manifest.txt" 2>/dev/null || true); \
	if [ -n "$$sha" ] && [ -f "$$d/labels.txt" ] && \
	   echo "$$sha  $$d/model.onnx" | sha256sum --status -c - 2>/dev/null; then \
	  echo "model: $$d is up to date (sha256 $$sha)"; \
	else \
	  $(MAKE) -s --no-print-directory $(if $(filter $(MODEL),$(MODELS_INT8)),models-test-venv testdata,models-venv) && \
	  $(VENV_PY) $(MODELS_TOOLS)/make_model.py --model "$(MODEL)" --out "$$d"; \
	fi

models-all: ## Prepare the offline models: efficientnet-lite0, resnet18-synthetic, tiny-test
	@for m in efficientnet-lite0 resnet18-synthetic tiny-test; do \
	  $(MAKE) --no-print-directory model MODEL=$$m; done

models-venv: $(VENV)/.models-build.stamp
models-test-venv: $(VENV)/.models-test.stamp

# A venv made by a Python older than 3.11 (say, by an earlier attempt with python3 3.9) is made
# again with the one picked.
$(VENV)/.models-build.stamp: $(MODELS_REQ)
	@if ! $(PICK_PYTHON) --is-recent $(VENV_PY); then \
	  py=$$($(PICK_PYTHON)); \
	  if [ -e $(VENV_PY) ]; then echo "$(VENV) was made by a Python older than 3.11: making it again"; fi; \
	  echo "$$py -m venv $(VENV) ($$($$py --version 2>&1))"; \
	  $$py -m venv --clear $(VENV); \
	fi
	$(MODELS_PIP) -r $(MODELS_REQ)
	@touch $@

$(VENV)/.models-test.stamp: $(VENV)/.models-build.stamp $(MODELS_REQ_T)
	$(MODELS_PIP) -r $(MODELS_REQ) -r $(MODELS_REQ_T)
	@touch $@

testdata: testdata/expected.txt ## Write test photos (scikit-image's, pinned) under testdata/

testdata/expected.txt: $(MODELS_TOOLS)/testdata.py $(VENV)/.models-test.stamp
	$(VENV_PY) $(MODELS_TOOLS)/testdata.py --out testdata

test-models: models-test-venv testdata ## Verify the models with onnxruntime (ends "N passed, M failed")
	@$(MAKE) --no-print-directory model MODEL=efficientnet-lite0
	$(VENV_PY) $(MODELS_TOOLS)/test_models.py

models-clean: ## Remove generated models (keeps the download cache)
	rm -rf $(filter-out $(MODELS_DIR)/.cache,$(wildcard $(MODELS_DIR)/*))
