"""Published LLM2Vec releases (McGill-NLP/LLM2Vec-*-mntp, -supervised, -unsup-simcse), embedding as the
official `llm2vec` package does (0.2.3; tests/fixtures/published/llm2vec).

    rag = UnifiedRAG.from_pretrained("McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp",
                                     embedder="McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised")

The MNTP adapter is merged into the backbone's one copy of the weights when it loads (Backbone), so
generation runs on the merged weights too, as with the official model. The supervised (or SimCSE)
adapter stays a LoRA in the shared model, on only while this embedder runs. The text is framed as the
official code frames it (its Llama-3 chat header where the release's base is Llama-3-8B-Instruct;
instruction, a space, then the text; BOS, no EOS), attention is bidirectional (a 4-D mask on the
unchanged model: no per-architecture patch), and the last hidden states of the text's tokens are
mean-pooled: the count comes from the text tokenized alone, as the official embed_mask does.
Unlike the official encode, whose vectors are raw, encode() L2-normalises unless normalize=False.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from unified_rag.embedder import mean_pool
from unified_rag.errors import ModelLoadError
from unified_rag.published import peft_name, read_json

from .adapters import LoraEmbedder, LoraEmbedderConfig, additive_mask, bidirectional_allowed

LLAMA3 = "meta-llama/Meta-Llama-3-8B-Instruct"
_HEADER, _EOT = "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"
SEPARATOR = "!@#$%^&*()"  # the official marker between instruction and text, removed before tokenizing


class LLM2VecOfficialConfig(LoraEmbedderConfig):
    kind: str = "llm2vec-official"
    lora_r: int = 0  # 0: MNTP only (merged into the backbone); >0: the supervised/SimCSE LoRA on top
    template: str | None = None  # "llama3": the chat header the official code adds for Llama-3-8B-Instruct
    skip_instruction: bool = True  # pool the text's tokens only
    doc_max_length: int = Field(400, ge=1)  # longer texts keep their first words, as the official code cuts them
    query_instruction: str | None = "Given a web search query, retrieve relevant passages that answer the query"
    document_instruction: str | None = None


class LLM2VecOfficialEmbedder(LoraEmbedder):
    kind = "llm2vec-official"
    config_class = LLM2VecOfficialConfig
    padding_side = "right"

    # --- recognising a release ------------------------------------------------------------------------
    @classmethod
    def claims_backbone(cls, backbone) -> bool:
        m = backbone.merged_adapter or {}
        return "llm2vec" in str((m.get("auto_mapping") or {}).get("parent_library", ""))

    @classmethod
    def claims_dir(cls, path: Path) -> bool:
        return (path / "adapter_config.json").is_file() and not (path / "embedder_config.json").is_file()

    @classmethod
    def from_published(cls, path: Path, *, backbone) -> LLM2VecOfficialEmbedder:
        """A -supervised / -unsup-simcse adapter dir (peft LoRA, optional llm2vec_config.json) on the MNTP backbone."""
        from safetensors.torch import load_file

        peft, extra = read_json(path / "adapter_config.json"), read_json(path / "llm2vec_config.json", default={})
        if peft.get("peft_type") != "LORA":
            raise ModelLoadError(f"{path}/adapter_config.json: only LoRA adapters are supported")
        weights = path / "adapter_model.safetensors"
        if not weights.is_file():
            raise ModelLoadError(f"{weights} is missing: the adapter's weights")
        emb = cls(backbone, lora_r=peft["r"], lora_alpha=peft["lora_alpha"], lora_dropout=0.0,
                  lora_targets=list(peft["target_modules"]), **_settings(backbone, extra))
        emb.load_adapter_state({"shared." + peft_name(k): v for k, v in load_file(weights).items()})
        return emb

    @classmethod
    def for_backbone(cls, backbone) -> LLM2VecOfficialEmbedder:
        """MNTP alone (embedder="auto" on an MNTP release): its llm2vec_config.json, if any."""
        extra = read_json(Path(backbone.merged_adapter["path"]) / "llm2vec_config.json", default={})
        return cls(backbone, **_settings(backbone, extra))

    # --- embedding --------------------------------------------------------------------------------------
    def tokenize(self, texts, instruction, *, max_length=None, warn=True):
        """Per text (ids, n_head, n_text) of the official string: the whole string tokenized once (BOS
        first), the pooled count from the text part tokenized alone."""
        tok, cap = self.backbone.tokenizer, min(self.config.max_length, max_length or self.config.max_length)
        out = []
        for text in texts:
            text = self._cut(text, cap)
            s = f"{instruction.strip()} {SEPARATOR}{text}" if instruction else f"{SEPARATOR}{text}"
            if self.config.template == "llama3":
                s = _HEADER + s.strip() + _EOT
            head, tail = s.split(SEPARATOR)
            ids = tok(head + tail, add_special_tokens=True, truncation=True, max_length=cap)["input_ids"]
            n_text = min(len(tok(tail, add_special_tokens=False)["input_ids"]), len(ids))
            if not self.config.skip_instruction:
                n_text = len(ids)
            out.append((list(ids), len(ids) - n_text, n_text))
        return out

    def _cut(self, text: str, cap: int) -> str:
        """The official doc_max_length cut: the first words, in proportion, re-joined by single spaces
        (its token counts are capped at max_length, as the official tokenizer call truncates them)."""
        def count(t: str) -> int:
            return min(len(self.backbone.tokenizer(t, add_special_tokens=False)["input_ids"]), cap)

        n = count(text)
        while n > self.config.doc_max_length:
            words = text.split()
            text = " ".join(words[:int(len(words) * self.config.doc_max_length / n)])
            n = count(text)
        return text

    def embed_batch(self, batch):
        am = batch["attention_mask"]
        hidden = self.hidden(batch, additive_mask(bidirectional_allowed(am), self.backbone.dtype))
        return mean_pool(hidden.float(), batch["text_mask"])


def _settings(backbone, extra: dict) -> dict:
    """Our config fields from the release's llm2vec_config.json and the name the official code keys its
    prompt template on (the MNTP config's _name_or_path)."""
    if extra.get("pooling_mode", "mean") != "mean":
        raise ModelLoadError(f"pooling_mode {extra['pooling_mode']!r}: only the releases' mean pooling is supported")
    source = (backbone.merged_adapter or {}).get("source_name", "")
    out = {"template": "llama3" if source == LLAMA3 else None}
    for k in ("max_length", "doc_max_length", "skip_instruction"):
        if k in extra:
            out[k] = extra[k]
    return out
