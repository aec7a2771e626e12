"""Trainers that adapt the shared backbone (LLM2Vec-Gen, GEM, LLM2Vec, bidirectional reconstruction).

Each trainer is paired with its embedder in `embedders/`.
"""
