"""The decline decision's bound: how well an answer adapter's first-step margin (decline token minus
the best other token, five sources) separates answerable questions from answer-free ones, from the
margins its calibration stored. Every bias is one point on this curve, so no calibration reaches a
point above it: only training moves it. Several adapters are drawn on one plot, to see whether a run
moved the curve.

    python benchmarks/experiments/cpu-2core/answer/decline_roc.py [NAME=ADAPTER_DIR ...]
    # default: the shipped adapter; writes decline_roc.json and .png beside this file
"""
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
SHIPPED = "shipped=unified_rag/assets/smollm2-135m-instruct/answer"


def curve(cal_path: Path) -> dict:
    cal = json.loads(cal_path.read_text())
    ans = np.array([m["margin"] for m in cal["margins"] if m["answerable"]])
    free = np.array([m["margin"] for m in cal["margins"] if not m["answerable"]])
    auc = float((free[:, None] > ans[None, :]).mean() + 0.5 * (free[:, None] == ans[None, :]).mean())
    biases = -np.sort(np.concatenate([ans, free]))
    false_decline = [float(np.mean(ans + b >= 0)) for b in biases]
    declined = [float(np.mean(free + b >= 0)) for b in biases]
    at = {f"{x:.2f}": max((d for f, d in zip(false_decline, declined) if f <= x), default=0.0)
          for x in (0.05, 0.10, 0.15, 0.20, 0.25, 0.30)}
    return dict(source=str(cal_path), sources_per_prompt=cal.get("sources"), answerable=len(ans), answer_free=len(free),
                auc=round(auc, 4), best_decline_rate_within_false_decline=at, bias=cal["decline_bias"],
                false_decline=cal["false_decline"], decline_rate=round(1 - cal["missed_decline"], 4),
                _curve=(false_decline, declined))


out = {}
fig, ax = plt.subplots(figsize=(4.5, 4))
for arg in sys.argv[1:] or [SHIPPED]:
    name, _, path = arg.partition("=")
    c = out[name] = curve(Path(path) / "calibration.json")
    line, = ax.plot(*c.pop("_curve"), label=f"{name}: AUC {c['auc']:.2f}")
    ax.scatter([c["false_decline"]], [c["decline_rate"]], color=line.get_color(), zorder=3)
ax.axvline(0.15, ls=":", color="grey")
ax.axhline(0.60, ls=":", color="grey")
ax.set_xlabel("false declines (answerable, gold among 5 sources)")
ax.set_ylabel("declines (gold removed)")
ax.set_title("Answer adapter: the decline trade-off\n(dots: the fitted bias)", fontsize=10)
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "decline_roc.png", dpi=120)
(HERE / "decline_roc.json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(out, indent=2))
