"""Runs `unified-rag train ...` once per argument group, groups separated by `--then`, in one process,
for tests/test_train_ddp.py:

    torchrun --standalone --nproc_per_node 2 tests/scripts/train_legs.py train llm2vec ... --then train llm2vec ...

Under torchrun that is several DDP runs for one start-up (importing torch and transformers costs
seconds a process). Each group goes through the CLI exactly as `-m unified_rag.cli` would; the first
that fails ends the script with its exit code.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from unified_rag.cli import app  # noqa: E402


def main(argv: list[str]) -> int:
    groups, cur = [], []
    for a in argv:
        if a == "--then":
            groups.append(cur)
            cur = []
        else:
            cur.append(a)
    groups.append(cur)
    for g in groups:
        try:
            code = app(g, standalone_mode=False, prog_name="unified-rag")
        except SystemExit as e:
            code = e.code
        if code:
            return int(code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
