"""What every trainer shares: config base, data reading, the loop, checkpoints, logs, the loss plot.

A trainer is a `Method`: an nn.Module that holds the shared backbone's model (by reference) and the
embedder, returns `(loss, parts)` from `forward(examples, gen, step)`, names its parameter groups and
writes its result. `train()` does the rest.

Exact resume: the batch of every micro-step and every random draw inside it (dropout, masking,
insert positions) are functions of (seed, micro-step), never of the process's history, so a run
resumed from a checkpoint replays the stream an uninterrupted run would have seen.

Multi-GPU: `accelerate launch --num_processes 8 -m unified_rag.cli train gem --config c.json --out d`
(accelerate wraps the Method in DDP; each process reads its own slice of every batch).
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
import warnings
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import BaseModel, ConfigDict, NonNegativeInt
from safetensors.torch import load_file, save_file

from unified_rag.errors import InputError
from unified_rag.io import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

# Config fields that may change when a run is resumed: they do not alter the steps already taken.
RESUMABLE_CHANGES = {"resume", "steps", "save_every", "keep_checkpoints", "plot"}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # backbone: HF id or dir, .gguf; None = the offline SmolLM2 default
    dtype: str = "auto"  # backbone weights: auto (bf16 where the CPU/GPU runs it fast), bf16, fp32
    data: list[Path] = []  # .txt, .tsv (id<TAB>text) or .jsonl
    max_examples: int | None = None  # use only the first N (after a seeded shuffle)
    seed: int = 0
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # per process and micro-step
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int = 128  # tokens per training text
    bf16: bool | None = None  # autocast; None = when the backbone weights are bf16 already
    save_every: int = 100
    val_examples: NonNegativeInt = 0  # held out from the end of the shuffled data; scored at every checkpoint
    keep_checkpoints: int = 1
    resume: bool = False
    plot: bool = True

    @classmethod
    def from_file(cls, path: str | os.PathLike | None, **overrides):
        raw = json.loads(Path(path).read_text()) if path else {}
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(raw)


# --- data --------------------------------------------------------------------------------------
_TEXT_KEYS = ("text", "query", "contents")
_PAIR_KEYS = ("passage", "response", "positive", "document")


def _read_file(path: Path, pairs: bool) -> list[tuple]:
    """(id, text) or (id, query, passage) per good line; bad lines are reported by number, then skipped."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InputError(f"data file not found: {path}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    suffix, rows, bad = path.suffix.lower(), [], []
    for n, line in enumerate(lines, 1):
        row = None
        if suffix == ".jsonl":
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                rid = str(obj.get("id", obj.get("_id", f"{path.name}:{n}")))
                text = next((obj[k] for k in _TEXT_KEYS if isinstance(obj.get(k), str)), None)
                other = next((obj[k] for k in _PAIR_KEYS if isinstance(obj.get(k), str)), None)
                row = (rid, obj.get("query"), other) if pairs else (rid, text)
        elif suffix == ".tsv":
            parts = line.split("\t")
            if len(parts) == (3 if pairs else 2):
                row = tuple(parts)
        elif suffix == ".txt" and not pairs:
            row = (f"{path.name}:{n}", line)
        else:
            raise InputError(f"{path}: unsupported data file; use .txt, .tsv or .jsonl"
                             + (" (pairs: .tsv id<TAB>query<TAB>passage or .jsonl query/passage)" if pairs else ""))
        if row is None or any(not isinstance(x, str) or not x.strip() for x in row):
            bad.append(n)
        else:
            rows.append(tuple(x.strip() for x in row))
    if bad:
        shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
        warnings.warn(f"{path}: skipped {len(bad)} bad line(s): {shown}", stacklevel=3)
    return rows


def read_texts(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """(id, text) from .txt (one per line), .tsv (id<TAB>text) or .jsonl ({"id", "text"|"query"})."""
    rows = [r for p in paths for r in _read_file(Path(p), pairs=False)]
    if not rows:
        raise InputError(f"no usable lines in {[str(p) for p in paths]}")
    return rows


def read_pairs(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str, str]]:
    """(id, query, passage) from .tsv (id<TAB>query<TAB>passage) or .jsonl ({"query", "passage"|"response"})."""
    rows = [r for p in paths for r in _read_file(Path(p), pairs=True)]
    if not rows:
        raise InputError(f"no usable pairs in {[str(p) for p in paths]}")
    return rows


def subsample(rows: list, n: int | None, seed: int) -> list:
    """A seeded shuffle, then the first n: any prefix of the result is a fair sample."""
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    return [rows[i] for i in order[: n or len(rows)]]


# --- the method interface --------------------------------------------------------------------------
class Method(torch.nn.Module):
    """One training objective over one embedder. `self.model` is the shared backbone's model, registered
    by reference so that DDP sees every trainable tensor, LoRA weights injected into it included."""

    name: str = "method"

    def __init__(self, embedder):
        super().__init__()
        self.backbone, self.emb, self.model = embedder.backbone, embedder, embedder.backbone.model
        for p in embedder.parameters():
            p.requires_grad_(True)
        for p in getattr(embedder, "shared_parameters", dict)().values():  # LoRA, or all weights when lora_r=0
            p.requires_grad_(True)

    def batch(self, texts: list[str], instruction: str | None = None) -> dict[str, torch.Tensor]:
        return self.emb.collate(self.emb.tokenize(texts, instruction))

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        """Learned token rows at cfg.lr_special (when the config has one), everything else at cfg.lr."""
        named = list(self.trainable().items())
        special = [p for n, p in named if "special_embeddings" in n]
        rest = [p for n, p in named if "special_embeddings" not in n]
        groups = [{"name": "special", "params": special, "lr": getattr(cfg, "lr_special", cfg.lr)}] if special else []
        return groups + [{"name": "rest", "params": rest, "lr": cfg.lr}]

    def setup(self, examples: list) -> None:
        """Data-dependent initialisation; runs on fresh starts only (a resume loads it from the checkpoint)."""

    def forward(self, examples: list, gen: torch.Generator, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss on one micro-batch; `gen` seeds any sampling, `step` (0-based) drives loss schedules."""
        raise NotImplementedError

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """This method's own trainable tensors under stable names: the embedder's, its share of the
        model (LoRA named without the adapter name, or all weights), and the method's (e.g. a temperature).
        Other adapters living in the same shared model are not ours, whatever their requires_grad."""
        own = {f"emb.{n}": p for n, p in self.emb.named_parameters()}
        own.update({f"shared.{n}": p for n, p in getattr(self.emb, "shared_parameters", dict)().items()})
        own.update({n: p for n, p in self.named_parameters() if not n.startswith(("emb.", "model."))})
        return own

    def _own_buffers(self) -> dict[str, torch.Tensor]:
        return {n: b for n, b in self.named_buffers() if not n.startswith("model.")}

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Trainable tensors plus the method's own buffers; the frozen backbone is never copied."""
        state = {**self.trainable(), **self._own_buffers()}
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        own = {**self.trainable(), **self._own_buffers()}
        if set(state) != set(own):
            raise InputError(f"checkpoint does not fit this method: missing {sorted(set(own) - set(state))[:5]}, "
                             f"unexpected {sorted(set(state) - set(own))[:5]}")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v.to(own[k].device, own[k].dtype))

    def validate(self, examples: list) -> dict[str, float]:
        """Held-out metrics (no gradients), logged as val_<name> at every checkpoint; none by default."""
        return {}

    def save_output(self, out: Path) -> None:
        """Write the trained adapter (an embedder dir) under `out`."""
        self.emb.save_pretrained(out)


# --- checkpoints ---------------------------------------------------------------------------------------
def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer state as flat tensors (safetensors) plus JSON: no pickle anywhere."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{i}.{k}"] = v.detach().cpu().clone()  # a copy: never aliases the live state
            else:
                scalars[f"{i}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    # JSON turned tuples (betas) into lists, and Adam's arithmetic differs in the last bit on lists.
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    return ckpts[-1] if ckpts else None


def save_checkpoint(out: Path, step: int, method: Method, opt, keep: int) -> Path:
    """Written to a temp dir and renamed: a run killed mid-save leaves the previous checkpoint usable."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save_file(method.checkpoint_state(), tmp / "trainable.safetensors")
        tensors, meta = _optimizer_tensors(opt)
        save_file(tensors, tmp / "optimizer.safetensors")
        atomic_write_json(tmp / "optimizer.json", meta)
        atomic_write_json(tmp / "state.json", {"step": step})
        final = root / f"step-{step:07d}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, method: Method, opt) -> int:
    method.load_checkpoint_state(load_file(path / "trainable.safetensors"))
    _load_optimizer(opt, load_file(path / "optimizer.safetensors"), json.loads((path / "optimizer.json").read_text()))
    return int(json.loads((path / "state.json").read_text())["step"])


# --- run metadata, log, plot -----------------------------------------------------------------------------
def write_run_info(out: Path, cfg: TrainConfig, method: str, backbone, extra: dict | None = None) -> None:
    """Config, data hashes, seed and versions beside the output; a resume must match them."""
    import transformers

    from unified_rag.rag import library_version

    info = {"method": method, "config": cfg.model_dump(mode="json"), "seed": cfg.seed,
            "data": {str(p): sha256_file(p) for p in cfg.data}, "library_version": library_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "backbone": backbone.name, "backbone_fingerprint": backbone.fingerprint, **(extra or {})}
    path = out / "run.json"
    if path.is_file() and cfg.resume:
        old = json.loads(path.read_text())
        a = {k: v for k, v in old["config"].items() if k not in RESUMABLE_CHANGES}
        b = {k: v for k, v in info["config"].items() if k not in RESUMABLE_CHANGES}
        if a != b or old["data"] != info["data"] or old["backbone_fingerprint"] != info["backbone_fingerprint"]:
            raise InputError(f"{out} holds a run with another config, data or backbone; use a new --out "
                             "or drop --resume")
    info["written_at"] = datetime.now(timezone.utc).isoformat()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, info)


def _truncate_log(path: Path, upto: int) -> None:
    """Drop log lines past the checkpoint a resume restarts from, so the curve has no duplicates."""
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= upto]
        path.write_text("".join(ln + "\n" for ln in keep))


def read_log(out: str | os.PathLike) -> list[dict]:
    path = Path(out) / "train_log.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def plot_log(out: Path) -> Path | None:
    rows = read_log(out)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k not in {"step", "lr", "elapsed_s"} and not k.startswith("val_")]
    val = sorted({k for r in rows for k in r if k.startswith("val_")})
    keys += [k for k in val if k[4:] not in keys]  # a held-out metric without a training twin gets its own axis
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), sharex=True, squeeze=False)
    steps = [r["step"] for r in rows]

    def held_out(ax, k, **kw):
        ax.plot(*zip(*[(r["step"], r[k]) for r in rows if k in r]), "o-", ms=3, lw=1, color="black", **kw)

    for ax, k in zip(axes[:, 0], keys):
        if k.startswith("val_"):
            held_out(ax, k)
            ax.set_ylabel(k)
            continue
        ys = [r.get(k, math.nan) for r in rows]
        ax.plot(steps, ys, lw=0.6, alpha=0.5)
        w = max(1, len(ys) // 50)  # a running mean shows the trend through batch noise
        if w > 1:
            sm = [sum(ys[max(0, i - w + 1): i + 1]) / len(ys[max(0, i - w + 1): i + 1]) for i in range(len(ys))]
            ax.plot(steps, sm, lw=1.2)
        if f"val_{k}" in val:  # held-out points on the training curve's axis
            held_out(ax, f"val_{k}", label="held out")
            ax.legend(loc="best", fontsize=7)
        ax.set_ylabel(k)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)
    return out / "loss.png"


# --- the loop ----------------------------------------------------------------------------------------------
def make_accelerator():
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # Some methods leave parameters unused on some steps (GEM's NTP-only batches skip the special token).
    return Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def _batch(n: int, position: int, size: int, seed: int) -> list[int]:
    """Examples [position, position+size) of an endless stream of seeded per-epoch permutations."""
    out, cache = [], {}
    for p in range(position, position + size):
        epoch = p // n
        if epoch not in cache:
            cache[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
        out.append(cache[epoch][p % n])
    return out


def _seed_for(cfg: TrainConfig, micro: int, rank: int) -> int:
    return (cfg.seed * 1_000_003 + micro * 101 + rank) % (2**63)


def train(method: Method, cfg: TrainConfig, out: str | os.PathLike, examples: list, *, accelerator=None) -> list[dict]:
    """Train `method` on `examples` for cfg.steps optimizer steps; returns the loss log."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    acc = accelerator or make_accelerator()
    if cfg.val_examples and cfg.val_examples >= len(examples):
        raise InputError(f"val_examples={cfg.val_examples} leaves no training examples (of {len(examples)})")
    examples, val = (examples[:-cfg.val_examples], examples[-cfg.val_examples:]) if cfg.val_examples else (examples, [])
    if not examples:
        raise InputError("no training examples")
    groups = method.param_groups(cfg)
    base_lrs = [g["lr"] for g in groups]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        start = load_checkpoint(ckpt, method, opt)
        log.info("resumed from %s", ckpt)
    else:
        if (out / "checkpoints").exists():
            shutil.rmtree(out / "checkpoints")  # a fresh run must not later resume someone else's state
        torch.manual_seed(cfg.seed)
        method.setup(examples)
        start = 0
    log_path = out / "train_log.jsonl"
    _truncate_log(log_path, start)
    model = acc.prepare(method)  # DDP on several processes; the Method itself on one
    params = [p for g in groups for p in g["params"]]
    bf16 = cfg.bf16 if cfg.bf16 is not None else next(method.model.parameters()).dtype == torch.bfloat16
    autocast = torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {method.name}",
               disable=not acc.is_main_process, dynamic_ncols=True)
    t0, rows = time.perf_counter(), []
    model.train()
    try:
        _loop(model, method, cfg, examples, val, opt, base_lrs, params, acc, autocast, bar, log_path, out, rows, t0)
    finally:
        model.eval()  # the shared model goes back to inference mode, and frozen, whatever happened
        for p in method.model.parameters():
            p.requires_grad_(False)
    acc.wait_for_everyone()
    if cfg.plot and acc.is_main_process:
        plot_log(out)
    return rows


def _loop(model, method, cfg, examples, val, opt, base_lrs, params, acc, autocast, bar, log_path, out, rows, t0):
    world, rank = acc.num_processes, acc.process_index
    for step in bar:
        scale = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * scale
        totals: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            m = step * cfg.grad_accum + micro
            idx = _batch(len(examples), (m * world + rank) * cfg.batch_size, cfg.batch_size, cfg.seed)
            seed = _seed_for(cfg, m, rank)
            torch.manual_seed(seed)  # dropout and any global draw: a function of the micro-step
            gen = torch.Generator(device="cpu").manual_seed(seed)
            ctx = acc.no_sync(model) if micro < cfg.grad_accum - 1 else nullcontext()
            with ctx:
                with autocast:
                    loss, parts = model([examples[i] for i in idx], gen, step)
                acc.backward(loss / cfg.grad_accum)
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.grad_accum
        if cfg.max_grad_norm:
            acc.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        row = {"step": step + 1, **{k: round(v, 6) for k, v in totals.items()},
               "lr": opt.param_groups[0]["lr"], "elapsed_s": round(time.perf_counter() - t0, 2)}
        checkpoint = (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps
        if checkpoint and val and acc.is_main_process:
            method.eval()  # no dropout; the same numbers whether or not the run was resumed
            with torch.no_grad(), autocast:
                row.update({f"val_{k}": round(v, 6) for k, v in method.validate(val).items()})
            method.train()
        rows.append(row)
        if acc.is_main_process:
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix({k: f"{v:.4g}" for k, v in totals.items()})
            if checkpoint:
                save_checkpoint(out, step + 1, method, opt, cfg.keep_checkpoints)


def load_backbone(cfg: TrainConfig, device=None):
    """The one backbone of a training run, on this process's device."""
    from unified_rag import Backbone

    return Backbone.from_pretrained(cfg.model, dtype=cfg.dtype, device=device or "auto")


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE; `labels` are already aligned with `logits`, -100 = ignored."""
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


def prefix_ce(backbone, prefix: torch.Tensor, targets: list[str], max_tokens: int) -> torch.Tensor:
    """Teacher-forced CE of `targets` given soft prefix tokens [B, P, H] fed as inputs_embeds to the
    same causal LM. Targets are right-padded by hand: the tokenizer's own padding side may be left."""
    tok, model = backbone.tokenizer, backbone.model
    rows = [ids[:max_tokens] for ids in tok(targets, add_special_tokens=False)["input_ids"]]
    width = max(map(len, rows))
    tgt = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], device=prefix.device)
    tmask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=prefix.device)
    emb = model.get_input_embeddings()
    P = prefix.shape[1]
    inputs = torch.cat([prefix.to(emb.weight.dtype), emb(tgt)], 1)
    mask = torch.cat([torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device), tmask], 1)
    logits = model(inputs_embeds=inputs, attention_mask=mask, use_cache=False).logits
    return token_ce(logits[:, P - 1:-1], tgt.masked_fill(tmask == 0, -100))


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """In-batch InfoNCE: row i of `a` should match row i of `b` among all rows of `b`."""
    a, b = torch.nn.functional.normalize(a.float(), dim=-1), torch.nn.functional.normalize(b.float(), dim=-1)
    logits = a @ b.T * scale
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(a), device=a.device))


def run_method(cfg: TrainConfig, out: str | os.PathLike, name: str, rows: list, build: Callable,
               *, before: Callable | None = None, after: Callable | None = None) -> Path:
    """Load the backbone, record the run, build the Method, train, save the adapter under out/adapter.
    `before`/`after(method, out)` let a method report something around training (GEM: perplexity)."""
    out = Path(out)
    acc = make_accelerator()
    backbone = load_backbone(cfg, device=acc.device)
    write_run_info(out, cfg, name, backbone)
    method = build(backbone)
    if before and acc.is_main_process:
        before(method, out)
    train(method, cfg, out, rows, accelerator=acc)
    if acc.is_main_process:
        method.save_output(out / "adapter")
        if after:
            after(method, out)
    return out / "adapter"


class LoraTrainConfig(TrainConfig):
    """Methods that train a LoRA adapter in the shared model (lora_r = 0: every shared weight)."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05


def lora_options(cfg: LoraTrainConfig) -> dict:
    return dict(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, max_length=cfg.max_length)
