"""Saves tiny-model indexes on command in forked children, for tests/test_persistence.py.

    python tests/scripts/save_worker.py        (cwd: the repository root)

Builds the tiny backbone (as tests/conftest.py does) and two index states, A and B, once; prints one
JSON line {"A": STATE, "B": STATE, "save_s": seconds one save takes}, a STATE being
{"docs": [doc ids], "chunks": [chunk ids]}; then answers commands
read from stdin, one per line, with one JSON line each:

    init DIR    save A to DIR in this process                               -> {"ok": true}
    loop DIR    fork a child that saves B, A, B, A, ... to DIR until it is killed
                                                                            -> {"pid": PID}
                the child, after its n-th save returns (in any order with the pid line)
                                                                            -> {"saved": n}
                then wait for that child (the test SIGKILLs it)             -> {"status": STATUS}
    race DIR    fork two children that save A and B to DIR at the same moment, twice each
                                                                            -> {"codes": [CODE, CODE]}
    writers DIR MODE  two forked writers load DIR, add 3 docs each, and save one after the other
                (MODE sequential) or at once (overlapping)                  -> {"results": [...], "codes": [...]}
    (init, loop and race save with overwrite=True: each save writes exactly its own state)
    quit

Forking reuses the model and the embedded states: a fresh Python per trial would cost seconds.
"""
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
ANSWERS = os.fdopen(os.dup(1), "w")  # the protocol's own channel; fd 1 goes to stderr, where the
os.dup2(2, 1)  # tokenizer trainer's progress and any other print land

import torch  # noqa: E402

torch.set_num_threads(1)

from tests.conftest import CORPUS, make_tiny_backbone  # noqa: E402
from unified_rag import Document, MeanPoolEmbedder, UnifiedRAG  # noqa: E402


def build(backbone, docs):
    rag = UnifiedRAG(backbone, MeanPoolEmbedder(backbone, query_instruction=None),
                     chunking={"chunk_tokens": 48, "overlap_tokens": 8})
    rag.add_documents(docs, show_progress_bar=False)
    return rag


def state(rag) -> dict:
    """What a test compares a loaded index with: its doc ids, and its chunk ids."""
    return {"docs": sorted(r[0] for r in rag.store.conn.execute("SELECT doc_id FROM documents")),
            "chunks": rag.store.all_chunk_ids()}


def say(obj) -> None:
    ANSWERS.write(json.dumps(obj) + "\n")
    ANSWERS.flush()


def child(fn) -> None:
    """Run fn in a forked child that never returns into the command loop."""
    code = 1
    try:
        fn()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def writers(backbone, path: str, mode: str) -> dict:
    """Two forked writers load the index at `path` (both before either saves), each adds 3 docs of its
    own, then they save: one after the other ("sequential": the second loaded before the first saved)
    or at the same moment ("overlapping"). Each reports the doc ids its save() said were saved, or the
    error it raised."""
    loaded_r, loaded_w = os.pipe()
    go = [os.pipe() for _ in range(2)]
    done_r, done_w = os.pipe()
    pids = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:
            def work(n=n):
                rag = UnifiedRAG.load(path, model=backbone, embedder=MeanPoolEmbedder(backbone, query_instruction=None))
                ids = rag.add_texts([f"Writer {n} {os.getpid()} fact {i}: the tide number is {n * 10 + i}." for i in range(3)])
                os.write(loaded_w, b"x")
                os.read(go[n][0], 1)
                try:
                    rag.save(path, lock_timeout=120)
                    out = {"saved": ids}
                except Exception as e:  # the only acceptable failure is the typed one
                    out = {"error": type(e).__name__}
                os.write(done_w, (json.dumps(out) + "\n").encode())
            child(work)
        pids.append(pid)
    for _ in range(2):
        os.read(loaded_r, 1)  # both have loaded before anyone saves
    results = []
    with os.fdopen(done_r) as done:
        if mode == "sequential":
            for n in range(2):
                os.write(go[n][1], b"x")
                results.append(json.loads(done.readline()))
        else:
            for n in range(2):
                os.write(go[n][1], b"x")
            results = [json.loads(done.readline()) for _ in range(2)]
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
    for fd in (loaded_r, loaded_w, done_w, *(x for pair in go for x in pair)):
        try:
            os.close(fd)
        except OSError:
            pass
    return {"results": results, "codes": codes}


def main() -> None:
    backbone = make_tiny_backbone()
    a = build(backbone, [Document(text=t, id=f"d{i}") for i, t in enumerate(CORPUS)])
    b = build(backbone, [Document(text=t, id=f"d{i}") for i, t in enumerate(CORPUS[:4])]
              + [Document(text="Glaciers carve valleys as they move downhill.", id="n1"),
                 Document(text=" ".join(f"Volcano fact number {i} about lava." for i in range(30)), id="n2")])
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"save-worker-{os.getpid()}"
    t0 = time.perf_counter()
    for _ in range(4):
        a.save(scratch, overwrite=True)
    save_s = (time.perf_counter() - t0) / 4
    shutil.rmtree(scratch, ignore_errors=True)
    say({"A": state(a), "B": state(b), "save_s": save_s})
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "init":
            a.save(arg, overwrite=True)
            say({"ok": True})
        elif cmd == "loop":
            pid = os.fork()
            if pid == 0:
                def forever():
                    n = 0
                    while True:
                        (b if n % 2 == 0 else a).save(arg, overwrite=True)  # exactly B, A, B, ...
                        n += 1
                        say({"saved": n})
                child(forever)
            say({"pid": pid})
            say({"status": os.waitpid(pid, 0)[1]})
        elif cmd == "race":
            r, w = os.pipe()
            pids = []
            for rag in (a, b):
                pid = os.fork()
                if pid == 0:
                    os.close(w)

                    def twice(rag=rag):
                        os.read(r, 1)  # the barrier: returns when the parent closes the write end
                        rag.save(arg, lock_timeout=60, overwrite=True)
                        rag.save(arg, lock_timeout=60, overwrite=True)
                    child(twice)
                pids.append(pid)
            os.close(r)
            os.close(w)
            say({"codes": [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]})
        elif cmd == "writers":  # writers DIR MODE: two children load DIR, each adds 3 docs, then both save
            say(writers(backbone, *arg.split()))
        elif cmd == "quit":
            break


if __name__ == "__main__":
    main()
