"""The layering, read from the sources: the core (unified_rag/) never imports the packages built on it
(embedders, trainers, benchmarks) by any route, and no top-level package imports itself in a circle."""
import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("unified_rag", "embedders", "trainers", "benchmarks")
ABOVE_CORE = ("embedders", "trainers", "benchmarks")


def modules(package: str) -> dict[str, Path]:
    out = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(name: str, path: Path) -> set[str]:
    """Every module a file names in an import statement, at any depth (inside functions too), and every
    string literal given to importlib.import_module / __import__ / import_module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
        elif isinstance(node, ast.Call):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if called in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                found.add(str(node.args[0].value))
    return found


def test_the_core_imports_nothing_built_on_it():
    offending = {}
    for name, path in modules("unified_rag").items():
        bad = sorted(m for m in imports(name, path) if m.split(".")[0] in ABOVE_CORE)
        if bad:
            offending[str(path.relative_to(ROOT))] = bad
    assert not offending, offending


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle_inside_a_package(package):
    mods = modules(package)
    graph = {m: sorted({t for t in imports(m, p) if t in mods and t != m and not m.startswith(t + ".")})
             for m, p in mods.items()}
    # A package's __init__ re-exporting its own modules is not a circle: a module importing its package is.
    graph = {m: [t for t in ts if not (t == package or mods[t].name == "__init__.py")] for m, ts in graph.items()}
    seen, on_path, cycles = set(), [], []

    def visit(m):
        if m in on_path:
            cycles.append(on_path[on_path.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for t in graph[m]:
            visit(t)
        on_path.pop()

    for m in graph:
        visit(m)
    assert not cycles, cycles


def test_the_parser_sees_every_route():
    src = ("import embedders\nfrom trainers.loop import train\nimport importlib\n"
           "def f():\n    from benchmarks import cli\n    importlib.import_module('embedders.gem')\n    __import__('trainers')\n")
    p = ROOT / "tests" / "_probe_imports.py"
    try:
        p.write_text(src)
        got = imports("tests._probe_imports", p)
    finally:
        p.unlink()
    assert {"embedders", "trainers.loop", "benchmarks", "embedders.gem", "trainers"} <= got


def test_help_loads_no_model_code():
    """Every command's --help (train's defaults included) comes from torch-free modules: it stays fast."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from unified_rag.cli import app; "
            "r = [CliRunner().invoke(app, a).exit_code for a in (['--help'], ['train', 'answer', '--help'], "
            "['bench', '--help'], ['index', '--help'])]; "
            "print(r, sorted(m for m in ('torch', 'transformers', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[0, 0, 0, 0] []", out


@pytest.mark.parametrize("first", ["benchmarks.cli", "trainers.cli", "unified_rag.cli"])
def test_any_cli_module_can_be_imported_first(first):
    import subprocess
    import sys

    code = f"import {first}; import unified_rag.cli, trainers.cli, benchmarks.cli; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "ok", r.stderr[-2000:]
