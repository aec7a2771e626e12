"""Answer generation with the same causal LM that embeds: chat template, numbered sources, KV cache.

A prompt whose first tokens were already run through the model need not run them again: a `KVPrefix`
(those token ids and their KV cache) lets generation prefill only the rest. Two producers:
- the system prompt, the same first tokens of every RAG prompt (`system_prefix()`, computed once per
  weights; pass it as `prefix=`);
- a frozen-backbone embedder that frames its query as the start of the chat (`question_head_ids`):
  its query pass is then exactly the prefill of the prompt's first tokens, and generation reuses it
  (`rag_prompt(..., prefix=)` lays the prompt out question first). The reuse is lossless because the
  embedder's attention is causal and its weights are the generator's.

One prompt is decoded by the library's own loop (`decoding.LeanDecoder`) where the model is
Llama-style, else by HF `generate`; batches always go through `generate`.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import threading
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from functools import lru_cache
from typing import Any, Callable, Iterator, Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field

from .backbone import Backbone, cache_kwarg, output_cache
from .batching import pad
from .decoding import FirstStepBias, Int8Weights, LeanDecoder, check_int8_matmul, supports
from .errors import InputError
from .grounding import markers, renumbered, renumbered_stream
from .io import read_jsonl
from .types import Hit

SYSTEM_PROMPT = ("You answer questions using only the numbered sources given. Cite the sources you use "
                 "by number in square brackets, like [1]. If the sources do not contain the answer, say so.")


class KVPrefix(NamedTuple):
    """Token ids and the KV cache the model computed for them, with the base weights."""
    ids: tuple[int, ...]
    cache: Any  # a transformers Cache


class Reading(NamedTuple):
    """What one answer is generated from: the prompt ids, the sources as the answer numbers them, the
    KV of the prompt's first tokens where generation can reuse it, and, for a one-source prompt, that
    source's number (the answer's markers are renumbered to it) and its first-step decline margin."""
    ids: list[int]
    used: list[Hit]
    prefix: KVPrefix | None
    source: int | None = None
    margin: float | None = None

    def cite(self, text: str) -> str:
        return text if self.source is None else renumbered(text, self.source)

    def cite_stream(self, pieces: Iterator[str]) -> Iterator[str]:
        return pieces if self.source is None else renumbered_stream(pieces, self.source)


QUESTION_LABEL = "Question: "
_SLOT = "\x00urag-slot\x00"  # stands for the user turn's content while the chat template renders


@lru_cache(maxsize=8)
def _chat_around_user(tokenizer, system_prompt: str) -> tuple[str, str]:
    """The chat template's text before and after the user turn's content."""
    text = tokenizer.apply_chat_template([{"role": "system", "content": system_prompt},
                                          {"role": "user", "content": _SLOT}], tokenize=False, add_generation_prompt=True)
    head, sep, tail = text.partition(_SLOT)
    if not sep:
        raise InputError("the tokenizer's chat template does not show the user's message verbatim")
    return head, tail


def question_head_ids(tokenizer, system_prompt: str = SYSTEM_PROMPT) -> list[int]:
    """The tokens that open a question-first RAG prompt, up to the question itself: the embedder's
    frame for queries whose KV generation reuses. The question's own tokens follow."""
    return tokenizer(_chat_around_user(tokenizer, system_prompt)[0] + QUESTION_LABEL, add_special_tokens=False)["input_ids"]


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(256, ge=1)
    min_new_tokens: int = Field(0, ge=0)  # EOS is held back until this many (benchmarks force a length)
    temperature: float = 0.0  # 0 = greedy, reproducible
    top_p: float = 0.9
    # None: 1.1 for the base model, the answer adapter's own (1.0: it copies words from its sources) while one is on
    repetition_penalty: float | None = None
    system_prompt: str = SYSTEM_PROMPT
    max_source_tokens: int = 384  # per source; keeps one long chunk from crowding out the rest
    no_answer_text: str = "I cannot answer that from the indexed documents: none of them is relevant enough."
    # One prompt at a time: "auto" runs the library's own decode loop (unified_rag.decoding) where the
    # architecture allows, else HF generate; "hf" always uses generate. Batches always use generate.
    decode: Literal["auto", "hf"] = "auto"
    # Opt-in: decode from an int8 copy of the projection weights (half their size, built on first use):
    # about twice the tokens/s on a CPU, with answers that can differ from the full-precision ones.
    int8_weights: bool = False


BASE_REPETITION_PENALTY = 1.1


class Generator:
    def __init__(self, backbone: Backbone, config: GenerationConfig | None = None, adapter=None):
        """`adapter`: an `AnswerAdapter` on this backbone, switched on around every generation call."""
        self.backbone = backbone
        self.config = config or GenerationConfig()
        self.adapter = adapter
        if adapter is not None and adapter.backbone is not backbone:
            raise InputError("the answer adapter must be built on the generator's Backbone: one copy of the weights")
        # Entered around every generate call: the answer adapter, or an embedder meant to generate too
        # (GEM with generate_with_adapter), is on for that call only. Default: the base weights.
        self.weights: Callable[[], AbstractContextManager] = adapter.active if adapter is not None else nullcontext
        self._system_kv: tuple[tuple, KVPrefix] | None = None  # ((system prompt, weights), its KV)
        self._int8 = None
        if self.config.int8_weights:
            if self.config.decode != "auto" or not supports(backbone.model):
                raise InputError("int8_weights needs the library's decode loop: decode='auto' and a Llama-style "
                                 f"model (this one is {backbone.model.config.model_type!r})")
            check_int8_matmul(backbone.device, backbone.dtype)
            self._int8 = Int8Weights()

    @property
    def repetition_penalty(self) -> float:
        if self.config.repetition_penalty is not None:
            return self.config.repetition_penalty
        if self._tuned():
            return self.adapter.config.repetition_penalty
        return BASE_REPETITION_PENALTY

    def _tuned(self) -> bool:
        return self.adapter is not None and self.weights == self.adapter.active

    def _decline_bias(self) -> dict[int, float] | None:
        """The answer adapter's calibrated bias on its decline sentence's first token, at the first step."""
        if not self._tuned() or not self.adapter.config.decline_bias:
            return None
        return {self._decline_token(): self.adapter.config.decline_bias}

    def _decline_token(self) -> int:
        return self.backbone.tokenizer(self.adapter.config.decline_text, add_special_tokens=False)["input_ids"][0]

    @torch.inference_mode()
    def decline_margin(self, ids: list[int], keep_cache: bool = False) -> tuple[float, Any]:
        """The answer adapter's first-step logit of its decline sentence's first token minus the best
        other token's, for the prompt `ids`: greedy decoding declines exactly where this plus
        `decline_bias` is above 0 (with the adapter's repetition penalty of 1.0). `keep_cache`: also
        the KV of all but the prompt's last token, from which generation can continue; else None."""
        if self.adapter is None:
            raise InputError("a decline margin needs the generator's answer adapter")
        first, model, dev = self._decline_token(), self.backbone.model, self.backbone.device
        cache = None
        with self.adapter.active():
            if keep_cache:  # all but the last token, then the last on a copy: crop() differs across transformers
                cache = output_cache(model(input_ids=torch.tensor([ids[:-1]], device=dev), use_cache=True))
                out = model(input_ids=torch.tensor([ids[-1:]], device=dev), use_cache=True,
                            **{cache_kwarg(model): copy.deepcopy(cache)})
            else:
                out = model(input_ids=torch.tensor([ids], device=dev))
        logits = out.logits[0, -1].float()
        other = logits.clone()
        other[first] = float("-inf")
        return float(logits[first] - other.max()), cache

    def read(self, question: str, hits: list[Hit], max_new_tokens: int, prefix: KVPrefix | None = None) -> Reading:
        """What `answer()` generates from. Joint reading: `rag_prompt` over every hit. Per-source reading
        (the answer adapter's `reading`): each hit alone in its own prompt, and the one whose prompt
        leans least to declining is read; its KV is kept for generation. Read one at a time, the 135M
        reader cites the right source more often and answers better (300 rc-heldout questions: precision
        0.82 against 0.75, F1 0.423 against 0.344; docs/results.md)."""
        if not (self._tuned() and self.adapter.config.reading == "per-source"):
            return Reading(*self.rag_prompt(question, hits, max_new_tokens, prefix), prefix)
        used, best = [], None
        for h in hits:
            ids, one = self.rag_prompt(question, [h.model_copy(update={"rank": 1})], max_new_tokens, prefix)
            if not one:  # no room for it: as the joint prompt drops what does not fit
                continue
            used.append(one[0].model_copy(update={"rank": len(used) + 1}))  # its text as the prompt fit it
            margin, cache = self.decline_margin(ids, keep_cache=True)
            if best is None or margin < best.margin:
                best = Reading(ids, [], KVPrefix(tuple(ids[:-1]), cache), len(used), margin)
        if best is None:
            return Reading(*self.rag_prompt(question, [], max_new_tokens, prefix), prefix)
        return best._replace(used=used)

    def declined(self, text: str) -> bool:
        """Whether the answer adapter (when on) wrote its decline sentence instead of an answer."""
        return self._tuned() and self.adapter.declined(text)

    def _lean(self) -> LeanDecoder | None:
        """The decode loop for one prompt, or None where `generate` runs it."""
        if self.config.decode == "hf" or not supports(self.backbone.model):
            return None
        return LeanDecoder(self.backbone.model, self._int8)

    def _lean_tokens(self, lean: LeanDecoder, ids: list[int], max_new_tokens: int | None,
                     prefix: KVPrefix | None) -> Iterator[int]:
        c = self.config
        top_k = getattr(self.backbone.model.generation_config, "top_k", None) or 0  # as generate samples
        return lean.tokens(ids, c.max_new_tokens if max_new_tokens is None else max_new_tokens,
                           eos=self.backbone.tokenizer.eos_token_id, min_new_tokens=c.min_new_tokens,
                           repetition_penalty=self.repetition_penalty,
                           temperature=c.temperature, top_p=c.top_p, top_k=top_k,
                           prefix=(prefix.ids, prefix.cache) if _continues(ids, prefix) else None,
                           first_bias=self._decline_bias())

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

    def rag_prompt(self, question: str, hits: list[Hit], max_new_tokens: int,
                   prefix: KVPrefix | None = None) -> tuple[list[int], list[Hit]]:
        """Prompt ids and the sources that fit in the context, numbered [1]..[n] in rank order. With
        `prefix` (an embedder's question-first query pass, see `question_head_ids`), the prompt is
        those ids followed by the sources, so that generation can reuse the prefix's KV."""
        context = self.backbone.max_length
        budget = context - max_new_tokens - 64
        if prefix is None:
            frame = len(self._encode_chat(self._messages("", [])))
            if budget // 2 < frame + 16:  # at least a short question and one short source beside the prompt
                raise InputError(f"max_new_tokens={max_new_tokens} leaves no room for the question and sources in "
                                 f"the model's {context}-token context; use at most {context - 64 - 2 * (frame + 16)}")
            question, cut = self._fit(question, budget // 2)
            if cut:
                warnings.warn(f"the question is longer than half the room left in the model's {context}-token "
                              f"context, and only its first {budget // 2} tokens were given to the generator",
                              stacklevel=3)

            def render(used: list[Hit]) -> list[int]:
                return self._encode_chat(self._messages(question, used))
        else:
            if len(prefix.ids) + 32 > budget:
                raise InputError(f"max_new_tokens={max_new_tokens} leaves no room for sources after the "
                                 f"{len(prefix.ids)}-token question in the model's {context}-token context")
            tail = _chat_around_user(self.backbone.tokenizer, self.config.system_prompt)[1]

            def render(used: list[Hit]) -> list[int]:
                rest = f"\n\nSources:\n{self._sources(used)}{tail}"
                return list(prefix.ids) + self.backbone.tokenizer(rest, add_special_tokens=False)["input_ids"]
        used: list[Hit] = []
        for h in hits:
            room = budget - len(render(used)) - 8  # 8: "[n] " and breaks
            if room < 16:
                break
            text, _ = self._fit(h.text, min(self.config.max_source_tokens, room))
            used.append(h.model_copy(update={"rank": len(used) + 1, "text": text}))
        ids = render(used)
        while used and len(ids) > budget:  # re-tokenisation at joins can add a token or two
            used.pop()
            ids = render(used)
        return ids, used

    @staticmethod
    def _sources(hits: list[Hit]) -> str:
        return "\n\n".join(f"[{h.rank}] {h.text.strip()}" for h in hits) or "(no sources)"

    def _messages(self, question: str, hits: list[Hit]) -> list[dict]:
        return [{"role": "system", "content": self.config.system_prompt},
                {"role": "user", "content": f"Sources:\n{self._sources(hits)}\n\n{QUESTION_LABEL}{question.strip()}"}]

    def _generate_kwargs(self, prompts: list[list[int]], max_new_tokens: int | None) -> dict:
        c, tok, dev = self.config, self.backbone.tokenizer, self.backbone.device
        sample = c.temperature > 0
        width = max(map(len, prompts))
        # Left padding: every row's new tokens start at the same column.
        input_ids, attention_mask = pad(prompts, tok.pad_token_id, side="left", device=dev)
        kw = dict(input_ids=input_ids, attention_mask=attention_mask,
                  max_new_tokens=c.max_new_tokens if max_new_tokens is None else max_new_tokens, do_sample=sample,
                  repetition_penalty=self.repetition_penalty, pad_token_id=tok.pad_token_id,
                  eos_token_id=tok.eos_token_id, use_cache=True)
        if c.min_new_tokens:
            kw["min_new_tokens"] = c.min_new_tokens
        if bias := self._decline_bias():
            from transformers import LogitsProcessorList

            kw["logits_processor"] = LogitsProcessorList([FirstStepBias(width, bias)])
        if sample:
            kw.update(temperature=c.temperature, top_p=c.top_p)
        return kw

    def system_prefix(self) -> KVPrefix | None:
        """The KV of the tokens every RAG prompt starts with (the system turn), computed once per
        system prompt and weights; None without a chat template."""
        tok = self.backbone.tokenizer
        if not getattr(tok, "chat_template", None):
            return None
        key = (self.config.system_prompt, self.weights)
        if self._system_kv is None or self._system_kv[0] != key:
            # The shared start of two different user turns: the template's own tokens, as it tokenizes them.
            a, b = (self._encode_chat([{"role": "system", "content": self.config.system_prompt},
                                       {"role": "user", "content": c}]) for c in ("a", "b"))
            n = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
            self._system_kv = key, self.prefill(a[:n])
        return self._system_kv[1]

    @torch.inference_mode()
    def prefill(self, ids: list[int]) -> KVPrefix:
        """Run `ids` through the model once and keep their KV cache."""
        with self.weights():
            out = self.backbone.model(input_ids=torch.tensor([ids], device=self.backbone.device), use_cache=True)
        return KVPrefix(tuple(ids), output_cache(out))

    def _single_kwargs(self, ids: list[int], max_new_tokens: int | None, prefix: KVPrefix | None) -> dict:
        """generate() arguments for one prompt, continuing from `prefix` when the prompt starts with its
        ids; a copy of the cache, since generation extends it. No prefix by default: on the 2-core CPU,
        continuing from the system turn's 45 cached tokens made the first token slower, not faster
        (benchmarks/results/cpu-2core/throughput)."""
        kw = self._generate_kwargs([ids], max_new_tokens)
        if _continues(ids, prefix):
            kw[cache_kwarg(self.backbone.model)] = copy.deepcopy(prefix.cache)
        return kw

    @torch.inference_mode()
    def generate_ids(self, ids: list[int], max_new_tokens: int | None = None, prefix: KVPrefix | None = None) -> str:
        """The answer to one prompt. `prefix`: KV already computed for the prompt's first tokens."""
        lean = self._lean()
        with self.weights():
            if lean is not None:
                new = list(self._lean_tokens(lean, ids, max_new_tokens, prefix))
            else:
                new = self.backbone.model.generate(**self._single_kwargs(ids, max_new_tokens, prefix))[0, len(ids):]
        return self.backbone.tokenizer.decode(new, skip_special_tokens=True).strip()

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

    def stream_ids(self, ids: list[int], max_new_tokens: int | None = None,
                   prefix: KVPrefix | None = None) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.backbone.tokenizer, skip_prompt=True, skip_special_tokens=True)
        lean = self._lean()
        if lean is not None:  # same thread: the streamer only turns tokens into text as they come
            with self.weights():
                streamer.put(torch.tensor([ids]))  # the prompt, which skip_prompt drops
                for token in self._lean_tokens(lean, ids, max_new_tokens, prefix):
                    streamer.put(torch.tensor([token]))
                    while not streamer.text_queue.empty():
                        if piece := streamer.text_queue.get():
                            yield piece
                streamer.end()
            yield from (piece for piece in streamer if piece)
            return
        kw = self._single_kwargs(ids, max_new_tokens, prefix) | {"streamer": streamer}
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


def _continues(ids: list[int], prefix: KVPrefix | None) -> bool:
    """Whether the prompt `ids` starts with the prefix's ids and goes on past them."""
    return prefix is not None and len(ids) > len(prefix.ids) and tuple(ids[:len(prefix.ids)]) == prefix.ids


def cited_numbers(text: str, n_sources: int) -> list[int]:
    """The distinct source numbers the text cites that name a source, ascending."""
    return sorted(n for n in set(markers(text)) if 1 <= n <= n_sources)


# --- cached batched responses: the backbone's own answers to many prompts, kept in a JSONL file ----------
@torch.inference_mode()
def generate_responses(backbone, rows: list[tuple[str, str]], cache: str | os.PathLike, *, max_new_tokens: int = 64,
                       batch_size: int = 32, repetition_penalty: float = 1.1, progress: bool = True) -> list[dict]:
    """{"id", "query", "response", "finished"} for every (id, query), generated by the backbone itself."""
    from tqdm.auto import tqdm

    cache = Path(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = {row["id"]: row for row in read_jsonl(cache, strict=False) if "id" in row} if cache.is_file() else {}
    todo = [(i, q) for i, q in rows if done.get(i, {}).get("query") != q]
    if todo:
        logging.getLogger(__name__).info("generating %d responses (%d cached)", len(todo), len(rows) - len(todo))
        gen = Generator(backbone, GenerationConfig(max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty))
        bar = tqdm(total=len(todo), desc="responses", unit="q", disable=not progress)
        chunk = batch_size * 8  # sort by length inside chunks: little padding, order stays near-random
        with cache.open("a") as f:
            if cache.stat().st_size and not cache.read_bytes().endswith(b"\n"):
                f.write("\n")  # end a torn last line, so the next row starts clean
            for c in range(0, len(todo), chunk):
                part = sorted(todo[c:c + chunk], key=lambda r: len(r[1]))
                for s in range(0, len(part), batch_size):
                    batch = part[s:s + batch_size]
                    for (rid, q), (text, finished) in zip(batch, gen.generate_batch([gen.prompt_ids(q) for _, q in batch])):
                        row = {"id": rid, "query": q, "response": text, "finished": finished}
                        done[rid] = row
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                    bar.update(len(batch))
        bar.close()
    return [done[i] for i, _ in rows]
