"""What every run writes: results.json (metrics + environment + hashes), report.md, and PNG plots."""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from unified_rag.errors import require
from unified_rag.io import atomic_write_bytes, atomic_write_json


def environment(seed: int | None = None) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = dict(machine=platform.node(), platform=platform.platform(), python=sys.version.split()[0], cpu=cpu,
               cpu_count=os.cpu_count(), torch=torch.__version__, torch_threads=torch.get_num_threads(),
               cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, seed=seed,
               command=" ".join(sys.argv), time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        from unified_rag import __version__

        env["unified_rag"] = __version__
    except ImportError:
        pass
    return env


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    return "" if v is None else str(v)


def markdown(result: dict) -> str:
    """A table: one row per method, one column per metric, then headline and notes."""
    methods = result["methods"]
    cols = list(dict.fromkeys(c for d in methods.values() for c in d.get("metrics", {})))
    lines = [f"# {result['title']}", ""]
    ds = result.get("dataset", {})
    if ds:
        lines += ["Data: " + ", ".join(f"{k}={v}" for k, v in ds.items()), ""]
    if result.get("lower_is_better"):
        lines += [f"Lower {result['main_metric']} is better.", ""]
    if methods:  # suites of tables only (index-scale) have no method rows
        lines += ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, d in methods.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(d.get("metrics", {}).get(c)) for c in cols) + " |")
    for title, rows in (result.get("tables") or {}).items():
        keys = list(dict.fromkeys(k for r in rows for k in r))
        lines += ["", f"## {title}", "", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
        lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    if result.get("headline"):
        lines += ["", "## Headline", ""]
        for name, h in result["headline"].items():
            lines.append(f"- {name}: " + ", ".join(f"{k} = {'n/a' if v is None else f'{100 * v:+.1f}%'}"
                                                    for k, v in h.items()))
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    env = result.get("environment", {})
    if env:
        lines += ["", f"Machine: {env.get('cpu')} ({env.get('cpu_count')} cores), torch {env.get('torch')}, "
                      f"GPU: {env.get('cuda') or 'none'}. Command: `{env.get('command')}`"]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plots(result: dict, out: Path) -> list[str]:
    """Bar chart of each metric across methods; a top-k curve per curve family."""
    matplotlib = require("matplotlib", "bench", "benchmark plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, written = result["methods"], []
    cols = list(dict.fromkeys(c for d in methods.values() for c in d.get("metrics", {})))
    if cols and methods:  # small multiples: one panel per metric, since scales differ (tokens/s vs MFU)
        ncol = min(4, len(cols))
        nrow = -(-len(cols) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow + 0.6), squeeze=False)
        names = list(methods)
        for ax, c in zip(axes.flat, cols):
            ax.bar(range(len(names)), [methods[n]["metrics"].get(c) or 0 for n in names],
                   color=[f"C{i}" for i in range(len(names))])
            ax.set_title(c, fontsize=9)
            ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
        for ax in list(axes.flat)[len(cols):]:
            ax.axis("off")
        fig.suptitle(result["title"], fontsize=10)
        fig.tight_layout()
        _save(fig, out / "bars.png")
        plt.close(fig)
        written.append("bars.png")
    for title, rows in (result.get("tables") or {}).items():
        key, label = (result.get("table_plots") or {}).get(title, (None, None))
        if key and rows:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.bar([str(r[label]) for r in rows], [r[key] for r in rows], color=[f"C{i}" for i in range(len(rows))])
            ax.set_ylabel(key)
            ax.set_title(f"{result['title']}: {title}", fontsize=10)
            ax.tick_params(axis="x", labelsize=7, rotation=20)
            _save(fig, out / f"{title.lower().replace(' ', '_')}.png")
            plt.close(fig)
            written.append(f"{title.lower().replace(' ', '_')}.png")
    families = list(dict.fromkeys(f for d in methods.values() for f in d.get("curves", {})))
    for fam in families:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, d in methods.items():
            c = d.get("curves", {}).get(fam)
            if c:
                ks = sorted(int(k) for k in c)
                ax.plot(ks, [c[k] if k in c else c[str(k)] for k in ks], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("k")
        ax.set_ylabel(f"{fam}@k")
        ax.set_title(f"{result['title']}: {fam}@k")
        ax.legend(fontsize=8)
        _save(fig, out / f"topk_{fam}.png")
        plt.close(fig)
        written.append(f"topk_{fam}.png")
    return written


def write(result: dict, out: str | os.PathLike, *, seed: int | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {**result, "environment": environment(seed)}
    result["plots"] = plots(result, out)
    atomic_write_json(out / "results.json", result)
    atomic_write_bytes(out / "report.md", markdown(result).encode())
    return out


# The README table: method x {SciFact nDCG@10, STS-B rho, AdvBench any-harmful@5, TheoremQA nDCG@10,
# tokens/s, peak memory}, read back from the suites' results.json files.
SUMMARY = (("scifact", "ndcg@10", "SciFact nDCG@10"), ("stsb", "spearman", "STS-B ρ"),
           ("safety-general", "any_harmful@5", "AdvBench-IR any-harmful@5 (↓), general distractors"),
           ("theoremqa", "ndcg@10", "TheoremQA nDCG@10*"),
           ("efficiency", "tokens_per_s", "encode tokens/s"), ("efficiency", "peak_rss_mb", "peak RSS MB"))


def summarise(out: str | os.PathLike) -> str:
    import json

    out = Path(out)
    results = {}
    for suite in dict.fromkeys(s for s, _, _ in SUMMARY):
        # Other runs on the same data (scifact-supervised/ beside scifact/) add their methods to the row set,
        # and where two measured one method, the newer figure stands; a run on other data (scifact-1500/:
        # a sample) is a different benchmark and stays out.
        runs = [json.loads(p.read_text()) for p in [out / suite / "results.json", *sorted(out.glob(f"{suite}-*/results.json"))]
                if p.is_file()]
        if not runs:
            continue

        def data(r: dict) -> dict:  # the query instruction is the protocol of backbone rows, not the data
            return {k: v for k, v in r.get("dataset", {}).items() if k != "query_instruction"}

        same = [r for r in runs if data(r) == data(runs[0])]
        results[suite] = {**runs[0], "methods": {}}
        for r in sorted(same, key=lambda r: r.get("environment", {}).get("time", "")):
            results[suite]["methods"].update(r["methods"])
    names = list(dict.fromkeys(n for r in results.values() for n in r["methods"]))
    lines = ["| method | " + " | ".join(label for _, _, label in SUMMARY) + " |", "|---" * (len(SUMMARY) + 1) + "|"]
    for n in names:
        cells = [_fmt(results.get(s, {}).get("methods", {}).get(n, {}).get("metrics", {}).get(m)) or "–"
                 for s, m, _ in SUMMARY]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    env = next((r["environment"] for r in results.values() if "environment" in r), {})
    lines += ["", "\\* TheoremQA is the offline stand-in for BRIGHT. – = not run or not applicable.",
              f"Machine: {env.get('cpu')} ({env.get('cpu_count')} cores), GPU: {env.get('cuda') or 'none'}, "
              f"torch {env.get('torch')}. Regenerate: `unified-rag bench all --out {out}`."]
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(out / "summary.md", text.encode())
    return text
