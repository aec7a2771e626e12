"""A method's whole run: load the backbone, record the run, build the Method, train, save the adapter."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from .config import TrainConfig
from .loop import make_accelerator, train
from .run_info import write_run_info


def load_backbone(cfg: TrainConfig, device=None):
    """The one backbone of a training run, on this process's device."""
    from unified_rag import Backbone

    return Backbone.from_pretrained(cfg.model, dtype=cfg.dtype, device=device or "auto")


def run_method(cfg: TrainConfig, out: str | os.PathLike, name: str, rows: list, build: Callable,
               *, before: Callable | None = None, after: Callable | None = None) -> Path:
    """Load the backbone, record the run, build the Method, train, save the adapter under out/adapter.
    `before`/`after(method, out)` let a method report something around training (GEM: perplexity).
    On several processes, process 0 alone writes (run.json, the adapter, the reports)."""
    out = Path(out)
    acc = make_accelerator()
    backbone = load_backbone(cfg, device=acc.device)
    write_run_info(out, cfg, name, backbone, accelerator=acc)
    torch.manual_seed(cfg.seed)  # the adapter's initialisation (LoRA A): a function of the seed, on every process
    method = build(backbone)
    if before and acc.is_main_process:
        before(method, out)
    train(method, cfg, out, rows, accelerator=acc)
    if acc.is_main_process:
        method.save_output(out / "adapter")
        if after:
            after(method, out)
    acc.wait_for_everyone()  # no process returns before the adapter is there
    return out / "adapter"
