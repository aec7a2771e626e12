"""Several processes (torchrun, `accelerate launch`): what training needs beyond DDP's gradient average.

DDP averages the gradients of the processes' losses. That equals one process with the global batch
only for a loss that is a mean over independent examples. A loss with in-batch negatives (InfoNCE)
is not one: each process would see only its own slice as negatives. `gather_rows` gives every
process the whole global batch's rows, so the loss (and its gradient) is the single process's.

On one process (or with no process group) every helper returns its input unchanged: single-process
training runs exactly the code it ran before. The collectives run only while gradients are on:
held-out scoring (`Method.validate`, under no_grad) runs on process 0 alone and must not wait for
the others.
"""
from __future__ import annotations

import json

import torch


def world_size() -> int:
    d = torch.distributed
    return d.get_world_size() if d.is_available() and d.is_initialized() else 1


def active() -> bool:
    """True while training with several processes: the loss needs every process's rows."""
    return world_size() > 1 and torch.is_grad_enabled()


class _ScaleGrad(torch.autograd.Function):
    """The identity, with the gradient multiplied by `factor` on the way back."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows of `x` (dim 0), in rank order; the counts may differ between processes.

    Each process then computes the loss over the global batch, the same value everywhere. Only its
    own rows carry a gradient (the others are copies), scaled by the number of processes W: DDP sums
    the processes' gradients and divides by W, so the result is the global loss's gradient, exactly
    what one process holding the whole batch would get. A parameter used in the loss directly (a
    learned temperature) gets the full gradient on every process, and the average keeps it.
    """
    if not active():
        return x
    d = torch.distributed
    world, rank = d.get_world_size(), d.get_rank()
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    d.all_gather(counts, count)
    counts = [int(c) for c in counts]
    width = max(counts)
    if width == 0:
        return x
    buf = x.detach()
    if x.shape[0] < width:
        buf = torch.cat([buf, buf.new_zeros(width - x.shape[0], *x.shape[1:])])
    parts = [torch.empty_like(buf) for _ in range(world)]
    d.all_gather(parts, buf.contiguous())
    parts = [p[:c] for p, c in zip(parts, counts)]
    parts[rank] = _ScaleGrad.apply(x, world)
    return torch.cat(parts)


def _gather_bytes(data: bytes) -> list[bytes]:
    """Every process's bytes, in rank order (lengths may differ)."""
    d = torch.distributed
    x = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    count = torch.tensor([x.numel()])
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    d.all_gather(counts, count)
    width = max(int(c) for c in counts)
    buf = torch.cat([x, x.new_zeros(width - x.numel())])
    parts = [torch.empty_like(buf) for _ in counts]
    d.all_gather(parts, buf)
    return [bytes(p[: int(c)].tolist()) for p, c in zip(parts, counts)]


def gather_list(items: list) -> list:
    """Every process's items (JSON values: the batch's texts), concatenated in rank order. As JSON,
    not torch's all_gather_object, which pickles: nothing here unpickles, even between ranks."""
    if not active():
        return items
    return [x for part in _gather_bytes(json.dumps(items).encode()) for x in json.loads(part)]


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each key's mean over the processes: the logged loss of a step is the loss of the global batch,
    comparable with a single process's. Every process must call it, with the same keys."""
    if world_size() == 1:
        return values
    keys = list(values)  # the same code on every process: the same keys, in the same order
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist())}
