"""MTEB adapter: any project embedder (or the sentence-transformers baseline) as an mteb encoder.

    import mteb
    from benchmarks.mteb_adapter import MTEBEncoder
    model = MTEBEncoder(embedder, prompts={"SciFact-query": "Given a claim, find evidence"})
    mteb.evaluate(model, mteb.get_tasks(tasks=["SciFact"]))   # online: mteb downloads the task data

Implements mteb's EncoderProtocol (mteb >= 2): encode(DataLoader of batches, task_metadata=...,
prompt_type=query|document) and cosine similarity. Prompts are looked up by mteb's own rules (task
name + prompt type, task name, task type, prompt type); without one, the embedder's own query or
document instruction is used, as in UnifiedRAG.
"""
from __future__ import annotations

import numpy as np
from mteb.models.abs_encoder import AbsEncoder, get_prompt
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType


class MTEBEncoder(AbsEncoder):
    def __init__(self, embedder, prompts: dict[str, str] | None = None, *, batch_size: int = 32,
                 name: str | None = None):
        self.model = embedder
        self.batch_size = batch_size
        self.model_prompts = self.validate_task_to_prompt_name(prompts) if prompts else None
        from .baselines import method_name

        label = name or f"unified-rag/{method_name(embedder)}".replace(" ", "_")
        bb = getattr(embedder, "backbone", None)
        # Only what is known offline; the rest stays None rather than being guessed.
        self.mteb_model_meta = ModelMeta(
            loader=None, name=label, revision=embedder.fingerprint, release_date=None, languages=["eng-Latn"],
            n_parameters=sum(p.numel() for p in bb.model.parameters()) if bb is not None else None,
            memory_usage_mb=None, max_tokens=getattr(getattr(embedder, "config", None), "max_length", None),
            embed_dim=embedder.dim, license=None, open_weights=True, public_training_code=None,
            public_training_data=None, framework=["PyTorch"], similarity_fn_name="cosine",
            use_instructions=True, training_datasets=None)

    def instruction_for(self, task_metadata, prompt_type: PromptType | None) -> str | None:
        prompt = get_prompt(self.model_prompts, task_metadata, prompt_type)  # mteb's own priority rules
        if prompt is not None:
            return prompt
        cfg = getattr(self.model, "config", None)
        if cfg is None:
            return None
        return cfg.query_instruction if prompt_type == PromptType.query else cfg.document_instruction

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type: PromptType | None = None,
               **kwargs) -> np.ndarray:
        instruction = self.instruction_for(task_metadata, prompt_type)
        texts = [t for batch in inputs for t in batch["text"]]
        # mteb hands over empty strings now and then (blank titles, empty docs); the embedders refuse
        # them, so they get a single space's worth of text and a zero-information vector.
        texts = [t if isinstance(t, str) and t.strip() else "." for t in texts]
        return self.model.encode(texts, instruction=instruction, batch_size=kwargs.get("batch_size", self.batch_size),
                                 normalize=True, show_progress_bar=kwargs.get("show_progress_bar"))
