"""Answer generation with the same causal LM that embeds: chat template, numbered sources, KV cache."""
from __future__ import annotations

import threading
import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field

from .backbone import Backbone
from .errors import InputError
from .grounding import markers
from .types import Hit

SYSTEM_PROMPT = ("You answer questions using only the numbered sources given. Cite the sources you use "
                 "by number in square brackets, like [1]. If the sources do not contain the answer, say so.")


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = 0.0  # 0 = greedy, reproducible
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    system_prompt: str = SYSTEM_PROMPT
    max_source_tokens: int = 384  # per source; keeps one long chunk from crowding out the rest
    no_answer_text: str = "I cannot answer that from the indexed documents: none of them is relevant enough."


class Generator:
    def __init__(self, backbone: Backbone, config: GenerationConfig | None = None):
        self.backbone = backbone
        self.config = config or GenerationConfig()
        # Entered around every generate call: an embedder meant to generate too (GEM with
        # generate_with_adapter) switches its adapter on for that call only. Default: the base weights.
        self.weights: Callable[[], AbstractContextManager] = nullcontext

    def _encode_chat(self, messages: list[dict]) -> list[int]:
        tok = self.backbone.tokenizer
        if getattr(tok, "chat_template", None):
            return list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                return_dict=True)["input_ids"])
        text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"
        return tok(text)["input_ids"]

    def _fit(self, text: str, max_tokens: int) -> tuple[str, bool]:
        tok = self.backbone.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return (text, False) if len(ids) <= max_tokens else (tok.decode(ids[:max_tokens]), True)

    def rag_prompt(self, question: str, hits: list[Hit], max_new_tokens: int) -> tuple[list[int], list[Hit]]:
        """Prompt ids and the sources that fit in the context, numbered [1]..[n] in rank order."""
        context = self.backbone.max_length
        budget = context - max_new_tokens - 64
        frame = len(self._encode_chat(self._messages("", [])))
        if budget // 2 < frame + 16:  # at least a short question and one short source beside the prompt
            raise InputError(f"max_new_tokens={max_new_tokens} leaves no room for the question and sources in "
                             f"the model's {context}-token context; use at most {context - 64 - 2 * (frame + 16)}")
        question, cut = self._fit(question, budget // 2)
        if cut:
            warnings.warn(f"the question is longer than half the room left in the model's {context}-token "
                          f"context, and only its first {budget // 2} tokens were given to the generator",
                          stacklevel=3)
        used: list[Hit] = []
        for h in hits:
            room = budget - len(self._encode_chat(self._messages(question, used))) - 8  # 8: "[n] " and breaks
            if room < 16:
                break
            text, _ = self._fit(h.text, min(self.config.max_source_tokens, room))
            used.append(h.model_copy(update={"text": text, "rank": len(used) + 1}))
        ids = self._encode_chat(self._messages(question, used))
        while used and len(ids) > budget:  # re-tokenisation at joins can add a token or two
            used.pop()
            ids = self._encode_chat(self._messages(question, used))
        return ids, used

    def _messages(self, question: str, hits: list[Hit]) -> list[dict]:
        sources = "\n\n".join(f"[{h.rank}] {h.text.strip()}" for h in hits) or "(no sources)"
        return [{"role": "system", "content": self.config.system_prompt},
                {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {question.strip()}"}]

    def _generate_kwargs(self, prompts: list[list[int]], max_new_tokens: int | None) -> dict:
        c, tok, dev = self.config, self.backbone.tokenizer, self.backbone.device
        sample = c.temperature > 0
        width = max(map(len, prompts))
        # Left padding: every row's new tokens start at the same column.
        kw = dict(input_ids=torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts], device=dev),
                  attention_mask=torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev),
                  max_new_tokens=c.max_new_tokens if max_new_tokens is None else max_new_tokens, do_sample=sample,
                  repetition_penalty=c.repetition_penalty, pad_token_id=tok.pad_token_id,
                  eos_token_id=tok.eos_token_id, use_cache=True)
        if sample:
            kw.update(temperature=c.temperature, top_p=c.top_p)
        return kw

    @torch.inference_mode()
    def generate_ids(self, ids: list[int], max_new_tokens: int | None = None) -> str:
        with self.weights():
            out = self.backbone.model.generate(**self._generate_kwargs([ids], max_new_tokens))
        return self.backbone.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()

    @torch.inference_mode()
    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int | None = None) -> list[tuple[str, bool]]:
        """Several prompts (token ids) in one left-padded batch: (text, finished) each, where finished
        means the model ended the text itself (EOS) within the budget."""
        eos = self.backbone.tokenizer.eos_token_id
        kw = self._generate_kwargs(prompts, max_new_tokens)
        with self.weights():
            out = self.backbone.model.generate(**kw)[:, kw["input_ids"].shape[1]:].tolist()
        results = []
        for g in out:
            finished = eos in g
            g = g[: g.index(eos)] if finished else g
            results.append((self.backbone.tokenizer.decode(g, skip_special_tokens=True).strip(), finished))
        return results

    def stream_ids(self, ids: list[int], max_new_tokens: int | None = None) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.backbone.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kw = self._generate_kwargs([ids], max_new_tokens) | {"streamer": streamer}
        errors: list[BaseException] = []

        def run():
            try:
                with torch.inference_mode(), self.weights():  # in this thread: the switch is model state
                    self.backbone.model.generate(**kw)
            except BaseException as e:  # surfaced in the caller's thread below
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()
        if errors:
            raise errors[0]

    def prompt_ids(self, prompt: str, formatted: bool = False) -> list[int]:
        """A user turn in the chat template, or, `formatted`, the text as it is (already the model's format)."""
        if formatted:
            return self.backbone.tokenizer(prompt)["input_ids"]
        return self._encode_chat([{"role": "user", "content": prompt}])

    def complete(self, prompt: str, max_new_tokens: int | None = None) -> str:
        return self.generate_ids(self.prompt_ids(prompt), max_new_tokens)

    def stream_complete(self, prompt: str, max_new_tokens: int | None = None) -> Iterator[str]:
        return self.stream_ids(self.prompt_ids(prompt), max_new_tokens)


def cited_numbers(text: str, n_sources: int) -> list[int]:
    """The distinct source numbers the text cites that name a source, ascending."""
    return sorted(n for n in set(markers(text)) if 1 <= n <= n_sources)
