"""How far the merged LoRA forward's vectors are from peft's own, on full SciFact.

`scifact-long75/` was encoded at commit ceeafc9, before the merged forward existed (peft's path);
`scifact-long75-merged/` by the merged forward, into a fresh cache (`--cache-dir`). Both encodings sit
in the bench caches under the same key (embedder fingerprint, texts, role), so this pairs the files
and prints the cosine between each text's two vectors (both are L2-normalised).

    python benchmarks/experiments/cpu-2core/throughput/merge_vs_peft.py ~/.cache/unified-rag/bench /tmp/fresh-bench-cache
"""
import json
import sys
from pathlib import Path

import numpy as np

peft_root, merged_root = map(Path, sys.argv[1:3])
for merged in sorted(merged_root.glob("*/*.npy")):
    peft = peft_root / merged.parent.name / merged.name
    if not peft.is_file():
        continue
    a, b = np.load(peft, allow_pickle=False), np.load(merged, allow_pickle=False)
    meta = json.loads(merged.with_suffix(".json").read_text())
    cos = (a * b).sum(1)
    print(f"{meta['role']:>8} n={len(cos):5d}  cosine min {cos.min():.6f}  mean {cos.mean():.6f}  "
          f"share >= 0.9999 {np.mean(cos >= 0.9999):.3f}")
for name in ("scifact-long75", "scifact-long75-merged"):
    methods = json.loads((Path(__file__).parents[1] / name / "results.json").read_text())["methods"]
    print(name, "  ".join(f"{m['kind']} nDCG@10 {m['metrics']['ndcg@10']:.4f} R@100 {m['metrics']['recall@100']:.4f}"
                          for m in methods.values()))
