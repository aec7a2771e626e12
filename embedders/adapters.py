"""Pieces the trained embedders share: learned token rows, custom 4-D attention masks, and LoRA
adapters injected into the *shared* model that switch on only inside their embedder's forward.

Outside every `adapter_active()` every LoRA layer is off: the generator and untrained embedders see
the base weights, whatever LoRA embedders were built or used before.

Masks are additive float tensors [B, 1, Q, K] (0 = may attend, dtype-min = may not). transformers
passes a 4-D mask to the attention kernels unchanged (eager and SDPA alike), so bidirectional and
GEM attention need no patched model classes; generation, which never sees these masks, stays causal.
"""
from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager

import torch
from pydantic import Field

from unified_rag.errors import ModelLoadError

from .base import Embedder, EmbedderConfig


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
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                              "gate_proj", "up_proj", "down_proj"])
    init_seed: int = 0


def _tuner_layers(model):
    # No module can be a peft layer before peft is imported, so a lora_r = 0 embedder needs no peft.
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    return [] if tuners is None else [m for m in model.modules() if isinstance(m, tuners.BaseTunerLayer)]


def _adapter_names(layer) -> set[str]:
    """The adapters a peft layer holds, read from its public `adapter_layer_names` (e.g. lora_A), each a
    dict keyed by adapter name (peft's own helper for this is private)."""
    return {name for attr in layer.adapter_layer_names
            for name in (getattr(layer, attr, None) or {}).keys()}


@contextmanager
def _switches_kept(model):
    """Every LoRA layer's switches (on/off, which adapters) and requires_grad flags as they were, after
    whatever happens inside. peft's switches set requires_grad as a side effect, and a flag flipped
    before backward would silently drop gradients."""
    layers = _tuner_layers(model)
    saved = [(m, list(m.active_adapters), m.disable_adapters) for m in layers]
    grads = [(p, p.requires_grad) for m in layers for p in m.parameters()]
    try:
        yield
    finally:
        for m, active, disabled in saved:
            m.set_adapter(active)
            m.enable_adapters(not disabled)
        for p, g in grads:
            p.requires_grad_(g)


# Inference with the adapter merged: peft runs W·x + B·(A·x) as three matmuls plus a full-width add per
# layer, which cost the shipped embedder 27% of its encode time against the same forward without LoRA
# (README, Throughput). W + s·B·A is formed per call in one addmm (one rounding), used for that call and
# dropped: W is never written, so generation keeps its weights bit for bit, and at most one layer's
# merged matrix exists at a time. Forming it reads and writes the whole matrix, which beats peft's
# extra activations only when the input has at least as many tokens as the layer has input features.
MERGE_AT_INFERENCE = True


def _mergeable(layer, adapter: str) -> bool:
    from peft.tuners.lora.layer import Linear

    return (type(layer) is Linear and not layer.fan_in_fan_out and adapter not in layer.lora_variant
            and not layer.lora_bias.get(adapter, False) and isinstance(layer.get_base_layer(), torch.nn.Linear))


def _merged_forward(layer, adapter: str):
    base, A, B = layer.get_base_layer(), layer.lora_A[adapter], layer.lora_B[adapter]
    drop = layer.lora_dropout[adapter]

    def forward(x, *args, **kwargs):
        dropout_on = isinstance(drop, torch.nn.Dropout) and drop.training and drop.p > 0
        switched_away = layer.disable_adapters or list(layer.active_adapters) != [adapter]  # by a nested scope
        if (torch.is_grad_enabled() or dropout_on or switched_away
                or x.numel() // x.shape[-1] < base.in_features):
            return type(layer).forward(layer, x, *args, **kwargs)
        W = base.weight
        merged = torch.addmm(W, B.weight.to(W.dtype), A.weight.to(W.dtype), alpha=layer.scaling[adapter])
        return torch.nn.functional.linear(x.to(W.dtype), merged, base.bias)
    return forward


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
        if self.config.lora_r > 0:
            from peft import LoraConfig, inject_adapter_in_model  # core: `auto` on SmolLM2 is a LoRA adapter

            model = backbone.model
            taken = {n for m in _tuner_layers(model) for n in _adapter_names(m)}
            base, n = self.adapter_name, 1
            while self.adapter_name in taken:  # two embedders of one kind on one backbone: distinct adapters
                n += 1
                self.adapter_name = f"{base}_{n}"
            cfg = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                             lora_dropout=self.config.lora_dropout, target_modules=self.config.lora_targets)
            grads = {id(p): p.requires_grad for p in model.parameters()}
            existing = {id(m) for m in _tuner_layers(model)}
            # LoRA A is drawn at random: seed it, so a run does not depend on what the process did before.
            with warnings.catch_warnings(), torch.random.fork_rng(devices=[]), _switches_kept(model):
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                torch.manual_seed(self.config.init_seed)
                inject_adapter_in_model(cfg, model, adapter_name=self.adapter_name)
            model.train(model.training)  # new LoRA dropout modules start in train mode; follow the model
            for m in _tuner_layers(model):
                if id(m) not in existing:
                    m.enable_adapters(False)  # a newly wrapped layer starts off: generation keeps the base weights
            for p in model.parameters():
                p.requires_grad_(grads.get(id(p), False))  # new LoRA weights start frozen; trainers opt in

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    def lora_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The LoRA tensors of this adapter, under names free of the adapter name."""
        tag = f".{self.adapter_name}."
        return {n.replace(tag, "."): p for n, p in self.backbone.model.named_parameters() if tag in n}

    def shared_parameters(self) -> dict[str, torch.nn.Parameter]:
        """What this method trains inside the shared model: its LoRA tensors, or every weight (lora_r=0)."""
        if self.config.lora_r > 0:
            return self.lora_parameters()
        return dict(self.backbone.model.named_parameters())

    @contextmanager
    def adapter_active(self):
        """This embedder's LoRA alone on for the duration (any adapter the caller had on is off, so the
        output never depends on the caller), and every switch restored after. lora_r = 0: all LoRA off.
        Without autograd, large inputs run each LoRA layer as one merged matmul (`_merged_forward`)."""
        model = self.backbone.model
        patched = []
        with _switches_kept(model):
            try:
                for m in _tuner_layers(model):
                    mine = self.config.lora_r > 0 and self.adapter_name in _adapter_names(m)
                    if mine:
                        m.set_adapter(self.adapter_name)
                        if MERGE_AT_INFERENCE and _mergeable(m, self.adapter_name):
                            patched.append((m, m.__dict__.get("forward")))
                            m.forward = _merged_forward(m, self.adapter_name)
                    m.enable_adapters(mine)
                yield
            finally:
                for m, previous in patched:  # each layer gets back the forward it had before
                    if previous is None:
                        del m.forward
                    else:
                        m.forward = previous

    def adapter_state(self):
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        state.update({f"shared.{k}": v.detach().cpu().contiguous() for k, v in self.shared_parameters().items()})
        return state

    def load_adapter_state(self, state):
        shared = {k[len("shared."):]: v for k, v in state.items() if k.startswith("shared.")}
        own = {k: v for k, v in state.items() if not k.startswith("shared.")}
        target = self.shared_parameters()
        if set(shared) != set(target):
            raise ModelLoadError(f"adapter tensors do not match: missing {sorted(set(target) - set(shared))[:3]}, "
                                 f"unexpected {sorted(set(shared) - set(target))[:3]}")
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
