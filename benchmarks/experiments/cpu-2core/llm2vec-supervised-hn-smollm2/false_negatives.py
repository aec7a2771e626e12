# How often BM25-mined negatives (hard_negatives: "bm25", no filter) are ones the offline teacher ranks
# at or above the pair's own positive: 2,000 seeded training rows. Output: false_negatives.log.
#     .venv/bin/python benchmarks/experiments/cpu-2core/llm2vec-supervised-hn-smollm2/false_negatives.py
import random, collections
import torch
torch.set_num_threads(1)
from trainers.llm2vec import LLM2VecTrainConfig, load_rows
from trainers.contrastive import Teacher
cfg = LLM2VecTrainConfig.from_file("trainers/configs/llm2vec-supervised-hn-smollm2.json")
rows = load_rows(cfg)[:-cfg.val_examples]
random.seed(0); sample = random.sample(rows, 2000)
t = Teacher()
q = t([r[1] for r in sample]); p = t([r[2] for r in sample]); n = t([r[3] for r in sample])
sp, sn = (q*p).sum(1), (q*n).sum(1)
by = collections.defaultdict(list)
for r, a, b in zip(sample, sp.tolist(), sn.tolist()):
    by[r[0].split(":")[0] if ":" in r[0] else r[0][:4]].append(b >= a)
print("rows", len(rows), "teacher ranks the mined negative at or above the positive:", float((sn >= sp).float().mean()))
for k, v in sorted(by.items()): print(k, len(v), round(sum(v)/len(v), 3))
print("example ids", [r[0] for r in sample[:5]])
