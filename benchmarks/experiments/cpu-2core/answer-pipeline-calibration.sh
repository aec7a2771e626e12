#!/usr/bin/env bash
# The decline bias refitted on pipeline prompts, in the order runs/answer-pipeline-calibration/PREREGISTRATION.md
# fixes: calibrate, select on rc-heldout (never squad-rag), ship only by the rule, then the full protocol.
set -euo pipefail
# Stopped after its calibration step (runs/answer-pipeline-calibration/PREREGISTRATION.md, amendment); the
# rc-heldout step then ran by hand with the same command, and the full protocol waited for per-source reading.
RUN=runs/answer-pipeline-calibration
CFG=trainers/configs/answer-smollm2-continue2.json
SHIP=unified_rag/assets/smollm2-135m-instruct/answer
OUT=benchmarks/results/cpu-2core
SHIPPED_RC_F1=$(python3 -c "import json; print(json.load(open('$OUT/rag-qa-rc-heldout-continue2/results.json'))['methods']['rag (adapter)']['metrics']['f1'])")
.venv/bin/unified-rag train calibrate-answer "$RUN/adapter" --config "$CFG" --sources 5 --pipeline > "$RUN/calibrate.log" 2>&1
.venv/bin/unified-rag bench rag-qa --set rc-heldout -n 60 --n-unanswerable 30 --adapter on \
  --generator-adapter "$RUN/adapter" -o "$OUT/rag-qa-rc-heldout-pipeline-bias" > "$RUN/bench-rc.log" 2>&1
if python3 -c "import json,sys; f=json.load(open('$OUT/rag-qa-rc-heldout-pipeline-bias/results.json'))['methods']['rag (adapter)']['metrics']['f1']; print('rc-heldout RAG F1', f, 'shipped', $SHIPPED_RC_F1); sys.exit(0 if f >= $SHIPPED_RC_F1 else 1)"; then
  echo "ships: copying into $SHIP"
  mv "$OUT/rag-qa-squad-500" "$OUT/rag-qa-squad-500-built-bias"
  cp "$RUN"/adapter/{answer_config.json,calibration.json} "$SHIP/"
  .venv/bin/unified-rag bench rag-qa -n 500 --n-unanswerable 100 --n-base 100 -o "$OUT/rag-qa-squad-500" > "$RUN/bench-500.log" 2>&1
  echo "full protocol done"
else
  echo "does not ship"
fi
