"""Training on several processes, for real: torchrun starts 2 CPU processes that talk over gloo.

The method is LLM2Vec's supervised contrastive stage on the tiny model. Its InfoNCE takes in-batch
negatives, so a wrong data slice, or negatives from one process's slice only, shows from step 1 on.
Four runs through the CLI, one torchrun start-up (tests/scripts/train_legs.py runs two in it):

- one process, batch 6, steps 1-6 (in this process): the reference curve;
- 2 processes x batch 3 from scratch, steps 1-4;
- 2 processes x batch 3 resuming the one-process run's step-2 checkpoint, steps 3-4 (1 -> 2);
- one process x batch 6 resuming the 2-process run's step-4 checkpoint, steps 5-6 (2 -> 1).

Every curve must be the reference's, and every run dir must hold one run.json and one log row per step.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from trainers.plot import read_log

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [  # (query, positive, hard negative or ""): some rows have one, so the processes' counts differ
    ("What produces ATP in the cell?", "The mitochondria is the powerhouse of the cell and produces ATP.",
     "Insulin regulates blood glucose levels in the human body."),
    ("What is the capital of France?", "Paris is the capital of France and sits on the Seine.", ""),
    ("How do plants make energy?", "Photosynthesis converts light energy into chemical energy in plants.",
     "The Pythagorean theorem relates the sides of a right triangle."),
    ("Which theorem is about right triangles?", "The Pythagorean theorem relates the sides of a right triangle.", ""),
    ("What regulates blood sugar?", "Insulin regulates blood glucose levels in the human body.", ""),
    ("What does FAISS do?", "FAISS performs efficient similarity search over dense vectors.",
     "Paris is the capital of France and sits on the Seine."),
    ("Which river runs through Paris?", "The Seine flows through Paris, the capital of France.", ""),
    ("Where do plants capture light?", "Chloroplasts in plant cells capture light for photosynthesis.", ""),
]

# How far a logged number (loss, nce, val_nce, val_acc; the log keeps 6 decimals) may be from the
# one-process run's. The processes embed batches of 3, not 6 (other padding widths, so other float32
# summation orders in every matmul), and DDP all-reduces two gradients where one process runs one
# backward; Adam then turns those last-bit differences into weight updates. Measured: at most 1e-5
# over 6 steps (losses 4.3 -> 0.005). A real sharding or gathering error moves step 1 by > 0.1.
TOL = 1e-4
COMPARED = ("loss", "nce", "scale", "val_nce", "val_acc")


def _close(got: list[dict], want: list[dict]) -> float:
    """The largest difference of a compared number; fails on any other difference (steps, keys)."""
    assert [r["step"] for r in got] == [r["step"] for r in want]
    worst = 0.0
    for g, w in zip(got, want):
        assert set(g) == set(w), (g, w)
        for k in COMPARED:
            if k in w:
                worst = max(worst, abs(g[k] - w[k]))
    assert worst <= TOL, (worst, [r["loss"] for r in got], [r["loss"] for r in want])
    return worst


def _check_run_dir(out, steps: int, processes: int) -> None:
    """What process 0 alone wrote: one run.json, one log row per step (a second writer would
    duplicate rows), whole checkpoints only (no temp dirs), the adapter."""
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "checkpoints", "run.json", "train_log.jsonl"]
    run = json.loads((out / "run.json").read_text())
    assert run["processes"] == processes and run["config"]["batch_size"] == 6 // processes
    lines = (out / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(1, steps + 1))
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert all(c.startswith("step-") for c in ckpts) and ckpts[-1] == f"step-{steps:07d}", ckpts
    assert (out / "adapter" / "adapter.safetensors").is_file()


def test_two_processes_match_one_and_resume_across_world_sizes(fresh_tiny_backbone, tmp_path):
    from typer.testing import CliRunner

    from unified_rag.cli import app

    t0 = time.perf_counter()
    fresh_tiny_backbone.save_pretrained(tmp_path / "model")
    with (tmp_path / "pairs.jsonl").open("w") as f:
        for q, p, n in PAIRS:
            f.write(json.dumps({"query": q, "positive": p, **({"negative": n} if n else {})}) + "\n")
    # lora_dropout 0: each process draws its own dropout masks (seeded by step and rank), which no
    # split of one process's draws reproduces; everything else in this stage is deterministic.
    (tmp_path / "c.json").write_text(json.dumps({
        "pairs": [str(tmp_path / "pairs.jsonl")], "mntp_steps": 0, "lora_r": 4, "lora_alpha": 8,
        "lora_dropout": 0.0, "lr": 1e-2, "max_length": 64, "save_every": 2, "keep_checkpoints": 3,
        "val_examples": 2, "dtype": "fp32", "plot": False}))
    base = ["train", "llm2vec", "--config", str(tmp_path / "c.json"), "--model", str(tmp_path / "model")]
    one, two, up = tmp_path / "one", tmp_path / "two", tmp_path / "up"

    r = CliRunner().invoke(app, base + ["--out", str(one), "--batch-size", "6", "--steps", "6"])
    assert r.exit_code == 0, r.output
    want = read_log(one)
    assert want[-1]["loss"] < want[0]["loss"] / 2  # it trains: matching curves are no coincidence

    up.mkdir()  # the one-process run as it stood at its step-2 checkpoint (the log is cut back on resume)
    for name in ("run.json", "train_log.jsonl"):
        shutil.copy(one / name, up / name)
    shutil.copytree(one / "checkpoints" / "step-0000002", up / "checkpoints" / "step-0000002")

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "scripts" / "train_legs.py"),
           *base, "--out", str(two), "--batch-size", "3", "--steps", "4",
           "--then", *base, "--out", str(up), "--batch-size", "3", "--steps", "4", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert p.stdout.count("adapter written to") == 2  # once per run, by process 0, not once per process

    _check_run_dir(two, 4, processes=2)
    worst = _close(read_log(two), want[:4])
    _check_run_dir(up, 4, processes=2)
    worst = max(worst, _close(read_log(up), want[:4]))

    r = CliRunner().invoke(app, base + ["--out", str(two), "--batch-size", "6", "--steps", "6", "--resume"])
    assert r.exit_code == 0, r.output
    _check_run_dir(two, 6, processes=1)
    worst = max(worst, _close(read_log(two), want))

    r = CliRunner().invoke(app, base + ["--out", str(two), "--batch-size", "4", "--steps", "8", "--resume"])
    assert r.exit_code == 2 and "batch_size 6" in r.output  # the global micro-batch may not change
    print(f"2-process curves vs 1 process: max difference {worst:.2g} (tolerance {TOL}); "
          f"{time.perf_counter() - t0:.1f} s")
