#!/bin/bash
# Trains to step 75, picks the pre-registered candidate and scores it (PREREGISTRATION.md).
set -euo pipefail
cd /work/main
export HF_HUB_OFFLINE=1
B=.venv/bin
R=runs/llm2vec-supervised-long-smollm2
date
$B/unified-rag train llm2vec --config trainers/configs/llm2vec-supervised-long-smollm2.json --out $R --resume -v
date
N=$($B/python - <<'PY'
import json
rows = {r["step"]: r for r in map(json.loads, open("runs/llm2vec-supervised-long-smollm2/train_log.jsonl"))}
cands = [(rows[s]["val_nce"], -s) for s in (25, 50, 75)]
print(-min(cands)[1])
PY
)
echo "candidate step $N"
E=runs/long-eval-step$N
rm -rf $E; mkdir -p $E/checkpoints
cp $R/run.json $R/train_log.jsonl $E/
cp -r $R/checkpoints/step-$(printf %07d $N) $E/checkpoints/
$B/unified-rag train llm2vec --config trainers/configs/llm2vec-supervised-long-smollm2.json --out $E --resume --steps $N
$B/unified-rag export-adapter $E/adapter -o $R/export-step$N
date
$B/unified-rag bench calibrate -e $R/export-step$N --n-docs 1000 --dtype bf16 -o benchmarks/results/cpu-2core/calibration-long$N
date
$B/unified-rag bench retrieval -e $R/export-step$N,hybrid:$R/export-step$N --dtype bf16 -o benchmarks/results/cpu-2core/scifact-long$N
date
echo EVAL DONE
