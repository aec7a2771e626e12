"""Published checkpoints whose folders are not a plain HF model: what the backbone loader must read
from them (the model weights they point at). Their embedders read the rest (embedders/*_official.py).

    an LLM2Vec MNTP release   adapter_config.json + adapter_model.safetensors (a LoRA on a base model)
    an LLM2Vec-Gen checkpoint run_config.yml (model_name_or_path, special_tokens, ...) + encoder/ + heads
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import torch

from .errors import ModelLoadError


def is_llm2vec_gen(src) -> bool:
    return isinstance(src, Path) and (src / "run_config.yml").is_file() and (src / "encoder").is_dir()


def read_run_config(path: Path) -> dict:
    """run_config.yml as the official code writes it (one `key: value` a line, Python reprs): the fields
    needed here, read without a YAML or pickle loader."""
    f = path / "run_config.yml"
    if not f.is_file():
        raise ModelLoadError(f"{f} is missing: not an LLM2Vec-Gen checkpoint")
    out = {}
    for line in f.read_text().splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in ("model_name_or_path", "torch_dtype", "encoding_mode", "special_tokens"):
            out[key] = ast.literal_eval(value) if key == "special_tokens" else value.strip()
    missing = {"model_name_or_path", "special_tokens"} - set(out)
    if missing:
        raise ModelLoadError(f"{f}: missing {', '.join(sorted(missing))}")
    return out


def read_json(f: Path, default: dict | None = None) -> dict:
    """A checkpoint's JSON file; `default` when it is absent (an optional file), else a typed error naming it."""
    if not f.is_file():
        if default is not None:
            return default
        raise ModelLoadError(f"{f} is missing")
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise ModelLoadError(f"{f} is not valid JSON: {e}") from None


def peft_name(key: str) -> str:
    """A peft adapter's tensor name on the inner model (`base_model.model.layers.0...`) as the causal
    LM's parameter name (`model.layers.0...`)."""
    return "model." + key.removeprefix("base_model.model.").removeprefix("model.")


def lora_dir(src) -> dict | None:
    """A local dir holding a peft LoRA adapter (adapter_config.json) instead of a model: its config."""
    f = Path(src) / "adapter_config.json"
    if not (isinstance(src, Path) and f.is_file()) or (Path(src) / "model.safetensors").is_file():
        return None
    cfg = read_json(f)
    if cfg.get("peft_type") != "LORA" or not cfg.get("base_model_name_or_path"):
        raise ModelLoadError(f"{f}: only LoRA adapters that name their base_model_name_or_path can be loaded as a backbone")
    return cfg


def adapter_base(src: Path, base: str) -> Path | str:
    """A checkpoint's base model, resolved as the official loaders do (against the working directory),
    then against the checkpoint's parent folder, then as a hub id."""
    for cand in (Path(base).expanduser(), Path(src).parent / base):
        if (cand / "config.json").is_file():
            return cand
    if Path(base).is_absolute() or base.startswith("."):
        raise ModelLoadError(f"{src} names base model {base!r}, which is not a model dir")
    return base


def merge_lora(model, src: Path, cfg: dict) -> None:
    """W += (alpha / r) B A for every LoRA pair of the adapter, in place: the one copy of the weights
    becomes the merged model, which generation then uses too (as the official release does)."""
    from safetensors.torch import load_file

    f = Path(src) / "adapter_model.safetensors"
    if not f.is_file():
        raise ModelLoadError(f"{f} is missing: the LoRA adapter's weights")
    state, scale = load_file(f), cfg["lora_alpha"] / cfg["r"]
    params = dict(model.named_parameters())
    pairs = {k[:-len(".lora_A.weight")] for k in state if k.endswith(".lora_A.weight")}
    if not pairs:
        raise ModelLoadError(f"{f} holds no LoRA weights")
    with torch.no_grad():
        for key in sorted(pairs):
            name = peft_name(key) + ".weight"
            a, b = state.get(f"{key}.lora_A.weight"), state.get(f"{key}.lora_B.weight")
            if name not in params or b is None or params[name].shape != (b.shape[0], a.shape[1]):
                raise ModelLoadError(f"{f}: {key} does not fit the base model")
            params[name] += scale * (b.float() @ a.float())
