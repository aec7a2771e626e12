"""Trainers that adapt the shared backbone (LLM2Vec-Gen, GEM, LLM2Vec, bidirectional reconstruction).

Each trainer is paired with its embedder in `embedders/`. What they share, one job a file:
config.py (TrainConfig, LoRA fields, what a resume may change), method.py (the Method interface),
loop.py (train: batch order, seeds, the step loop), checkpoint.py, run_info.py (run.json),
plot.py (the log and its plot), run.py (a method's whole run), data.py (readers), losses.py,
contrastive.py (the supervised contrastive stage), distributed.py (in-batch negatives and logged
means across processes).
"""
