import json

import pytest
import torch

from trainers.checkpoint import _load_optimizer, _optimizer_tensors
from trainers.config import TrainConfig
from trainers.data import read_pairs, read_texts, subsample
from trainers.loop import _batch
from trainers.plot import plot_log
from unified_rag.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_readers_report_bad_lines_by_number(tmp_path):
    (tmp_path / "a.tsv").write_text("1\tgood one\nbroken line\n2\t \n3\tgood two\n")
    (tmp_path / "b.jsonl").write_text('{"id": "x", "text": "hello"}\nnot json\n{"text": 3}\n{"query": "q only"}\n')
    (tmp_path / "c.txt").write_text("first\n\nthird\n")
    with pytest.warns(UserWarning, match=r"a\.tsv: skipped 2 bad line\(s\): 2, 3"):
        rows = read_texts([tmp_path / "a.tsv"])
    assert rows == [("1", "good one"), ("3", "good two")]
    with pytest.warns(UserWarning, match=r"skipped 2 bad line\(s\): 2, 3"):
        assert read_texts([tmp_path / "b.jsonl"]) == [("x", "hello"), ("b.jsonl:4", "q only")]
    with pytest.warns(UserWarning, match="2$"):
        assert [t for _, t in read_texts([tmp_path / "c.txt"])] == ["first", "third"]


def test_pairs_and_errors(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"query": "q", "response": "r"}\n{"query": "q2"}\n')
    with pytest.warns(UserWarning, match="line"):
        assert read_pairs([tmp_path / "p.jsonl"]) == [("p.jsonl:1", "q", "r", "")]
    with pytest.raises(InputError):
        read_texts([tmp_path / "missing.txt"])
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError):
        read_texts([tmp_path / "x.csv"])


def test_batches_are_a_function_of_position_only():
    a = [i for s in range(5) for i in _batch(7, s * 3, 3, seed=1)]
    assert a == _batch(7, 0, 15, seed=1)
    assert sorted(a[:7]) == list(range(7))  # each epoch is a permutation
    assert subsample(list(range(10)), 4, 0) == subsample(list(range(10)), None, 0)[:4]


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    from trainers.config import TrainConfig
    from trainers.loop import lr_scale

    flat = TrainConfig(steps=100, warmup_steps=10)
    assert [lr_scale(flat, s) for s in (0, 4, 9, 50, 99)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    cos = TrainConfig(steps=100, warmup_steps=10, lr_decay="cosine", min_lr_ratio=0.1)
    scales = [lr_scale(cos, s) for s in range(100)]
    assert scales[9] == 1.0 and abs(scales[99] - 0.1) < 1e-12 and abs(scales[54] - 0.55) < 0.01
    assert all(a >= b for a, b in zip(scales[9:], scales[10:]))  # never rises after warmup


def test_optimizer_state_round_trips_without_pickle():
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([{"params": [p], "lr": 0.1, "name": "x"}])
    p.grad = torch.ones(3)
    opt.step()
    tensors, meta = _optimizer_tensors(opt)
    json.dumps(meta)  # JSON-able: no pickle needed
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = torch.optim.AdamW([{"params": [q], "lr": 0.5, "name": "x"}])
    _load_optimizer(opt2, tensors, json.loads(json.dumps(meta)))
    for o, x in ((opt, p), (opt2, q)):
        x.grad = torch.ones(3)
        o.step()
    assert torch.equal(p, q)


def test_config_file_and_plot(tmp_path):
    (tmp_path / "c.json").write_text('{"steps": 7, "lr": 0.1}')
    cfg = TrainConfig.from_file(tmp_path / "c.json", steps=9, lr=None)
    assert cfg.steps == 9 and cfg.lr == 0.1
    with pytest.raises(ValueError):
        TrainConfig.from_file(None, stepz=1)
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps({"step": i, "loss": 1 / i}) + "\n" for i in range(1, 9)))
    assert plot_log(tmp_path).stat().st_size > 1000


def test_cli_trains_and_resumes_end_to_end(fresh_tiny_backbone, tmp_path):
    from typer.testing import CliRunner

    from unified_rag.cli import app

    from tests.conftest import CORPUS
    from trainers.plot import read_log

    fresh_tiny_backbone.save_pretrained(tmp_path / "model")
    (tmp_path / "texts.txt").write_text("\n".join(CORPUS) + "\n")
    (tmp_path / "c.json").write_text(json.dumps({"lora_r": 2, "lora_alpha": 4, "mntp_steps": 1, "batch_size": 3,
                                                 "save_every": 1, "dtype": "fp32", "plot": False}))
    args = ["train", "llm2vec", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "run"),
            "--model", str(tmp_path / "model"), "--data", str(tmp_path / "texts.txt")]
    r = CliRunner().invoke(app, args + ["--steps", "1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, args + ["--steps", "2", "--resume"])
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["method"] == "llm2vec" and run["seed"] == 0 and len(next(iter(run["data"].values()))) == 64
    assert [x["step"] for x in read_log(tmp_path / "run")] == [1, 2]
    assert (tmp_path / "run" / "adapter" / "adapter.safetensors").is_file()
    r = CliRunner().invoke(app, args + ["--lr", "0.5", "--resume"])  # another config: refused, one line
    assert r.exit_code == 2 and "another config" in r.output
