"""Padding: the one place where rows of token ids become a batch."""
from __future__ import annotations

import torch


def pad(rows: list[list[int]], pad_id: int, side: str = "right", device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids as one [B, width] LongTensor, padded with `pad_id` on `side` ("right" or
    "left": left keeps every row's last token in the last column, as generation needs), and the
    attention mask (1 on real tokens)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(map(len, rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            cols = slice(width - len(r), width) if side == "left" else slice(0, len(r))
            ids[i, cols] = torch.as_tensor(r, dtype=torch.long)
            mask[i, cols] = 1
    return ids.to(device), mask.to(device)
