# Two entry points: `make demo` (the offline demo grid + report) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
# CPU machines: the versions we test with. Override for another CUDA/CPU build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

$(BIN)/bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[offline,test]'
	touch $(BIN)/bench

install: $(BIN)/bench

demo: $(BIN)/bench
	$(BIN)/bench run --zoo examples/offline_zoo.yaml --datasets examples/offline_datasets.yaml --out demo_results
	$(BIN)/bench report --results demo_results --out reports

test: $(BIN)/bench
	$(BIN)/python -m pytest -q

# On a CUDA machine: the suite (CUDA-parametrised tests included) and the demo grid on the GPU; any error record
# fails it (bench run exits 1). GPU_PY=python3 uses an existing environment instead of the venv.
GPU_PY ?= $(BIN)/python
gpu-check:
	$(GPU_PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: torch sees no CUDA device')"
	$(GPU_PY) -m pytest -q
	$(GPU_PY) -m benchmark.cli run --zoo examples/offline_zoo.yaml --datasets examples/offline_datasets.yaml --out gpu_results --device cuda
	$(GPU_PY) -m benchmark.cli report --results gpu_results --out gpu_reports

.PHONY: install demo test gpu-check
