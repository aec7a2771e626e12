"""The method interface: one training objective over one embedder.

A trainer is a `Method`: an nn.Module that holds the shared backbone's model (by reference) and the
embedder, returns `(loss, parts)` from `forward(examples, gen, step)`, names its trainable tensors,
scores held-out examples and writes its result. `loop.train()` does the rest.
"""
from __future__ import annotations

from pathlib import Path

import torch

from unified_rag.errors import InputError

from .config import TrainConfig


class Method(torch.nn.Module):
    """One training objective over one embedder. `self.model` is the shared backbone's model, registered
    by reference so that DDP sees every trainable tensor, LoRA weights injected into it included."""

    name: str = "method"

    def __init__(self, embedder):
        super().__init__()
        self.backbone, self.emb, self.model = embedder.backbone, embedder, embedder.backbone.model
        for p in embedder.parameters():
            p.requires_grad_(True)
        for p in getattr(embedder, "shared_parameters", dict)().values():  # LoRA, or all weights when lora_r=0
            p.requires_grad_(True)

    def batch(self, texts: list[str], instruction: str | None = None) -> dict[str, torch.Tensor]:
        return self.emb.collate(self.emb.tokenize(texts, instruction))

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        """Learned token rows at cfg.lr_special (when the config has one), everything else at cfg.lr."""
        named = list(self.trainable().items())
        special = [p for n, p in named if "special_embeddings" in n]
        rest = [p for n, p in named if "special_embeddings" not in n]
        groups = [{"name": "special", "params": special, "lr": getattr(cfg, "lr_special", cfg.lr)}] if special else []
        return groups + [{"name": "rest", "params": rest, "lr": cfg.lr}]

    def setup(self, examples: list) -> None:
        """Data-dependent initialisation; runs on fresh starts only (a resume loads it from the checkpoint)."""

    def forward(self, examples: list, gen: torch.Generator, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss on one micro-batch; `gen` seeds any sampling, `step` (0-based) drives loss schedules."""
        raise NotImplementedError

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """This method's own trainable tensors under stable names: the embedder's, its share of the
        model (LoRA named without the adapter name, or all weights), and the method's (e.g. a temperature).
        Other adapters living in the same shared model are not ours, whatever their requires_grad."""
        own = {f"emb.{n}": p for n, p in self.emb.named_parameters()}
        own.update({f"shared.{n}": p for n, p in getattr(self.emb, "shared_parameters", dict)().items()})
        own.update({n: p for n, p in self.named_parameters() if not n.startswith(("emb.", "model."))})
        return own

    def _own_buffers(self) -> dict[str, torch.Tensor]:
        return {n: b for n, b in self.named_buffers() if not n.startswith("model.")}

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Trainable tensors plus the method's own buffers; the frozen backbone is never copied."""
        state = {**self.trainable(), **self._own_buffers()}
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        own = {**self.trainable(), **self._own_buffers()}
        if set(state) != set(own):
            raise InputError(f"checkpoint does not fit this method: missing {sorted(set(own) - set(state))[:5]}, "
                             f"unexpected {sorted(set(state) - set(own))[:5]}")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v.to(own[k].device, own[k].dtype))

    def validate(self, examples: list) -> dict[str, float]:
        """Held-out metrics (no gradients), logged as val_<name> at every checkpoint. A method without
        them cannot take val_examples (train() refuses): they would only remove training data."""
        return {}

    def save_output(self, out: Path) -> None:
        """Write the trained adapter (an embedder dir) under `out`."""
        self.emb.save_pretrained(out)
