"""Grounding an answer in its sources, by the shared backbone's embeddings (no second model).

- the relevance cut: a source is used only when its cosine with the query reaches `min_relevance`;
  with none left, the pipeline says it cannot answer instead of guessing;
- attribution: an answer sentence the generator left without a valid [n] gets the source whose
  embedding is nearest to it, and the Answer records which citations were written and which added;
- extraction: the source sentences nearest to the question, each with its [n], as the answer.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

import numpy as np

from .types import Citation

# A sentence ends at . ! or ?, with any citation markers right after it ("moons. [1]") still its own.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s*\[[\d,\s]+\])*\s+(?![\s\[])")
_MARKER = re.compile(r"\s*\[([\d,\s]+)\]")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence with a word in it, in order."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start() + len(m.group(0).rstrip())))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if re.search(r"\w", _MARKER.sub("", text[a:b]))]


def markers(text: str) -> list[int]:
    """Every number written inside [..] markers, valid or not, in order."""
    return [int(n) for group in _MARKER.findall(text) for n in re.findall(r"\d+", group)]


_WHOLE_MARKER = re.compile(r"\[[\d,\s]*\d[\d,\s]*\]")  # one that names a number
_OPEN_MARKER = re.compile(r"\[[\d,\s]*$")  # a marker the next piece may still close


def renumbered(text: str, source: int) -> str:
    """An answer read from a one-source prompt, numbered as the whole answer numbers its sources:
    every marker it wrote names that one source."""
    return _WHOLE_MARKER.sub(f"[{source}]", text)


def renumbered_stream(pieces: Iterable[str], source: int) -> Iterator[str]:
    """`renumbered`, piece by piece: text that may still open a marker waits for the next piece."""
    held = ""
    for piece in pieces:
        held += piece
        m = _OPEN_MARKER.search(held)
        cut = m.start() if m else len(held)
        if cut:
            yield renumbered(held[:cut], source)
            held = held[cut:]
    if held:
        yield renumbered(held, source)


def strip_markers(text: str) -> str:
    """The text without its [n] markers."""
    return _MARKER.sub("", text).strip()


def _strip_invalid(sentence: str, n_sources: int) -> str:
    """Drop markers that point at no source ([7] with 3 sources); keep the valid numbers of each marker."""
    def fix(m: re.Match) -> str:
        ok = [n for n in re.findall(r"\d+", m.group(1)) if 1 <= int(n) <= n_sources]
        return f" [{', '.join(ok)}]" if ok else ""

    return _MARKER.sub(fix, sentence)


def _insert(sentence: str, n: int) -> str:
    """'Mars has two moons.' -> 'Mars has two moons [1].'"""
    body = sentence.rstrip()
    end = len(body.rstrip(".!?"))
    return f"{body[:end]} [{n}]{body[end:]}{sentence[len(body):]}"


def ground(text: str, n_sources: int, source_vectors: np.ndarray, embed_sentences,
           attribute: bool = True) -> tuple[str, list[Citation]]:
    """The answer with a valid citation on every sentence, and where each came from.

    `source_vectors` [n_sources, d] are the sources' unit embeddings; `embed_sentences(list) -> [m, d]`
    embeds answer sentences the same way a query is embedded (a sentence asks for its support).
    `attribute=False`: invalid markers are still dropped, but a bare sentence stays bare (a generator
    tuned to cite is trusted with its own citations)."""
    spans = sentence_spans(text)
    sentences = [_strip_invalid(text[a:b], n_sources) for a, b in spans]
    citations = [Citation(sentence=i, source=n, origin="model")
                 for i, s in enumerate(sentences) for n in dict.fromkeys(markers(s))]
    bare = [i for i, s in enumerate(sentences) if not markers(s)]
    if bare and n_sources and attribute:
        best = (embed_sentences([_MARKER.sub("", sentences[i]).strip() for i in bare]) @ source_vectors.T).argmax(1)
        for i, b in zip(bare, best):
            sentences[i] = _insert(sentences[i], int(b) + 1)
            citations.append(Citation(sentence=i, source=int(b) + 1, origin="attributed"))
    out, last = [], 0
    for (a, b), s in zip(spans, sentences):
        out += [_MARKER.sub("", text[last:a]), s]  # between sentences: keep the layout, drop stray markers
        last = b
    out.append(_MARKER.sub("", text[last:]))
    return "".join(out).strip(), sorted(citations, key=lambda c: (c.sentence, c.origin != "model", c.source))


def extract(query_vector: np.ndarray, sources: list[str], embed_sentences,
            max_sentences: int = 3) -> tuple[str, list[Citation]]:
    """The source sentences nearest the query, best first, each cited by its source number."""
    pool = [(j + 1, text[a:b].strip()) for j, text in enumerate(sources) for a, b in sentence_spans(text)]
    if not pool:
        return "", []
    scores = embed_sentences([s for _, s in pool]) @ query_vector
    picked = [pool[i] for i in np.argsort(-scores, kind="stable")[:max_sentences]]
    text = " ".join(_insert(s if s[-1:] in ".!?" else s + ".", n) for n, s in picked)
    return text, [Citation(sentence=i, source=n, origin="extracted") for i, (n, _) in enumerate(picked)]
