"""The embedder contract, shared by every method: tokenise, batch by sorted length, pool, save/load;
and `load_embedder`, which finds a kind in the registry (unified_rag.registry).

An embedder owns only its small adapter (projections, special tokens, statistics). The transformer
itself is the shared `Backbone`, held by reference, so the generator and every embedder use one
copy of the weights. The methods themselves live in `embedders/`, above the core, and register
their kinds (pyproject.toml's `unified_rag.embedders` entry points).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, ClassVar, Protocol, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from .backbone import DEFAULT_MODEL, Backbone
from .batching import pad
from .errors import InputError, ModelLoadError
from .io import atomic_write_bytes, atomic_write_json
from .hub import hub_dir, looks_like_hub_id  # noqa: F401  (also their import path before hub.py)
from .registry import lookup, names
from .types import check_positive_int, check_texts

log = logging.getLogger(__name__)

CONFIG_NAME = "embedder_config.json"
WEIGHTS_NAME = "adapter.safetensors"
# Beside an adapter: the cosine below which answer() treats a source as irrelevant, calibrated for that
# adapter on held-out training pairs (`unified-rag bench calibrate`). Not part of the fingerprint.
RELEVANCE_NAME = "relevance.json"


# --- pooling, written once for every embedder --------------------------------------------------------
def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` [B, L, H] over the positions where `mask` [B, L] is set (e.g. the text tokens)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The state of each row's last real token, for either padding side."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), Embedder.last_index(attention_mask)]


class EmbedderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    query_instruction: str | None = "Given a question, retrieve passages that answer it"
    document_instruction: str | None = None
    max_length: int = 512  # tokens per input, special tokens included; longer text is truncated with a warning


class TextEncoder(Protocol):
    """What the pipeline asks of an embedder. `Embedder` (below) is the one built on the shared backbone;
    another class may stand in where no weights are shared, e.g. a benchmark's sentence-transformers
    baseline, with `encode_queries`/`encode_documents` taking (texts, *, batch_size, show_progress_bar,
    warn_truncation, on_batch) and returning [N, dim] float32 unit vectors."""
    kind: str
    dim: int
    reuses_kv: bool  # encode_query_with_kv gives a generation prompt's KV (False: never asked)

    @property
    def fingerprint(self) -> str: ...
    def encode_queries(self, texts, **kw) -> np.ndarray: ...
    def encode_documents(self, texts, **kw) -> np.ndarray: ...
    def query_overflow(self, query: str) -> tuple[int, int] | None: ...


class Embedder(torch.nn.Module):
    kind: ClassVar[str]
    config_class: ClassVar[type[EmbedderConfig]] = EmbedderConfig
    n_special: int = 0  # learned tokens appended after the text (LLM2Vec-Gen, GEM)
    padding_side: str = "right"
    relevance_cut: float | None = None  # from RELEVANCE_NAME; cosines are not comparable across embedders

    def __init__(self, backbone: Backbone, config: EmbedderConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = self.config_class(kind=self.kind, **overrides)
        elif overrides:
            config = config.model_copy(update=overrides)
        if config.kind != self.kind:
            raise ModelLoadError(f"config is for embedder kind {config.kind!r}, not {self.kind!r}")
        self.backbone = backbone  # a plain attribute, not a submodule: never copied, never saved here
        self.config = config

    # --- to be provided by each method ---------------------------------------------------
    @property
    def dim(self) -> int:
        raise NotImplementedError

    def embed_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, dim] float32 embeddings, before L2 normalisation."""
        raise NotImplementedError

    def frame(self, instruction: str | None) -> tuple[list[int], list[int]]:
        """Token ids placed before and after the text. Default: the instruction on its own line."""
        tok = self.backbone.tokenizer
        head = tok(f"{instruction}\n" if instruction else "", add_special_tokens=True)["input_ids"]
        return list(head), []

    # --- published checkpoints (their own file layouts), found by load_embedder ----------------
    @classmethod
    def claims_backbone(cls, backbone: Backbone) -> bool:
        """Whether embedder="auto" on this backbone means this kind (a published model's own config)."""
        return False

    @classmethod
    def for_backbone(cls, backbone: Backbone) -> Embedder:
        return cls(backbone)

    @classmethod
    def claims_dir(cls, path: Path) -> bool:
        """Whether `path`, which is not this library's adapter dir, is this kind's published layout."""
        return False

    @classmethod
    def from_published(cls, path: Path, *, backbone: Backbone) -> Embedder:
        raise NotImplementedError

    # --- tokenisation and batching ---------------------------------------------------------
    def tokenize(self, texts: Sequence[str], instruction: str | None, *, max_length: int | None = None,
                 warn: bool = True) -> list[tuple[list[int], int, int]]:
        """Per text: (ids, n_head, n_text). Only the text is ever truncated, never the frame or specials.
        `max_length` lowers the config's cap (trainers cut queries and passages to their own lengths)."""
        head, tail = self.frame(instruction)
        cap = min(self.config.max_length, self.backbone.max_length, max_length or self.config.max_length)
        budget = cap - len(head) - len(tail) - self.n_special
        if budget < 1:
            raise InputError(f"instruction leaves no room for text within max_length={cap}")
        bodies = self.backbone.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        n_cut = sum(len(b) > budget for b in bodies)
        if n_cut and warn:
            warnings.warn(f"{n_cut} of {len(bodies)} texts exceed {budget} tokens and only their first {budget} "
                          "tokens were embedded (the rest was truncated); UnifiedRAG's chunker splits long documents instead", stacklevel=3)
        return [(head + b[:budget] + tail, len(head), min(len(b), budget)) for b in bodies]

    def text_budget(self, instruction: str | None) -> int:
        """How many text tokens fit beside the instruction frame and the special tokens."""
        head, tail = self.frame(instruction)
        return min(self.config.max_length, self.backbone.max_length) - len(head) - len(tail) - self.n_special

    def query_budget(self) -> int:
        """How many tokens of a query `encode_queries` embeds."""
        return self.text_budget(self.config.query_instruction)

    # Whether `encode_query_with_kv` gives the KV cache of a question-first RAG prompt's opening
    # (embedders.pooling with query_frame="chat"); adapters and special tokens change the KV, so no.
    reuses_kv: bool = False

    def collate(self, items: list[tuple[list[int], int, int]]) -> dict[str, torch.Tensor]:
        n_sp, pad_id = self.n_special, self.backbone.tokenizer.pad_token_id
        # The special tokens' slots follow each row's ids; their input ids are the pad id (embeddings
        # of the learned rows are spliced in there).
        input_ids, attention_mask = pad([ids + [pad_id] * n_sp for ids, _, _ in items], pad_id, self.padding_side)
        width = input_ids.shape[1]
        text_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
        special_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
        for i, (ids, n_head, n_text) in enumerate(items):
            n = len(ids) + n_sp
            start = width - n if self.padding_side == "left" else 0
            text_mask[i, start + n_head:start + n_head + n_text] = True
            special_mask[i, start + len(ids):start + n] = True
        dev = self.backbone.device
        return {k: v.to(dev) for k, v in dict(input_ids=input_ids, attention_mask=attention_mask,
                                               text_mask=text_mask, special_mask=special_mask).items()}

    @staticmethod
    def last_index(attention_mask: torch.Tensor) -> torch.Tensor:
        """Position of the last real token in each row, for either padding side."""
        width = attention_mask.shape[1]
        return width - 1 - attention_mask.flip(-1).argmax(-1)

    # --- the public API ------------------------------------------------------------------------
    def encode(self, texts: str | Sequence[str], *, instruction: str | None = None, batch_size: int = 32,
               normalize: bool = True, show_progress_bar: bool | None = None,
               warn_truncation: bool = True, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """`on_batch(n)` is called after each batch with its number of texts (a caller's progress bar)."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            raise InputError("encode() got no texts")
        check_texts(texts)
        check_positive_int(batch_size, "batch_size")
        items = self.tokenize(texts, instruction, warn=warn_truncation)
        order = np.argsort([-len(ids) for ids, _, _ in items], kind="stable")  # little padding per batch
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        show = len(texts) >= 256 if show_progress_bar is None else show_progress_bar
        starts = range(0, len(texts), batch_size)
        with torch.inference_mode():
            for s in tqdm(starts, desc=f"encode ({self.kind})", disable=not show, unit="batch"):
                idx = order[s:s + batch_size]
                emb = self.embed_batch(self.collate([items[i] for i in idx])).float()
                if normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                out[idx] = emb.cpu().numpy()
                if on_batch is not None:
                    on_batch(len(idx))
        return out[0] if single else out

    def encode_queries(self, texts, **kw) -> np.ndarray:
        kw.setdefault("instruction", self.config.query_instruction)
        return self.encode(texts, **kw)

    def query_overflow(self, query: str) -> tuple[int, int] | None:
        """(tokens, budget) when `encode_queries` would cut this query, else None: the retriever warns."""
        budget = self.query_budget()
        n = len(self.backbone.tokenizer(query, add_special_tokens=False)["input_ids"])
        return (n, budget) if n > budget else None

    def encode_documents(self, texts, **kw) -> np.ndarray:
        kw.setdefault("instruction", self.config.document_instruction)
        return self.encode(texts, **kw)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, dim={self.dim}, backbone={self.backbone.name!r}"

    # --- persistence -----------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def config_key(self) -> str:
        """The config as the fingerprint hashes it."""
        return self.config.model_dump_json()

    @property
    def fingerprint(self) -> str:
        """Hash of config and adapter tensors: two embedders with equal fingerprints embed alike."""
        h = hashlib.sha256(self.config_key().encode())
        h.update(self.backbone.fingerprint.encode())
        for k, v in sorted(self.adapter_state().items()):
            h.update(k.encode() + v.float().numpy().tobytes())
        return h.hexdigest()[:16]

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save as save_bytes

        atomic_write_bytes(path / WEIGHTS_NAME, save_bytes(self.adapter_state()))
        if self.relevance_cut is not None:
            atomic_write_json(path / RELEVANCE_NAME, {"min_relevance": self.relevance_cut})
        atomic_write_json(path / CONFIG_NAME, {**self.config.model_dump(), "backbone": self.backbone.name,
                                               "backbone_fingerprint": self.backbone.fingerprint})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, backbone: Backbone) -> Embedder:
        path = Path(path)
        cfg_path = path / CONFIG_NAME
        if not cfg_path.is_file():
            raise ModelLoadError(f"{path} is not an embedder dir: {CONFIG_NAME} is missing")
        try:
            raw = json.loads(cfg_path.read_text())
            kind = raw["kind"]
            trained_on = raw.pop("backbone", None), raw.pop("backbone_fingerprint", None)
            klass = embedder_class(kind) if cls is Embedder else cls
            config = klass.config_class.model_validate(raw)
        except KeyError as e:
            raise ModelLoadError(f"{cfg_path}: missing field {e}") from None
        except (ValueError, TypeError) as e:
            raise ModelLoadError(f"{cfg_path} is not a valid embedder config: {e}") from None
        if trained_on[1] and trained_on[1] != backbone.fingerprint:
            log.warning("adapter %s was made for backbone %s, loading onto %s", path, trained_on[0], backbone.name)
        emb = klass(backbone, config)
        emb.relevance_cut = _relevance_cut(path)
        if (path / WEIGHTS_NAME).is_file():
            try:
                state = load_file(path / WEIGHTS_NAME)
                for k, v in state.items():  # NaN statistics or weights would embed everything as NaN, silently
                    if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                        raise ModelLoadError(f"{path / WEIGHTS_NAME}: tensor {k!r} holds NaN or infinite values; "
                                             "the adapter file is corrupt")
                emb.load_adapter_state(state)
            except (RuntimeError, OSError, ValueError, SafetensorError) as e:  # garbage bytes: SafetensorError
                raise ModelLoadError(f"{path / WEIGHTS_NAME} does not fit this embedder/backbone: {e}") from None
        return emb

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state, strict=True)


def _relevance_cut(path: Path) -> float | None:
    if not (path / RELEVANCE_NAME).is_file():
        return None
    try:
        cut = json.loads((path / RELEVANCE_NAME).read_text())["min_relevance"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{path / RELEVANCE_NAME} is not a valid relevance file: {e}") from None
    if not isinstance(cut, (int, float)) or isinstance(cut, bool) or not -1 <= cut <= 1:
        raise ModelLoadError(f"{path / RELEVANCE_NAME}: min_relevance must be a cosine in [-1, 1], got {cut!r}")
    return float(cut)


def cast_adapter(src: str | os.PathLike, dst: str | os.PathLike, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A copy of the adapter dir `src` at `dst` with its floating tensors stored in `dtype`: bf16
    halves what a shipped adapter weighs. Loading casts each tensor back to the model's dtype."""
    from safetensors.torch import save as save_bytes

    src, dst = Path(src), Path(dst)
    if not (src / CONFIG_NAME).is_file():
        raise ModelLoadError(f"{src} is not an embedder dir: {CONFIG_NAME} is missing")
    try:
        state = load_file(src / WEIGHTS_NAME) if (src / WEIGHTS_NAME).is_file() else {}
    except (OSError, SafetensorError) as e:
        raise ModelLoadError(f"{src / WEIGHTS_NAME} is not a readable safetensors file: {e}") from None
    dst.mkdir(parents=True, exist_ok=True)
    if state:
        atomic_write_bytes(dst / WEIGHTS_NAME, save_bytes(
            {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}))
    if (src / RELEVANCE_NAME).is_file():
        atomic_write_bytes(dst / RELEVANCE_NAME, (src / RELEVANCE_NAME).read_bytes())
    atomic_write_bytes(dst / CONFIG_NAME, (src / CONFIG_NAME).read_bytes())  # config last: the dir is whole
    return dst



ASSETS = Path(__file__).parent / "assets"
# What embedder="auto" gives on the default backbone: the best adapter that ships, as measured on
# SciFact (docs/results.md): LLM2Vec's supervised contrastive LoRA, trained on the real pairs.
# "mean-std" (standardised mean pooling, no training) was the default before it and stays for
# comparison. Other backbones fall back to untrained mean pooling.
AUTO_ADAPTER = {DEFAULT_MODEL: ASSETS / "smollm2-135m-instruct" / "llm2vec-supervised"}


def embedder_class(kind: str) -> type[Embedder]:
    """The class registered for an embedder kind; ModelLoadError naming the known kinds otherwise."""
    klass = lookup("embedders", kind)
    if klass is None:
        raise ModelLoadError(f"unknown embedder kind {kind!r}: known kinds are {', '.join(names('embedders'))}")
    return klass


def load_embedder(spec: str | os.PathLike | Embedder = "auto", backbone: Backbone | None = None) -> Embedder:
    """An embedder on `backbone`: "auto", a kind name ("mean", "last", "llm2vec-gen"), or an adapter dir."""
    if isinstance(spec, Embedder):
        if backbone is not None and spec.backbone is not backbone:
            raise ModelLoadError("the embedder was built on another Backbone object; pass that one, "
                                 "so that only one copy of the weights is in memory")
        return spec
    if backbone is None:
        raise ModelLoadError("load_embedder needs the shared backbone")
    spec = str(spec)
    if spec == "auto":
        adapter = AUTO_ADAPTER.get(backbone.name)
        if adapter is not None and (adapter / CONFIG_NAME).is_file():
            return Embedder.from_pretrained(adapter, backbone=backbone)
        found = published_embedder(backbone)
        if found is not None:
            return found
        log.info("no shipped adapter for %s: using untrained mean pooling", backbone.name)
        spec = "mean"
    if spec in names("embedders"):
        return embedder_class(spec)(backbone)
    if Path(spec).is_dir():
        return _from_dir(Path(spec), backbone)
    if looks_like_hub_id(spec):
        return _from_dir(hub_dir(spec, "an embedder adapter"), backbone)
    raise ModelLoadError(f"unknown embedder {spec!r}: use 'auto', one of {names('embedders')}, an adapter dir, "
                         "or a hub id (user/adapter)")


def published_embedder(backbone: Backbone) -> Embedder | None:
    """The embedder a published checkpoint's own files call for, where "auto" should use it (GritLM's
    config, an LLM2Vec MNTP release): the first registered kind that claims the backbone."""
    for kind in names("embedders"):
        klass = embedder_class(kind)
        if klass.claims_backbone(backbone):
            return klass.for_backbone(backbone)
    return None


def _from_dir(path: Path, backbone: Backbone) -> Embedder:
    """This library's adapter dir, or a published one that a registered kind claims (LLM2Vec's)."""
    if not (path / CONFIG_NAME).is_file():
        for kind in names("embedders"):
            klass = embedder_class(kind)
            if klass.claims_dir(path):
                return klass.from_published(path, backbone=backbone)
    return Embedder.from_pretrained(path, backbone=backbone)
