"""The one padder (every row comes back from the batch through its mask, on either side) and the one
atomic folder writer."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from unified_rag.batching import pad

rows_st = st.lists(st.lists(st.integers(1, 1000), max_size=12), min_size=1, max_size=6)


@given(rows=rows_st, side=st.sampled_from(["left", "right"]))
def test_rows_come_back_through_the_mask(rows, side):
    ids, mask = pad(rows, 0, side)
    assert ids.shape == mask.shape == (len(rows), max(map(len, rows)))
    for r, i, m in zip(rows, ids, mask):
        assert i[m.bool()].tolist() == r and (i[~m.bool()] == 0).all()
        if r and ids.shape[1]:  # left: the last token in the last column; right: the first in the first
            assert (m[-1] if side == "left" else m[0]) == 1


def test_bad_side_is_refused():
    with pytest.raises(ValueError, match="side"):
        pad([[1]], 0, "middle")
    assert pad([[1, 2]], 0, device=torch.device("cpu"))[0].device.type == "cpu"


def test_atomic_dir_moves_whole_or_not_at_all(tmp_path):
    from unified_rag.io import atomic_dir

    final = tmp_path / "out"
    with atomic_dir(final) as d:
        (d / "a.txt").write_text("1")
        assert not final.exists()  # nothing shows until the block ends
    assert (final / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "a.txt").write_text("2")
            raise RuntimeError("killed midway")
    assert (final / "a.txt").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["out"]
    with atomic_dir(final) as d:  # replace: the new folder wins
        (d / "b.txt").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    with atomic_dir(final, replace=False) as d:  # keep: whoever finished first wins
        (d / "c.txt").write_text("4")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]
