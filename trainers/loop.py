"""The training loop: `train(method, cfg, out, examples)` runs cfg.steps optimizer steps, logs every
step to out/train_log.jsonl, scores held-out examples and checkpoints every cfg.save_every steps.

Exact resume: the batch of every micro-step and every random draw inside it (dropout, masking,
insert positions) are functions of (seed, micro-step), never of the process's history, so a run
resumed from a checkpoint replays the stream an uninterrupted run would have seen.

Several processes: `accelerate launch --num_processes 8 -m unified_rag.cli train gem --config c.json --out d`
(torchrun works too; on a machine without CUDA the processes talk over gloo). accelerate wraps the
Method in DDP. With W processes of `batch_size` b, optimizer step t reads the same W*b*grad_accum
examples as one process with batch W*b would, process r taking the fixed slice [r*b, (r+1)*b) of
each micro-batch; in-batch negatives span every process's slice (trainers/distributed.py), and the
logged numbers are means over the processes. Process 0 alone writes files (log, checkpoints, plot;
run.json and the adapter in run.py). A checkpoint holds the optimizer step and the state every
process shares, so a run resumes on another number of processes when W*b stays the same.
"""
from __future__ import annotations

import json
import math
import logging
import os
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unified_rag.errors import InputError

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, warm_start
from .config import TrainConfig
from .distributed import mean_over_processes
from .method import Method
from .plot import plot_log

log = logging.getLogger(__name__)


def make_accelerator():
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # Several processes on a machine without CUDA (torchrun, or accelerate launch there): gloo on the
    # CPU. accelerate picks that only when told cpu=True; otherwise every process runs as a lone
    # process 0 and they all write the same files.
    cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    # Some methods leave parameters unused on some steps (GEM's NTP-only batches skip the special token).
    return Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def _batch(n: int, position: int, size: int, seed: int) -> list[int]:
    """Examples [position, position+size) of an endless stream of seeded per-epoch permutations.
    The loop reads micro-step m of process r of W at position (m*W + r)*size: the stream, and so
    each optimizer step's examples, depend on the global batch W*size only."""
    out, cache = [], {}
    for p in range(position, position + size):
        epoch = p // n
        if epoch not in cache:
            cache[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
        out.append(cache[epoch][p % n])
    return out


def lr_scale(cfg: TrainConfig, step: int) -> float:
    """The factor on each group's lr at (0-based) optimizer step `step`: linear warmup, then constant or cosine."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_decay == "constant":
        return 1.0
    span = max(1, cfg.steps - 1 - cfg.warmup_steps)
    t = min(1.0, max(0, step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _seed_for(cfg: TrainConfig, micro: int, rank: int) -> int:
    """Process r's draws (dropout, masking) differ from process 0's; a single process is rank 0."""
    return (cfg.seed * 1_000_003 + micro * 101 + rank) % (2**63)


def _truncate_log(path: Path, upto: int) -> None:
    """Drop log lines past the checkpoint a resume restarts from, so the curve has no duplicates."""
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= upto]
        path.write_text("".join(ln + "\n" for ln in keep))


@dataclass
class LoopState:
    """What the loop reads and writes at every step, set up once by train()."""
    cfg: TrainConfig
    method: Method  # validate() and checkpoints go to the Method itself ...
    model: torch.nn.Module  # ... the forward to it as accelerate prepared it (DDP on several processes)
    acc: Any  # the accelerate.Accelerator
    opt: torch.optim.Optimizer
    base_lrs: list[float]  # each param group's lr before warmup scales it
    params: list[torch.nn.Parameter]  # every trainable tensor, clipped together
    autocast: AbstractContextManager
    examples: list  # training examples
    val: list  # held-out examples, scored at every checkpoint
    out: Path
    log_path: Path
    bar: Any  # tqdm over the steps still to take
    t0: float = field(default_factory=time.perf_counter)
    rows: list[dict] = field(default_factory=list)  # the log rows of this process's steps


def train(method: Method, cfg: TrainConfig, out: str | os.PathLike, examples: list, *, accelerator=None) -> list[dict]:
    """Train `method` on `examples` for cfg.steps optimizer steps; returns the loss log."""
    from tqdm.auto import tqdm

    out = Path(out)
    acc = accelerator or make_accelerator()
    main = acc.is_main_process  # process 0 alone writes files; the others only read them
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.val_examples and type(method).validate is Method.validate:
        raise InputError(f"{method.name} scores nothing held out: val_examples would only remove training data")
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
        if main and (out / "checkpoints").exists():
            shutil.rmtree(out / "checkpoints")  # a fresh run must not later resume someone else's state
        torch.manual_seed(cfg.seed)
        method.setup(examples)
        if cfg.init_from is not None:
            warm_start(method, Path(cfg.init_from))
            log.info("warm start from %s", cfg.init_from)
        start = 0
    # Every process has read the checkpoint (or seen none) before process 0 removes or prunes any.
    acc.wait_for_everyone()
    log_path = out / "train_log.jsonl"
    if main:
        _truncate_log(log_path, start)
    model = acc.prepare(method)  # DDP on several processes; the Method itself on one
    bf16 = cfg.bf16 if cfg.bf16 is not None else next(method.model.parameters()).dtype == torch.bfloat16
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {method.name}",
               disable=not main, dynamic_ncols=True)
    s = LoopState(cfg=cfg, method=method, model=model, acc=acc, opt=opt, base_lrs=base_lrs,
                  params=[p for g in groups for p in g["params"]],
                  autocast=torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16),
                  examples=examples, val=val, out=out, log_path=log_path, bar=bar)
    model.train()
    try:
        _loop(s)
    finally:
        model.eval()  # the shared model goes back to inference mode, and frozen, whatever happened
        for p in method.model.parameters():
            p.requires_grad_(False)
    acc.wait_for_everyone()
    if cfg.plot and acc.is_main_process:
        plot_log(out)
    return s.rows


def _loop(s: LoopState) -> None:
    cfg, acc = s.cfg, s.acc
    world, rank = acc.num_processes, acc.process_index
    for step in s.bar:
        scale = lr_scale(cfg, step)
        for g, lr in zip(s.opt.param_groups, s.base_lrs):
            g["lr"] = lr * scale
        totals: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            m = step * cfg.grad_accum + micro
            idx = _batch(len(s.examples), (m * world + rank) * cfg.batch_size, cfg.batch_size, cfg.seed)
            seed = _seed_for(cfg, m, rank)
            torch.manual_seed(seed)  # dropout and any global draw: a function of the micro-step
            gen = torch.Generator(device="cpu").manual_seed(seed)
            ctx = acc.no_sync(s.model) if micro < cfg.grad_accum - 1 else nullcontext()
            with ctx:
                with s.autocast:
                    loss, parts = s.model([s.examples[i] for i in idx], gen, step)
                acc.backward(loss / cfg.grad_accum)
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.grad_accum
        if cfg.max_grad_norm:
            acc.clip_grad_norm_(s.params, cfg.max_grad_norm)
        s.opt.step()
        s.opt.zero_grad(set_to_none=True)
        totals = mean_over_processes(totals)  # the global batch's numbers (unchanged on one process)
        row = {"step": step + 1, **{k: round(v, 6) for k, v in totals.items()},
               "lr": s.opt.param_groups[0]["lr"], "elapsed_s": round(time.perf_counter() - s.t0, 2)}
        checkpoint = (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps
        if checkpoint and s.val and acc.is_main_process:
            s.method.eval()  # no dropout; the same numbers whether or not the run was resumed
            with torch.no_grad(), s.autocast:
                row.update({f"val_{k}": round(v, 6) for k, v in s.method.validate(s.val).items()})
            s.method.train()
        s.rows.append(row)
        if acc.is_main_process:
            with s.log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            s.bar.set_postfix({k: f"{v:.4g}" for k, v in totals.items()})
            if checkpoint:
                save_checkpoint(s.out, step + 1, s.method, s.opt, cfg.keep_checkpoints)
