"""The config every trainer's config extends, the LoRA fields, and what a resume may change."""
from __future__ import annotations

import json
import os
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

# Config fields that may change when a run is resumed: they do not alter the steps already taken.
# dtype and bf16 may change too: a run started on a CPU where bf16 is slow can continue on one where
# it is fast (the numbers then differ from an uninterrupted run's in the last bits, not in kind).
RESUMABLE_CHANGES = {"resume", "steps", "save_every", "keep_checkpoints", "plot", "dtype", "bf16"}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # backbone: HF id or dir, .gguf; None = the offline SmolLM2 default
    dtype: str = "auto"  # backbone weights: auto (bf16 where the CPU/GPU runs it fast), bf16, fp32
    data: list[Path] = []  # .txt, .tsv (id<TAB>text) or .jsonl
    max_examples: int | None = None  # use only the first N (after a seeded shuffle)
    seed: int = 0
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # per process and micro-step
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    # After warmup: "constant", or "cosine" from lr down to lr x min_lr_ratio at the last step. A short
    # run settles better with the decay; a run that may be continued later stays constant.
    lr_decay: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int = 128  # tokens per training text
    bf16: bool | None = None  # autocast; None = when the backbone weights are bf16 already
    save_every: int = 100
    val_examples: NonNegativeInt = 0  # held out from the end of the shuffled data; scored at every checkpoint
    keep_checkpoints: int = 1
    resume: bool = False
    plot: bool = True
    # Warm start: a checkpoint dir (out/checkpoints/step-N) of an earlier run of the same method, whose
    # trainable tensors begin this run; the optimizer and the schedule start afresh. For a second stage
    # with another recipe (e.g. hard negatives) on top of a finished run.
    init_from: Path | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike | None, **overrides):
        raw = json.loads(Path(path).read_text()) if path else {}
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(raw)


class LoraTrainConfig(TrainConfig):
    """Methods that train a LoRA adapter in the shared model (lora_r = 0: every shared weight)."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05


def lora_options(cfg: LoraTrainConfig) -> dict:
    """The embedder's LoRA fields, taken from the trainer's config."""
    return dict(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, max_length=cfg.max_length)
