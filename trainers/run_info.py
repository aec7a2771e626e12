"""out/run.json: config, data hashes, seed, versions and the number of processes beside a run's
output; a resume must match them. On several processes, each checks a resume and process 0 writes."""
from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from unified_rag.errors import InputError
from unified_rag.io import atomic_write_json, sha256_file

from .checkpoint import init_file
from .config import RESUMABLE_CHANGES, TrainConfig


def _data_files(cfg: TrainConfig) -> list[Path]:
    """Every file a run reads (texts, pairs, BEIR dirs' files), for the hashes a resume must match."""
    paths = [Path(p) for p in [*cfg.data, *getattr(cfg, "pairs", [])]]
    if cfg.init_from is not None:
        paths.append(init_file(cfg.init_from))
    return [f for p in paths for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p])]


def write_run_info(out: Path, cfg: TrainConfig, method: str, backbone, extra: dict | None = None, *,
                   accelerator=None) -> None:
    """Write run.json; on --resume, refuse a config (beyond RESUMABLE_CHANGES), data or backbone that
    differs. batch_size may change with the number of processes when their product, the batch every
    micro-step reads across processes, stays the same: a run resumes on another number of GPUs."""
    import transformers

    from unified_rag.rag import library_version

    processes = accelerator.num_processes if accelerator is not None else 1
    info = {"method": method, "config": cfg.model_dump(mode="json"), "seed": cfg.seed, "processes": processes,
            "data": {str(p): sha256_file(p) for p in _data_files(cfg)}, "library_version": library_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "backbone": backbone.name, "backbone_fingerprint": backbone.fingerprint, **(extra or {})}
    path = out / "run.json"
    if path.is_file() and cfg.resume:
        old = json.loads(path.read_text())
        a = {k: v for k, v in old["config"].items() if k not in RESUMABLE_CHANGES | {"batch_size"}}
        b = {k: v for k, v in info["config"].items() if k not in RESUMABLE_CHANGES | {"batch_size"}}
        if a != b or old["data"] != info["data"] or old["backbone_fingerprint"] != info["backbone_fingerprint"]:
            raise InputError(f"{out} holds a run with another config, data or backbone; use a new --out "
                             "or drop --resume")
        was = old.get("processes", 1) * old["config"]["batch_size"]  # files from before "processes": one
        if was != processes * cfg.batch_size:
            need = (f"{processes} process(es) need batch_size {was // processes}" if was % processes == 0
                    else f"it does not split evenly over {processes} processes")
            raise InputError(f"{out} holds a run whose micro-batch over all processes was {was} examples "
                             f"(batch_size x processes); to resume it, {need}")
    if accelerator is not None:
        accelerator.wait_for_everyone()  # every process has checked the old run.json before it is replaced
        if not accelerator.is_main_process:
            return
    info["written_at"] = datetime.now(timezone.utc).isoformat()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, info)
