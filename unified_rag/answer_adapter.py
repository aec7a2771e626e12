"""The generator's own LoRA adapter on the shared backbone, tuned to read numbered sources, answer in a
few words, cite the source it read the answer from, and decline when none holds it.

It lives in the shared model like an embedder's adapter and is on only while the generator runs
(`Generator(..., adapter=)` enters `active()` around every generation call): embedding never sees
it, and generation without it is the base model. Saved as `adapter.safetensors` + `answer_config.json`.
Trained by `unified-rag train answer` (trainers/answer.py).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError
from safetensors.torch import load_file

from .backbone import DEFAULT_MODEL, Backbone
from .hub import hub_dir, looks_like_hub_id
from .errors import ModelLoadError
from .io import atomic_write_bytes, atomic_write_json
from .lora import DEFAULT_TARGETS, check_tensors, inject_lora, lora_parameters, lora_scope
from .types import DECLINE_TEXT

CONFIG_NAME = "answer_config.json"
WEIGHTS_NAME = "adapter.safetensors"
# What the tuned model writes when no source holds the answer. Its first word opens no short answer
# in the training data, so a decline is told from an answer at the first token.
ASSETS = Path(__file__).parent / "assets"
# What generator_adapter="auto" loads on each backbone that has one shipped.
AUTO_ANSWER_ADAPTER = {DEFAULT_MODEL: ASSETS / "smollm2-135m-instruct" / "answer"}


ReadingMode = Literal["joint", "per-source"]
READING_MODES: tuple[str, ...] = get_args(ReadingMode)


class AnswerAdapterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "answer"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    # Only these decoder layers carry LoRA (None: all). Training backpropagates no lower than the lowest.
    lora_layers: list[int] | None = None
    init_seed: int = 0
    decline_text: str = DECLINE_TEXT
    # Added to the decline sentence's first-token logit at the first step: calibrated on held-out
    # questions (trainers/answer.py, calibrate_decline) to trade false declines against missed ones.
    decline_bias: float = 0.0
    # The answer is copied from a source: a penalty on tokens already in the prompt would push it away
    # from the very words it must copy. Used while the adapter is on, unless the caller sets one.
    repetition_penalty: float = 1.0
    # "joint": every source in one prompt. "per-source": each source in its own one-source prompt, and
    # the answer read from the one whose prompt leans least to declining (declining when even that one
    # does); decline_bias must then be fitted on that reading (calibrate-answer --pipeline --reading).
    reading: ReadingMode = "joint"


class AnswerAdapter(torch.nn.Module):
    """A LoRA adapter for answering, injected into `backbone.model` (no copy of the weights)."""

    def __init__(self, backbone: Backbone, config: AnswerAdapterConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = AnswerAdapterConfig(**overrides)
        elif overrides:
            config = config.model_copy(update=overrides)
        self.backbone, self.config = backbone, config  # backbone: a plain attribute, never a submodule
        self.adapter_name = inject_lora(backbone.model, "answer", r=config.lora_r, alpha=config.lora_alpha,
                                        dropout=config.lora_dropout, targets=config.lora_targets,
                                        seed=config.init_seed, layers=config.lora_layers)

    def active(self):
        """This adapter alone on for the duration; every switch as it was after."""
        return lora_scope(self.backbone.model, self.adapter_name)

    def shared_parameters(self) -> dict[str, torch.nn.Parameter]:
        return lora_parameters(self.backbone.model, self.adapter_name)

    def declined(self, text: str) -> bool:
        """Whether a generated answer is the decline sentence (it may be cut short by the token budget)."""
        said, decline = " ".join(text.split()).lower(), self.config.decline_text.lower()
        return bool(said) and (said.startswith(decline) or (len(said) >= 12 and decline.startswith(said)))

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {f"shared.{k}": v.detach().cpu().contiguous() for k, v in self.shared_parameters().items()}

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(self.config.model_dump_json().encode())
        h.update(self.backbone.fingerprint.encode())
        for k, v in sorted(self.adapter_state().items()):
            h.update(k.encode() + v.float().numpy().tobytes())
        return h.hexdigest()[:16]

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Weights then config (the config last: a dir with it is whole). `dtype`: store the tensors in
        it (bf16 halves a shipped adapter); loading casts them back to the model's dtype."""
        from safetensors.torch import save as save_bytes

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.to(dtype) if dtype else v for k, v in self.adapter_state().items()}
        atomic_write_bytes(path / WEIGHTS_NAME, save_bytes(state))
        atomic_write_json(path / CONFIG_NAME, {**self.config.model_dump(), "backbone": self.backbone.name,
                                               "backbone_fingerprint": self.backbone.fingerprint})
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, backbone: Backbone) -> AnswerAdapter:
        path = Path(path)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise ModelLoadError(f"{path} is not an answer adapter dir: {name} is missing")
        try:
            raw = json.loads((path / CONFIG_NAME).read_text())
            raw.pop("backbone", None), raw.pop("backbone_fingerprint", None)
            config = AnswerAdapterConfig.model_validate(raw)
        except (ValueError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"{path / CONFIG_NAME} is not a valid answer adapter config: {e}") from None
        try:
            state = load_file(path / WEIGHTS_NAME)
        except (OSError, SafetensorError) as e:
            raise ModelLoadError(f"{path / WEIGHTS_NAME} is not a readable safetensors file: {e}") from None
        adapter = cls(backbone, config)
        target = adapter.shared_parameters()
        shared = {k.removeprefix("shared."): v for k, v in state.items()}
        check_tensors(shared, target, path / WEIGHTS_NAME)
        with torch.no_grad():
            for k, v in shared.items():  # into the shared model in place: still one copy
                target[k].copy_(v.to(target[k].device, target[k].dtype))
        return adapter


def load_answer_adapter(spec, backbone: Backbone) -> AnswerAdapter | None:
    """None, an AnswerAdapter (on this backbone), "auto" (the shipped one for this backbone, if any), a
    dir, or a hub id ("user/adapter")."""
    if spec is None:
        return None
    if isinstance(spec, AnswerAdapter):
        if spec.backbone is not backbone:
            raise ModelLoadError("the answer adapter was built on another Backbone object; pass that one, "
                                 "so that only one copy of the weights is in memory")
        return spec
    if str(spec) == "auto":
        shipped = AUTO_ANSWER_ADAPTER.get(backbone.name)
        if shipped is None or not (shipped / CONFIG_NAME).is_file():
            return None
        spec = shipped
    if not Path(spec).exists() and looks_like_hub_id(str(spec)):
        spec = hub_dir(str(spec), "an answer adapter")
    # Loading the same files again (every UnifiedRAG.load does) reuses the adapter already injected
    # into this backbone's model, rather than injecting another copy of its LoRA.
    loaded = backbone.__dict__.setdefault("_answer_adapters", {})
    weights = Path(spec) / WEIGHTS_NAME
    key = (str(Path(spec).resolve()), weights.stat().st_mtime_ns if weights.is_file() else None)
    if key not in loaded:
        loaded[key] = AnswerAdapter.from_pretrained(spec, backbone=backbone)
    return loaded[key]
