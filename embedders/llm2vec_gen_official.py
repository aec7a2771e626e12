"""Published LLM2Vec-Gen checkpoints (McGill-NLP/LLM2Vec-Gen-Qwen3-*), embedding and decoding as the
official `llm2vec-gen` package does (0.1.3; tests/fixtures/published/llm2vec-gen).

    rag = UnifiedRAG.from_pretrained("McGill-NLP/LLM2Vec-Gen-Qwen3-06B")

The checkpoint's base model (run_config.yml's model_name_or_path) is the one copy of the weights. Its
encoder adapter is TrainableTokens (the special tokens' rows, which replace those rows) and optionally a
LoRA; only the special rows are taken from the adapter file, never the full resized embedding matrix it
also holds. The LoRA is on only inside encode. The two heads (`reconstruction_mlp`, `alignment_mlp`) are
read with torch.load(weights_only=True); `training_args.bin` is never read.

encode: text + all special tokens (truncated text, never the specials), causal attention, the last
layer's states at the last `n` specials (`last_n_tokens`), the reconstruction head, then the alignment
head, averaged. The official vectors are raw; encode() L2-normalises unless normalize=False. decode():
the reconstruction states as `inputs_embeds` to the plain base model (no adapter), greedy.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from unified_rag.errors import ModelLoadError
from unified_rag.published import peft_name, read_json, read_run_config
from unified_rag.lora import check_tensors, inject_lora, lora_parameters, lora_scope

from .llm2vec_gen import LLM2VecGenConfig, LLM2VecGenEmbedder


class LLM2VecGenOfficialConfig(LLM2VecGenConfig):
    kind: str = "llm2vec-gen-official"
    template: str = "plain"  # the text, then the special tokens: no chat frame
    lora_r: int = 0
    lora_alpha: int = 16
    lora_targets: list[str] = []


class LLM2VecGenOfficialEmbedder(LLM2VecGenEmbedder):
    kind = "llm2vec-gen-official"
    config_class = LLM2VecGenOfficialConfig

    def __init__(self, backbone, config=None, **overrides):
        super().__init__(backbone, config, **overrides)
        c = self.config
        self.adapter_name = None
        if c.lora_r > 0:
            self.adapter_name = inject_lora(backbone.model, "llm2vec_gen", r=c.lora_r, alpha=c.lora_alpha, dropout=0.0,
                                            targets=c.lora_targets, seed=c.init_seed)

    def special_states(self, batch):
        with lora_scope(self.backbone.model, self.adapter_name):  # the LoRA on for the encoder pass only
            return super().special_states(batch)

    @classmethod
    def claims_backbone(cls, backbone) -> bool:
        return (getattr(backbone, "checkpoint", None) or {}).get("format") == "llm2vec-gen"

    @classmethod
    def for_backbone(cls, backbone) -> LLM2VecGenOfficialEmbedder:
        return cls.from_checkpoint(Path(backbone.checkpoint["path"]), backbone)

    @classmethod
    def from_checkpoint(cls, path: Path, backbone) -> LLM2VecGenOfficialEmbedder:
        from safetensors.torch import load_file

        run = read_run_config(path)
        specials = run["special_tokens"]
        n = int(re.fullmatch(r"last_(\d+)_tokens", run.get("encoding_mode", "")).group(1)) \
            if re.fullmatch(r"last_(\d+)_tokens", run.get("encoding_mode", "")) else None
        if n is None or not 1 <= n <= len(specials):
            raise ModelLoadError(f"{path}/run_config.yml: encoding_mode {run.get('encoding_mode')!r} is not supported "
                                 f"(last_N_tokens with N <= {len(specials)} special tokens)")
        enc = path / "encoder"
        peft = read_json(enc / "adapter_config.json")
        weights = enc / "adapter_model.safetensors"
        if not weights.is_file():
            raise ModelLoadError(f"{weights} is missing: the encoder adapter's weights")
        state = load_file(weights)
        rec, align = _head(path / "reconstruction_mlp"), _head(path / "alignment_mlp")
        lora = dict(lora_r=peft["r"], lora_alpha=peft["lora_alpha"], lora_targets=list(peft["target_modules"])) \
            if peft.get("peft_type") == "LORA" else {}
        emb = cls(backbone, num_special_tokens=n, num_thought_tokens=len(specials) - n,
                  embed_dim=align["weight"].shape[0], query_instruction=None, **lora)
        # TrainableTokens: the delta tensor holds the replacement rows of `token_indices`, in that order.
        indices = (peft.get("trainable_token_indices") or {}).get("embed_tokens") or peft.get("token_indices")
        delta = next((v for k, v in state.items() if k.endswith("trainable_tokens_delta")), None)
        if delta is None or indices is None:
            raise ModelLoadError(f"{weights}: no trainable_tokens_delta / token indices for the special tokens")
        ids = backbone.tokenizer.convert_tokens_to_ids(specials)
        if set(ids) - set(indices):
            raise ModelLoadError(f"{path}: the tokenizer's special tokens are not the adapter's trained tokens")
        rows = delta[[indices.index(i) for i in ids]]
        with torch.no_grad():
            emb.special_embeddings.copy_(rows.to(emb.special_embeddings.dtype))
            emb.rec_proj.load_state_dict(rec)
            emb.align_proj.load_state_dict(align)
            if emb.adapter_name is not None:
                mine = lora_parameters(backbone.model, emb.adapter_name)
                theirs = {peft_name(k): v for k, v in state.items() if ".lora_" in k}
                check_tensors(theirs, mine, weights)
                for k, v in theirs.items():
                    mine[k].copy_(v.to(mine[k].dtype))
        return emb.to(backbone.device)


def _head(f: Path) -> dict[str, torch.Tensor]:
    """A head file: a torch.save'd {"state_dict": {projection.weight, projection.bias}, "config"}, read with
    weights_only=True; anything that loader refuses is refused here too."""
    if not f.is_file():
        raise ModelLoadError(f"{f} is missing: one of the checkpoint's two heads")
    try:
        obj = torch.load(f, map_location="cpu", weights_only=True)
        sd = obj["state_dict"]
        return {"weight": sd["projection.weight"].float(), "bias": sd["projection.bias"].float()}
    except (KeyError, TypeError) as e:
        raise ModelLoadError(f"{f}: not a linear head ({e})") from None
    except Exception as e:  # pickle.UnpicklingError and kin: code we will not run
        raise ModelLoadError(f"{f} cannot be read without unpickling arbitrary objects (weights_only=True refused "
                             f"it: {str(e).splitlines()[0][:160]}); it is not loaded") from None
