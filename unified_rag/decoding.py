"""One prompt at a time, decoded without `generate`: a preallocated KV cache and the forward's own ops.

At batch 1 every new token reads every weight once, so on a CPU decoding is bound by memory traffic
(SmolLM2-135M in bf16: about 270 MB a token) plus whatever else each step does. HF `generate` adds its own
per-step work (logits processors, cache objects, masks built per step); this loop runs the model's
modules layer by layer over a KV buffer sized once for the whole answer, and nothing else.

`Int8Weights` (opt-in, `GenerationConfig(int8_weights=True)`) halves the bytes a token reads: a
weight-only int8 copy of every projection and the LM head, one scale per output row, multiplied by
torch's int8 weight-only matmul. It is a second copy of those weights at half their size, so it is
built only when asked for, once, and rebuilt if a weight is later changed in place (training).
Embedding, and the prompt's prefill, keep the full-precision weights. On a CPU the int8 loop also
attends in float32 at one-token steps, where torch's bf16 attention kernel is the slower one.

Architectures: Llama-style decoders (Llama, Mistral, Qwen2), the default SmolLM2 among them. Anything
else, or any model whose layers do not look like that, goes through `generate` (`supports`).
"""
from __future__ import annotations

import sys
from typing import Iterator

import torch
import torch.nn.functional as F

from .errors import InputError

ARCHITECTURES = ("llama", "mistral", "qwen2")


def supports(model) -> bool:
    """Whether `LeanDecoder` can run `model`: a Llama-style stack with the modules it calls."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in ARCHITECTURES or getattr(cfg, "use_sliding_window", False):
        return False
    if cfg.model_type == "mistral" and getattr(cfg, "sliding_window", None):  # a window this loop does not apply
        return False
    dec = getattr(model, "model", None)
    layers = getattr(dec, "layers", None)
    if layers is None or not all(hasattr(dec, a) for a in ("embed_tokens", "norm", "rotary_emb")):
        return False
    attn = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim")
    return all(hasattr(layer.self_attn, a) for layer in layers for a in attn) and all(
        hasattr(layer.mlp, a) for layer in layers for a in ("gate_proj", "up_proj", "down_proj", "act_fn"))


def _plain(module):
    """The module a call really needs: a peft-wrapped projection with no adapter on is its base layer
    (saves peft's per-call bookkeeping); one with an adapter on stays itself."""
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    if tuners is not None and isinstance(module, tuners.BaseTunerLayer) and (module.disable_adapters or module.merged):
        return module.get_base_layer()
    return module


def check_int8_matmul(device: torch.device, dtype: torch.dtype) -> None:
    """An InputError where this torch has no int8 weight-only matmul for `dtype` on `device`."""
    x = torch.ones(1, 8, dtype=dtype, device=device)
    try:
        torch.ops.aten._weight_int8pack_mm(x, torch.ones(8, 8, dtype=torch.int8, device=device),
                                           torch.ones(8, dtype=dtype, device=device))
    except (RuntimeError, NotImplementedError) as e:
        raise InputError(f"int8_weights: this torch has no int8 weight-only matmul for {dtype} on {device} ({e})") from e


class Int8Weights:
    """Per-row symmetric int8 copies of Linear weights, made on first use and kept while the weight is
    unchanged (same tensor, same in-place version)."""

    def __init__(self):
        self._packs: dict[int, tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = {}

    @property
    def nbytes(self) -> int:
        return sum(q.numel() * q.element_size() + s.numel() * s.element_size() for _, _, q, s in self._packs.values())

    def linear(self, lin: torch.nn.Linear):
        """A function computing `lin(x)` from the int8 copy of its weight."""
        w, bias = lin.weight, lin.bias
        pack = self._packs.get(id(lin))
        if pack is None or pack[0] is not w or pack[1] != w._version:
            with torch.no_grad():
                scale = w.float().abs().amax(1).clamp_min(1e-12) / 127
                q = (w.float() / scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
            pack = self._packs[id(lin)] = (w, w._version, q, scale.to(w.dtype))
        _, _, q, scale = pack

        def forward(x):
            shape = x.shape
            y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]), q, scale).view(*shape[:-1], -1)
            return y if bias is None else y + bias
        return forward


class LeanDecoder:
    """Greedy or sampled decoding of one prompt, the same arithmetic as the model's own forward."""

    def __init__(self, model, int8: Int8Weights | None = None):
        if not supports(model):
            raise InputError(f"the lean decoder runs Llama-style models ({', '.join(ARCHITECTURES)}), "
                             f"not {getattr(getattr(model, 'config', None), 'model_type', type(model).__name__)}")
        self.model, self.int8 = model, int8

    def _linear(self, module, int8: bool):
        module = _plain(module)
        if int8 and type(module) is torch.nn.Linear:
            return self.int8.linear(module)
        return module

    def _stack(self, int8: bool) -> tuple[list[tuple], object]:
        """Per layer the callables one forward needs, and the LM head."""
        lin = lambda m: self._linear(m, int8)  # noqa: E731
        layers = [(layer.input_layernorm, lin(layer.self_attn.q_proj), lin(layer.self_attn.k_proj),
                   lin(layer.self_attn.v_proj), lin(layer.self_attn.o_proj), layer.post_attention_layernorm,
                   lin(layer.mlp.gate_proj), lin(layer.mlp.up_proj), lin(layer.mlp.down_proj), layer.mlp.act_fn,
                   getattr(layer.self_attn, "scaling", None)) for layer in self.model.model.layers]
        return layers, lin(self.model.lm_head)

    @torch.inference_mode()
    def tokens(self, ids: list[int], max_new_tokens: int, *, eos: int | list[int] | None = None,
               min_new_tokens: int = 0, repetition_penalty: float = 1.0, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
               prefix: tuple[tuple[int, ...], object] | None = None,
               first_bias: dict[int, float] | None = None) -> Iterator[int]:
        """The new tokens, one at a time, up to `max_new_tokens` or the first EOS (not yielded; never
        before `min_new_tokens`). `first_bias`: added to those tokens' logits at the first step only.
        `prefix`: (ids, an HF KV cache of those ids), where `ids` starts with them; only the rest is
        prefilled."""
        model, dec = self.model, self.model.model
        cfg, dev = model.config, dec.embed_tokens.weight.device
        total = len(ids) + max_new_tokens
        # The prompt runs on the full weights: a many-token matmul is compute-bound, where int8 weights
        # only add the dequantising; single-token steps are memory-bound, where they halve the bytes.
        prefill = self._stack(int8=False)
        single = self._stack(int8=True) if self.int8 is not None else prefill
        heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        d = dec.layers[0].self_attn.head_dim
        dtype = dec.embed_tokens.weight.dtype
        # With int8 weights on a CPU, the cache is float32 (the model's values, held exactly) and one-token
        # steps attend in float32: torch's CPU attention kernel runs that shape about 6x faster in float32
        # than in bf16 (decode/attention.log). Full precision keeps the model's own dtype, and so
        # generate's exact arithmetic.
        kv_dtype = torch.float32 if self.int8 is not None and dev.type == "cpu" else dtype
        keys = torch.zeros(len(prefill[0]), 1, kv_heads, total, d, dtype=kv_dtype, device=dev)
        values = torch.zeros_like(keys)
        cos, sin = dec.rotary_emb(dec.embed_tokens.weight[:1], torch.arange(total, device=dev)[None])
        cos, sin = cos[0], sin[0]
        gqa = heads != kv_heads

        def rotate(t, c, s):
            a, b = t.chunk(2, dim=-1)
            return t * c + torch.cat((-b, a), dim=-1) * s

        def forward(new: list[int], start: int) -> torch.Tensor:
            n, end = len(new), start + len(new)
            h = dec.embed_tokens(torch.tensor([new], device=dev))
            c, s = cos[start:end], sin[start:end]
            mask = None
            if n > 1 and start > 0:  # prefill after a cached prefix: causal, offset by it
                mask = torch.arange(end, device=dev)[None] <= torch.arange(start, end, device=dev)[:, None]
            layers, lm_head = single if n == 1 else prefill
            for i, (norm1, q_proj, k_proj, v_proj, o_proj, norm2, gate, up, down, act, scale) in enumerate(layers):
                y = norm1(h)
                q = rotate(q_proj(y).view(1, n, heads, d).transpose(1, 2), c, s)
                keys[i, :, :, start:end] = rotate(k_proj(y).view(1, n, kv_heads, d).transpose(1, 2), c, s)
                values[i, :, :, start:end] = v_proj(y).view(1, n, kv_heads, d).transpose(1, 2)
                att = kv_dtype if n == 1 else dtype  # the prompt attends in the model's dtype, as its forward does
                o = F.scaled_dot_product_attention(q.to(att), keys[i, :, :, :end].to(att), values[i, :, :, :end].to(att),
                                                   attn_mask=mask, is_causal=n > 1 and mask is None, scale=scale,
                                                   enable_gqa=gqa).to(dtype)
                h = h + o_proj(o.transpose(1, 2).reshape(1, n, heads * d))
                y = norm2(h)
                h = h + down(act(gate(y)) * up(y))
            return lm_head(dec.norm(h[:, -1:]))[0, -1].float()

        start = 0
        if prefix is not None:
            start = len(prefix[0])
            for i, (k, v) in enumerate(_cache_tensors(prefix[1])):
                keys[i, :, :, :start], values[i, :, :, :start] = k, v
        stops = sorted(set([eos] if isinstance(eos, int) else eos or []))
        pick = _picker(len(ids), min_new_tokens, stops, repetition_penalty, temperature, top_p, top_k, dev, first_bias)
        seq = torch.tensor([list(ids) + [0] * max_new_tokens], device=dev)  # the ids so far, as processors read them
        logits, pos = forward(ids[start:], start), len(ids)
        for step in range(max_new_tokens):
            token = pick(seq[:, :pos], logits)
            if token in stops:
                return
            yield token
            if step + 1 < max_new_tokens:
                seq[0, pos] = token
                logits, pos = forward([token], pos), pos + 1


class FirstStepBias:
    """A logits processor that adds fixed biases to some tokens at the first generated step only (the
    answer adapter's calibrated lean towards or away from its decline sentence)."""

    def __init__(self, prompt_len: int, bias: dict[int, float]):
        self.prompt_len, self.bias = prompt_len, bias

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] != self.prompt_len:
            return scores
        scores = scores.clone()
        for token, b in self.bias.items():
            scores[:, token] += b
        return scores


def _picker(prompt_len: int, min_new_tokens: int, stops: list[int], penalty: float, temperature: float,
            top_p: float, top_k: int, device, first_bias: dict[int, float] | None = None):
    """The next token from the logits, through the logits processors `generate` uses, in its order:
    repetition penalty (over the prompt too) and EOS held back, then greedy, or temperature, top-k and
    top-p sampling; a first-step bias goes first."""
    from transformers import (LogitsProcessorList, MinNewTokensLengthLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                              TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    procs = LogitsProcessorList()
    if first_bias:
        procs.append(FirstStepBias(prompt_len, first_bias))
    if penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(penalty))
    if min_new_tokens and stops:
        procs.append(MinNewTokensLengthLogitsProcessor(prompt_len, min_new_tokens, stops, device=str(device)))
    sample = temperature > 0
    if sample:
        procs.append(TemperatureLogitsWarper(temperature))
        if top_k > 0:
            procs.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p))

    def pick(seq: torch.Tensor, logits: torch.Tensor) -> int:
        scores = procs(seq, logits[None])[0]
        return int(torch.multinomial(scores.softmax(-1), 1)) if sample else int(scores.argmax())
    return pick


def _cache_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) of an HF cache, [batch, kv_heads, tokens, head_dim] each."""
    if hasattr(cache, "layers"):  # transformers 5.x
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))
