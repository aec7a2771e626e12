"""Draw the module import graph of a checkout: one column per top-level package, one dot per module,
an arrow per import (at any depth, importlib strings included: tests/test_architecture.py's parser).
Red arrows go from the core (unified_rag) up to a package built on it; orange ones close a circle
inside a package.

    python docs/import_graph.py [CHECKOUT] [OUT.png]      # defaults: this checkout, docs/import-graph.png
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import test_architecture as arch  # noqa: E402

ORDER = ("unified_rag", "embedders", "trainers", "benchmarks")


def graph(root: Path) -> nx.DiGraph:
    arch.ROOT = root
    g = nx.DiGraph()
    mods = {m: p for pkg in ORDER for m, p in arch.modules(pkg).items()}
    for m, p in mods.items():
        g.add_node(m)
        for t in arch.imports(m, p):
            if t in mods and t != m and not m.startswith(t + "."):
                g.add_edge(m, t)
    return g


def draw(g: nx.DiGraph, out: Path, title: str) -> None:
    cols = {pkg: sorted(n for n in g if n.split(".")[0] == pkg) for pkg in ORDER}
    pos = {n: (ORDER.index(pkg) * 4 + (i % 2) * 1.2, -i) for pkg, ns in cols.items() for i, n in enumerate(ns)}
    up = [(a, b) for a, b in g.edges if a.startswith("unified_rag") and not b.startswith("unified_rag")]
    cyc = {(a, b) for c in nx.simple_cycles(g) for a, b in zip(c, c[1:] + c[:1])
           if a.split(".")[0] == b.split(".")[0] and not arch.modules(a.split(".")[0]).get(b, Path("x")).name == "__init__.py"}
    fig, ax = plt.subplots(figsize=(16, 0.32 * max(map(len, cols.values())) + 2))
    for a, b in g.edges:
        colour, width, z = ("#d62728", 1.6, 3) if (a, b) in up else ("#ff7f0e", 1.4, 2) if (a, b) in cyc else ("#bbbbbb", 0.4, 1)
        ax.annotate("", xy=pos[b], xytext=pos[a], zorder=z,
                    arrowprops=dict(arrowstyle="-|>", color=colour, lw=width, shrinkA=3, shrinkB=3,
                                    connectionstyle="arc3,rad=0.15"))
    for n, (x, y) in pos.items():
        ax.plot(x, y, "o", color="#1f77b4", ms=4, zorder=4)
        ax.text(x + 0.08, y, n.split(".", 1)[-1] if "." in n else n, fontsize=6.5, va="center", zorder=5)
    for pkg in ORDER:
        ax.text(ORDER.index(pkg) * 4, 1.2, pkg + "/", fontsize=11, weight="bold")
    ax.set_title(f"{title}: {g.number_of_nodes()} modules, {g.number_of_edges()} imports, "
                 f"{len(up)} from the core upwards (red), {len(cyc)} in circles inside a package (orange)", fontsize=10, pad=24)
    ax.axis("off")
    fig.savefig(out, dpi=80, bbox_inches="tight")


if __name__ == "__main__":
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent / "import-graph.png"
    draw(graph(root), out, sys.argv[3] if len(sys.argv) > 3 else root.name)
