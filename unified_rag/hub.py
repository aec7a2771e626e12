"""The Hugging Face hub, for adapters and published checkpoints: safetensors and JSON only."""
from __future__ import annotations

from pathlib import Path

from .errors import ModelLoadError


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not Path(spec).exists()


def hub_dir(repo_id: str, what: str, extra: tuple[str, ...] = ()) -> Path:
    """A hub repo's files in the local HF cache (downloaded unless HF_HUB_OFFLINE is set): safetensors and
    JSON only, never code or pickles; `extra`: named files a layout needs besides (its loader reads them
    safely, e.g. LLM2Vec-Gen's run_config.yml and its heads with weights_only=True)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.md", *extra]))
    except Exception as e:  # offline and not cached, no such repo, no network: all one answer for the user
        raise ModelLoadError(f"cannot get {what} {repo_id!r} from the Hugging Face hub ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}); give a local dir, or download it first") from None


def hub_has(repo_id: str, filename: str, kw: dict) -> bool:
    """Whether a hub repo holds `filename` (cached or online); False when that cannot be told."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo_id, filename, revision=kw.get("revision"), cache_dir=kw.get("cache_dir"),
                        local_files_only=bool(kw.get("local_files_only")))
        return True
    except Exception:  # no such file, offline, no such repo: transformers then reports what is wrong
        return False
