"""Checkpoints: out/checkpoints/step-NNNNNNN/ holds

    trainable.safetensors   Method.checkpoint_state(): trainable tensors and the method's buffers
    optimizer.safetensors   the optimizer's tensors, keyed "<param index>.<name>"
    optimizer.json          its param groups and scalar state
    state.json              {"step": optimizer steps taken}

No pickle anywhere; the frozen backbone is never copied. On several processes, process 0 writes
them; after DDP's averaged step every process holds the same state, so nothing in them depends on
the number of processes and a run resumes on another number (loop.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unified_rag.errors import InputError
from unified_rag.io import atomic_dir, atomic_write_json

from .method import Method


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer state as flat tensors (safetensors) plus JSON."""
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
    final = root / f"step-{step:07d}"
    with atomic_dir(final) as tmp:
        save_file(method.checkpoint_state(), tmp / "trainable.safetensors")
        tensors, meta = _optimizer_tensors(opt)
        save_file(tensors, tmp / "optimizer.safetensors")
        atomic_write_json(tmp / "optimizer.json", meta)
        atomic_write_json(tmp / "state.json", {"step": step})
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def warm_start(method: Method, path: Path) -> None:
    """Only the tensors of an earlier run: `init_from`, a checkpoint dir (checkpoints/step-N) or the
    adapter dir the run wrote (adapter.safetensors, bf16 where it was shipped so: the form a run that
    must continue later commits). Same method, same trainable shapes (load_checkpoint_state refuses
    anything else); the optimizer starts afresh."""
    method.load_checkpoint_state(load_file(init_file(path)))


def init_file(path: Path) -> Path:
    """The tensor file `init_from` names: a checkpoint's trainable.safetensors or an adapter.safetensors."""
    path = Path(path)
    for name in ("trainable.safetensors", "adapter.safetensors"):
        if (path / name).is_file():
            return path / name
    raise InputError(f"init_from: {path} is neither a checkpoint dir (trainable.safetensors) nor an adapter "
                     "dir (adapter.safetensors); give a run's checkpoints/step-N or its adapter")


def load_checkpoint(path: Path, method: Method, opt) -> int:
    """Restores the method's tensors and the optimizer in place; returns the step to continue from."""
    warm_start(method, path)
    _load_optimizer(opt, load_file(path / "optimizer.safetensors"), json.loads((path / "optimizer.json").read_text()))
    return int(json.loads((path / "state.json").read_text())["step"])
