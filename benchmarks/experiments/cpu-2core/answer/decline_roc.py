"""The decline decision's bound: how well the shipped answer adapter's first-step margin (decline token
minus the best other token, five sources) separates answerable questions from answer-free ones, from
the margins its calibration stored. Every bias is one point on this curve, so no calibration reaches
a point above it: only training moves it.

    python benchmarks/experiments/cpu-2core/answer/decline_roc.py   # writes decline_roc.json and .png beside it
"""
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
CAL = Path("unified_rag/assets/smollm2-135m-instruct/answer/calibration.json")

cal = json.loads(CAL.read_text())
ans = np.array([m["margin"] for m in cal["margins"] if m["answerable"]])
free = np.array([m["margin"] for m in cal["margins"] if not m["answerable"]])
auc = float((free[:, None] > ans[None, :]).mean() + 0.5 * (free[:, None] == ans[None, :]).mean())
biases = -np.sort(np.concatenate([ans, free]))
false_decline = [float(np.mean(ans + b >= 0)) for b in biases]
declined = [float(np.mean(free + b >= 0)) for b in biases]
at = {f"{x:.2f}": max((d for f, d in zip(false_decline, declined) if f <= x), default=0.0)
      for x in (0.05, 0.10, 0.15, 0.20, 0.25, 0.30)}
out = dict(source=str(CAL), sources_per_prompt=cal.get("sources"), answerable=len(ans), answer_free=len(free),
           auc=round(auc, 4), best_decline_rate_within_false_decline=at, shipped_bias=cal["decline_bias"],
           shipped_false_decline=cal["false_decline"], shipped_decline_rate=round(1 - cal["missed_decline"], 4))
(HERE / "decline_roc.json").write_text(json.dumps(out, indent=2) + "\n")

fig, ax = plt.subplots(figsize=(4.5, 4))
ax.plot(false_decline, declined, label=f"first-step margin, AUC {auc:.2f}")
ax.scatter([cal["false_decline"]], [1 - cal["missed_decline"]], color="k", zorder=3, label="shipped bias")
ax.axvline(0.15, ls=":", color="grey")
ax.axhline(0.60, ls=":", color="grey")
ax.set_xlabel("false declines (answerable, gold among 5 sources)")
ax.set_ylabel("declines (gold removed)")
ax.set_title("Answer adapter: the decline trade-off")
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "decline_roc.png", dpi=120)
print(json.dumps(out, indent=2))
