#!/bin/bash
# Waits for the step-100 checkpoint, stops the run, picks the pre-registered candidate and scores it.
set -euo pipefail
cd /work/main
export HF_HUB_OFFLINE=1
B=.venv/bin
R=runs/llm2vec-supervised-hnf-smollm2
while [ ! -f $R/checkpoints/step-0000100/state.json ]; do sleep 15; done
pkill -f "unified-rag train llm2vec" || true
sleep 10
N=$($B/python - <<'PY'
import json
rows = {r["step"]: r for r in map(json.loads, open("runs/llm2vec-supervised-hnf-smollm2/train_log.jsonl"))}
cands = [(rows[s]["val_nce"], -s) for s in (50, 75, 100)]
print(-min(cands)[1])
PY
)
echo "candidate step $N"; date
E=runs/hnf-eval-step$N
rm -rf $E; mkdir -p $E/checkpoints
cp $R/run.json $R/negatives.json $R/train_log.jsonl $E/
cp -r $R/checkpoints/step-$(printf %07d $N) $E/checkpoints/
$B/unified-rag train llm2vec --config /tmp/hnf-keep.json --out $E --resume --steps $N
$B/unified-rag export-adapter $E/adapter -o $R/export-step$N
date
$B/unified-rag bench calibrate -e $R/export-step$N --n-docs 1000 --dtype bf16 -o benchmarks/results/cpu-2core/calibration-hnf$N
date
$B/unified-rag bench retrieval -e $R/export-step$N,hybrid:$R/export-step$N --dtype bf16 -o benchmarks/results/cpu-2core/scifact-hnf$N
date
echo EVAL DONE
