"""LoRA adapters injected into the *shared* model, each switched on only inside its own scope.

Every adapter on the backbone (an embedder's, the generator's answer adapter) is a named peft LoRA
adapter injected in place (`inject_adapter_in_model`: no wrapper, no copy of the weights). A new
adapter starts switched off, and `lora_scope(model, name)` turns that one adapter alone on for its
duration and restores every switch after; outside every scope the model is the base model.
"""
from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager

import torch

# Inference with the adapter merged: peft runs W·x + B·(A·x) as three matmuls plus a full-width add per
# layer, which cost the shipped embedder 27% of its encode time against the same forward without LoRA
# (docs/results.md, Throughput). W + s·B·A is formed per call in one addmm (one rounding), used for that
# call and dropped: W is never written, so other users of the weights keep them bit for bit, and at
# most one layer's merged matrix exists at a time. Forming it reads and writes the whole matrix, which
# beats peft's extra activations only when the input has at least as many tokens as the layer has
# input features.
MERGE_AT_INFERENCE = True
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tuner_layers(model) -> list:
    # No module can be a peft layer before peft is imported, so a model without LoRA needs no peft.
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    return [] if tuners is None else [m for m in model.modules() if isinstance(m, tuners.BaseTunerLayer)]


def adapter_names(layer) -> set[str]:
    """The adapters a peft layer holds, read from its public `adapter_layer_names` (e.g. lora_A), each a
    dict keyed by adapter name (peft's own helper for this is private)."""
    return {name for attr in layer.adapter_layer_names
            for name in (getattr(layer, attr, None) or {}).keys()}


def taken_names(model) -> set[str]:
    return {n for m in tuner_layers(model) for n in adapter_names(m)}


@contextmanager
def switches_kept(model):
    """Every LoRA layer's switches (on/off, which adapters) and requires_grad flags as they were, after
    whatever happens inside. peft's switches set requires_grad as a side effect, and a flag flipped
    before backward would silently drop gradients."""
    layers = tuner_layers(model)
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


def inject_lora(model, name: str, *, r: int, alpha: int, dropout: float, targets, seed: int,
                layers: list[int] | None = None) -> str:
    """Inject a LoRA adapter into `model` under `name` (or `name_2`, ... when taken), switched off and
    frozen; returns the name it got. A: drawn from `seed`, whatever the process did before.
    `layers`: only these decoder layers' modules (None: every matching module)."""
    from peft import LoraConfig, inject_adapter_in_model

    taken, unique, n = taken_names(model), name, 1
    while unique in taken:  # two adapters of one kind on one backbone: distinct names
        n += 1
        unique = f"{name}_{n}"
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                     layers_to_transform=list(layers) if layers is not None else None)
    grads = {id(p): p.requires_grad for p in model.parameters()}
    existing = {id(m) for m in tuner_layers(model)}
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]), switches_kept(model):
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        torch.manual_seed(seed)
        inject_adapter_in_model(cfg, model, adapter_name=unique)
    model.train(model.training)  # new LoRA dropout modules start in train mode; follow the model
    for m in tuner_layers(model):
        if id(m) not in existing:
            m.enable_adapters(False)  # a newly wrapped layer starts off: everyone else keeps the base weights
    for p in model.parameters():
        p.requires_grad_(grads.get(id(p), False))  # new LoRA weights start frozen; trainers opt in
    return unique


def lora_parameters(model, name: str) -> dict[str, torch.nn.Parameter]:
    """The LoRA tensors of adapter `name`, under names free of the adapter name."""
    tag = f".{name}."
    return {n.replace(tag, "."): p for n, p in model.named_parameters() if tag in n}


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


@contextmanager
def lora_scope(model, name: str | None):
    """Adapter `name` alone on for the duration (None: every LoRA off), whatever the caller had on, and
    every switch restored after. Without autograd, large inputs run each LoRA layer as one merged matmul."""
    patched = []
    with switches_kept(model):
        try:
            for m in tuner_layers(model):
                mine = name is not None and name in adapter_names(m)
                if mine:
                    m.set_adapter(name)
                    if MERGE_AT_INFERENCE and _mergeable(m, name):
                        patched.append((m, m.__dict__.get("forward")))
                        m.forward = _merged_forward(m, name)
                m.enable_adapters(mine)
            yield
        finally:
            for m, previous in patched:  # each layer gets back the forward it had before
                if previous is None:
                    del m.forward
                else:
                    m.forward = previous


def check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where) -> None:
    """Refuse an adapter whose tensors are missing, unexpected, of the wrong shape or not finite, with
    a typed error naming the tensor: retrieval or generation on NaN weights would fail silently."""
    from .errors import ModelLoadError

    if set(state) != set(expected):
        raise ModelLoadError(f"{where}: adapter tensors do not match: missing {sorted(set(expected) - set(state))[:3]}, "
                             f"unexpected {sorted(set(state) - set(expected))[:3]}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ModelLoadError(f"{where}: tensor {k!r} has shape {tuple(v.shape)}, "
                                 f"expected {tuple(expected[k].shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ModelLoadError(f"{where}: tensor {k!r} holds NaN or infinite values; the file is corrupt")
