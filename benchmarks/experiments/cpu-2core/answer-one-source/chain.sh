#!/usr/bin/env bash
# The one-source run's steps after training, in the order runs/answer-smollm2-one-source/PREREGISTRATION.md
# fixes: calibrate, select on rc-heldout's report half (never squad-rag), ship only by the rule, then the
# integration tests on the shipped files and the squad-rag run once. As run: the script was stopped during
# the selection run (the pre-registration's amendment) and its last steps were typed by hand, as below
# (the squad-rag run with the adapter rows only).
set -euo pipefail
RUN=runs/answer-smollm2-one-source
CFG=trainers/configs/answer-smollm2-one-source.json
SHIP=unified_rag/assets/smollm2-135m-instruct/answer
OUT=benchmarks/results/cpu-2core
while [ ! -f "$RUN/adapter/adapter.safetensors" ]; do sleep 30; done
sleep 10
.venv/bin/unified-rag train calibrate-answer "$RUN/adapter" --config "$CFG" --sources 5 --pipeline --reading per-source > "$RUN/calibrate.log" 2>&1
.venv/bin/unified-rag bench rag-qa --set rc-heldout -n 300 --n-unanswerable 200 --adapter on --settings rag,oracle,gold-removed \
  --generator-adapter "$RUN/adapter" -o "$OUT/rag-qa-rc-heldout-300-one-source" > "$RUN/bench-rc-300.log" 2>&1
if python3 - "$OUT/rag-qa-rc-heldout-300-one-source/results.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["methods"]
rag, removed = m["rag (adapter)"]["metrics"], m["gold-removed (adapter)"]["metrics"]
gap = removed["declined"] - rag["false_decline"]
print(f"rc-heldout RAG F1 {rag['f1']:.4f} (rule: >= 0.413); gold-removed declines - false declines {gap:.4f} (rule: > 0.3864, the shipped 0.52 - 0.1336)")
sys.exit(0 if rag["f1"] >= 0.413 and gap > 0.3864 else 1)
PY
then
  echo "ships: copying into $SHIP"
  cp "$RUN"/adapter/{adapter.safetensors,answer_config.json,calibration.json} "$SHIP/"
  HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -rs -m integration > "$RUN/integration.log" 2>&1 || echo "integration tests failed: see $RUN/integration.log"
  mv "$OUT/rag-qa-squad-500" "$OUT/rag-qa-squad-500-three-runs"
  .venv/bin/unified-rag bench rag-qa -n 500 --n-unanswerable 100 --adapter on --settings closed-book,rag,oracle,gold-removed \
    -o "$OUT/rag-qa-squad-500" > "$RUN/bench-500.log" 2>&1
  echo "squad-rag run done"
else
  echo "does not ship"
fi
