"""The loss log (out/train_log.jsonl, one JSON row per optimizer step) and its plot (out/loss.png)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from unified_rag.errors import require


def read_log(out: str | os.PathLike) -> list[dict]:
    path = Path(out) / "train_log.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def plot_log(out: Path) -> Path | None:
    """One axis per logged quantity, with the held-out (val_) points on their training twin's axis."""
    rows = read_log(out)
    if not rows:
        return None
    matplotlib = require("matplotlib", "train", "the loss plot")
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
