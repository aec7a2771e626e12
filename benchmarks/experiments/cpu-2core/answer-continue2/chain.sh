#!/usr/bin/env bash
# The third answer-adapter run's steps after training, in the order runs/answer-smollm2-continue2/PREREGISTRATION.md
# fixes: calibrate, select on rc-heldout (never squad-rag), ship only by the rule, then the full protocol.
set -euo pipefail
RUN=runs/answer-smollm2-continue2
CFG=trainers/configs/answer-smollm2-continue2.json
SHIP=unified_rag/assets/smollm2-135m-instruct/answer
OUT=benchmarks/results/cpu-2core
while [ ! -f "$RUN/adapter/adapter.safetensors" ]; do sleep 30; done
sleep 10
.venv/bin/unified-rag train calibrate-answer "$RUN/adapter" --config "$CFG" --sources 5 > "$RUN/calibrate.log" 2>&1
.venv/bin/unified-rag bench rag-qa --set rc-heldout -n 60 --n-unanswerable 30 --adapter on \
  --generator-adapter "$RUN/adapter" -o "$OUT/rag-qa-rc-heldout-continue2" > "$RUN/bench-rc.log" 2>&1
if python3 -c "import json,sys; f=json.load(open('$OUT/rag-qa-rc-heldout-continue2/results.json'))['methods']['rag (adapter)']['metrics']['f1']; print('rc-heldout RAG F1', f); sys.exit(0 if f > 0.2717 else 1)"; then
  echo "ships: copying into $SHIP"
  cp "$RUN"/adapter/{adapter.safetensors,answer_config.json,calibration.json} "$SHIP/"
  .venv/bin/unified-rag bench rag-qa -n 500 --n-unanswerable 100 --n-base 100 -o "$OUT/rag-qa-squad-500" > "$RUN/bench-500.log" 2>&1
  echo "full protocol done"
else
  echo "does not ship"
fi
