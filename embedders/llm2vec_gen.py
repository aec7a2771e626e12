"""LLM2Vec-Gen (arXiv 2603.10913), inference side.

K learned special tokens are appended to the (chat-framed) input. Their last-layer states h_k
go through a reconstruction projection r_k = W_r h_k + b_r (H->H) and an alignment projection
a_k = W_a r_k + b_a (H->D); the embedding is mean_k a_k. The r_k are also a soft prompt from which
the *same* causal LM can decode the response the tokens stand for (`decode`). The backbone stays
frozen; the adapter is the token rows and the two projections.

The paper's layout puts T "thought" tokens before the K "compression" tokens (10 + 10): the thought
tokens give the model room to work, and only the compression tokens are embedded and decoded.
`num_thought_tokens` (default 0, the layout this project's runs used) turns it on.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch

from unified_rag.errors import InputError

from .adapters import fresh_token_rows, splice_specials
from unified_rag.embedder import Embedder, EmbedderConfig

_SLOT = "\x00TEXT\x00"


class LLM2VecGenConfig(EmbedderConfig):
    kind: str = "llm2vec-gen"
    num_special_tokens: int = 10  # the compression tokens: embedded and decoded
    num_thought_tokens: int = 0  # before them, neither embedded nor decoded; the paper uses 10
    embed_dim: int | None = None  # None: the backbone's hidden size (identity-initialised)
    template: Literal["chat", "plain"] = "chat"  # "chat": the text is the user turn, the tokens the reply
    query_instruction: str | None = None
    init_seed: int = 0


class LLM2VecGenEmbedder(Embedder):
    kind = "llm2vec-gen"
    config_class = LLM2VecGenConfig

    def __init__(self, backbone, config: LLM2VecGenConfig | None = None, **overrides):
        super().__init__(backbone, config, **overrides)
        H, K, T = backbone.hidden_size, self.config.num_special_tokens, self.config.num_thought_tokens
        D = self.config.embed_dim or H
        if K < 1 or T < 0:
            raise InputError("num_special_tokens must be >= 1 and num_thought_tokens >= 0")
        self.n_special = T + K  # thought tokens first, then the compression tokens
        # Fresh tokens drawn from the distribution of the existing vocabulary rows.
        self.special_embeddings = torch.nn.Parameter(fresh_token_rows(backbone, T + K, self.config.init_seed))
        self.rec_proj = torch.nn.Linear(H, H)
        self.align_proj = torch.nn.Linear(H, D)
        with torch.no_grad():
            self.rec_proj.weight.copy_(torch.eye(H))
            self.rec_proj.bias.zero_()
            if D == H:
                self.align_proj.weight.copy_(torch.eye(H))
            self.align_proj.bias.zero_()
        self.to(backbone.device)

    @property
    def dim(self) -> int:
        return self.align_proj.out_features

    def config_key(self) -> str:
        # Without the thought tokens when there are none: adapters saved before the option keep their fingerprint.
        return self.config.model_dump_json(exclude={"num_thought_tokens"} if not self.config.num_thought_tokens else None)

    def frame(self, instruction):
        tok = self.backbone.tokenizer
        if self.config.template == "chat" and getattr(tok, "chat_template", None):
            content = (f"{instruction}\n" if instruction else "") + _SLOT
            rendered = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                               add_generation_prompt=True)
            head, tail = rendered.split(_SLOT)
            return (tok(head, add_special_tokens=False)["input_ids"],
                    tok(tail, add_special_tokens=False)["input_ids"])
        return super().frame(instruction)

    def special_states(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, a): [B, K, H] soft-prompt states and [B, K, D] aligned states of the compression tokens, float32."""
        embeds = splice_specials(self.backbone, batch["input_ids"], batch["special_mask"], self.special_embeddings)
        B, T = embeds.shape[0], self.config.num_thought_tokens
        hidden = self.backbone.hidden_states(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
        h = hidden[batch["special_mask"]].view(B, self.n_special, -1)[:, T:].float()
        r = self.rec_proj(h)
        return r, self.align_proj(r)

    def embed_batch(self, batch):
        return self.special_states(batch)[1].mean(1)

    @torch.inference_mode()
    def decode(self, texts_or_states: str | Sequence[str] | torch.Tensor, *, max_new_tokens: int = 64,
               instruction: str | None = None, batch_size: int = 16, **generate_kwargs) -> list[str]:
        """Generate the text the special tokens stand for, from the soft prompt r_1..K.

        Uses the shared causal LM with its KV cache; every row's prompt is exactly the K compression
        tokens' soft states, so batches need no padding.
        """
        if isinstance(texts_or_states, torch.Tensor):
            states = texts_or_states
            K = self.config.num_special_tokens
            if states.dim() != 3 or states.shape[1:] != (K, self.backbone.hidden_size):
                raise InputError(f"states must have shape [B, {K}, {self.backbone.hidden_size}]")
        else:
            texts = [texts_or_states] if isinstance(texts_or_states, str) else list(texts_or_states)
            if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
                raise InputError("decode() needs non-empty texts")
            items = self.tokenize(texts, instruction if instruction is not None else self.config.query_instruction)
            states = torch.cat([self.special_states(self.collate(items[s:s + batch_size]))[0]
                                for s in range(0, len(items), batch_size)])
        model, tok = self.backbone.model, self.backbone.tokenizer
        out: list[str] = []
        for s in range(0, states.shape[0], batch_size):
            r = states[s:s + batch_size].to(self.backbone.device, self.backbone.dtype)
            ids = model.generate(inputs_embeds=r, attention_mask=torch.ones(r.shape[:2], dtype=torch.long,
                                                                            device=r.device),
                                 max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                 pad_token_id=tok.pad_token_id, **generate_kwargs)
            out.extend(tok.batch_decode(ids, skip_special_tokens=True))
        return [t.strip() for t in out]
