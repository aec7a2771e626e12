"""Pieces the trained embedders share: learned token rows, custom 4-D attention masks, and LoRA
adapters injected into the *shared* model that switch on only inside their embedder's forward.

Outside every `adapter_active()` every LoRA layer is off: the generator and untrained embedders see
the base weights, whatever LoRA embedders were built or used before.

Masks are additive float tensors [B, 1, Q, K] (0 = may attend, dtype-min = may not). transformers
passes a 4-D mask to the attention kernels unchanged (eager and SDPA alike), so bidirectional and
GEM attention need no patched model classes; generation, which never sees these masks, stays causal.
"""
from __future__ import annotations

import torch
from pydantic import Field

from unified_rag.lora import (DEFAULT_TARGETS, adapter_names, check_tensors, inject_lora, lora_parameters, lora_scope,
                               switches_kept, tuner_layers)

from unified_rag.embedder import Embedder, EmbedderConfig


# --- learned tokens ---------------------------------------------------------------------------------
def fresh_token_rows(backbone, k: int, seed: int) -> torch.Tensor:
    """k new input-embedding rows drawn from the per-dimension distribution of the vocabulary rows."""
    vocab = backbone.model.get_input_embeddings().weight.detach().float()
    g = torch.Generator().manual_seed(seed)
    return vocab.mean(0).cpu() + torch.randn(k, vocab.shape[1], generator=g) * vocab.std(0).cpu()


def splice_specials(backbone, input_ids: torch.Tensor, special_mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Input embeddings with the learned rows written at the special positions (K per row, in order)."""
    embeds = backbone.model.get_input_embeddings()(input_ids)
    B = embeds.shape[0]
    special = rows.to(embeds.dtype).unsqueeze(0).expand(B, -1, -1).contiguous()
    return embeds.masked_scatter(special_mask.unsqueeze(-1), special)


# --- masks --------------------------------------------------------------------------------------------
def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, Q, K] bool -> [B, 1, Q, K] additive. Rows that allow nothing (padding) attend to themselves,
    so no softmax is over an empty set."""
    eye = torch.eye(allowed.shape[1], allowed.shape[2], dtype=torch.bool, device=allowed.device)
    allowed = allowed | (~allowed.any(-1, keepdim=True) & eye)
    zero = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return zero.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def bidirectional_allowed(attention_mask: torch.Tensor) -> torch.Tensor:
    """Every real token sees every real token of its row (LLM2Vec)."""
    m = attention_mask.bool()
    return m.unsqueeze(1) & m.unsqueeze(2)


def gem_allowed(attention_mask: torch.Tensor, start: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """GEM: causal, except that the suffix after the k special tokens at [start, start+k) cannot see the
    prefix (it must read it from the specials), and each special sees the prefix and itself only."""
    B, L = attention_mask.shape
    dev = attention_mask.device
    i = torch.arange(L, device=dev).view(1, L, 1)
    j = torch.arange(L, device=dev).view(1, 1, L)
    s, e = start.view(B, 1, 1), (start + k).view(B, 1, 1)
    causal = j <= i
    prefix_j = j < s
    special_i, special_j = (i >= s) & (i < e), (j >= s) & (j < e)
    suffix_i = i >= e
    allowed = causal & ~(suffix_i & prefix_j) & ~(special_i & special_j & (i != j))
    return allowed & attention_mask.bool().unsqueeze(1)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# --- LoRA on the shared model ---------------------------------------------------------------------------
class LoraEmbedderConfig(EmbedderConfig):
    lora_r: int = 16  # 0 = full fine-tuning of the shared weights (saved with the adapter)
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    init_seed: int = 0


# Kept for callers of the old private names; the code lives in the core (unified_rag.lora).
_tuner_layers, _adapter_names, _switches_kept = tuner_layers, adapter_names, switches_kept


class LoraEmbedder(Embedder):
    """An embedder whose adapter lives inside the shared model as a named peft LoRA adapter.

    The adapter is injected in place (peft `inject_adapter_in_model`: no wrapper, no copy) and is
    switched on only inside `adapter_active()`, so the generator and other embedders on the same
    backbone keep the base behaviour, and building one embedder never touches another's switches.
    With lora_r = 0 the method fine-tunes the shared weights themselves, which then change generation
    too, and they are saved with the adapter.
    """

    config_class = LoraEmbedderConfig

    def __init__(self, backbone, config=None, **overrides):
        super().__init__(backbone, config, **overrides)
        self.adapter_name = self.kind.replace("-", "_")
        if self.config.lora_r > 0:  # peft is core: `auto` on SmolLM2 is a LoRA adapter
            c = self.config
            self.adapter_name = inject_lora(backbone.model, self.adapter_name, r=c.lora_r, alpha=c.lora_alpha,
                                            dropout=c.lora_dropout, targets=c.lora_targets, seed=c.init_seed)

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    def lora_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The LoRA tensors of this adapter, under names free of the adapter name."""
        return lora_parameters(self.backbone.model, self.adapter_name)

    def shared_parameters(self) -> dict[str, torch.nn.Parameter]:
        """What this method trains inside the shared model: its LoRA tensors, or every weight (lora_r=0)."""
        if self.config.lora_r > 0:
            return self.lora_parameters()
        return dict(self.backbone.model.named_parameters())

    def adapter_active(self):
        """This embedder's LoRA alone on for the duration (any adapter the caller had on is off, so the
        output never depends on the caller), and every switch restored after. lora_r = 0: all LoRA off.
        Without autograd, large inputs run each LoRA layer as one merged matmul (unified_rag.lora)."""
        return lora_scope(self.backbone.model, self.adapter_name if self.config.lora_r > 0 else None)

    def adapter_state(self):
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        state.update({f"shared.{k}": v.detach().cpu().contiguous() for k, v in self.shared_parameters().items()})
        return state

    def load_adapter_state(self, state):
        shared = {k[len("shared."):]: v for k, v in state.items() if k.startswith("shared.")}
        own = {k: v for k, v in state.items() if not k.startswith("shared.")}
        target = self.shared_parameters()
        check_tensors(shared, target, f"{self.kind} adapter")
        with torch.no_grad():
            for k, v in shared.items():  # written into the shared model in place: still one copy
                target[k].copy_(v.to(target[k].device, target[k].dtype))
        self.load_state_dict(own, strict=True)

    def hidden(self, batch, mask4d=None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Last-layer states with this adapter on, the learned rows spliced in, and an optional 4-D mask."""
        b = self.backbone
        kw = dict(input_ids=batch["input_ids"]) if rows is None else dict(
            inputs_embeds=splice_specials(b, batch["input_ids"], batch["special_mask"], rows))
        if mask4d is None:
            mask4d = batch["attention_mask"]
        with self.adapter_active():
            return b.hidden_states(attention_mask=mask4d, position_ids=positions(batch["attention_mask"]), **kw)
