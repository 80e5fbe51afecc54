import numpy as np
import pytest
import torch

from lstmgen.data import (IGNORE_INDEX, batchify, batchify_padded, build_segmented, get_window, load_segmented,
                          num_windows, remap, save_segmented)


def test_batchify_lays_the_stream_row_after_row():
    ids = np.arange(26, dtype=np.int32)
    grid = batchify(ids, 4)
    assert grid.shape == (4, 6)
    assert grid[1].tolist() == [6, 7, 8, 9, 10, 11]  # each row is a contiguous piece of the text


def test_ranks_take_their_rows_of_the_global_layout():
    ids = np.arange(100, dtype=np.int32)
    whole = batchify(ids, 6)
    parts = [batchify(ids, 3, rank=r, world_size=2) for r in range(2)]
    assert np.array_equal(np.concatenate(parts), whole)


def test_batchify_refuses_a_stream_too_short():
    with pytest.raises(ValueError):
        batchify(np.arange(5), 4)


def test_windows_cover_every_target_once_and_targets_are_shifted_inputs():
    grid = batchify(np.arange(1, 42, dtype=np.int32), 2)  # (2, 20)
    seen = []
    for w in range(num_windows(grid, 6)):
        x, y = get_window(grid, w, 6, torch.device("cpu"))
        assert torch.equal(y[:, :-1], x[:, 1:])
        seen.append(y)
    targets = torch.cat(seen, dim=1)
    assert torch.equal(targets, torch.from_numpy(grid[:, 1:].astype(np.int64)))


def test_padded_layout_scores_every_token_and_pads_are_ignored():
    ids = np.arange(1, 12)
    grid = batchify_padded(ids, 3)
    assert grid.shape == (3, 4)
    assert (grid.reshape(-1)[:11] == ids).all() and grid.reshape(-1)[11] == IGNORE_INDEX
    x, y = get_window(grid, 0, 10, torch.device("cpu"))
    assert (x >= 0).all()  # a pad is never fed to the embedding
    assert int((y != IGNORE_INDEX).sum()) == 11 - 3 + 0  # all but each row's first token


def test_remap_expands_types_into_runs_of_ids():
    type_ids = np.array([0, 1, 2, 1], dtype=np.int32)
    table = [[5], [6, 7], []]
    assert remap(type_ids, table).tolist() == [5, 6, 7, 6, 7]
    assert remap(type_ids, [[1], [2], [3]]).tolist() == [1, 2, 3, 2]


def test_segmentation_cache_round_trips_memory_mapped(tmp_path):
    seg = build_segmented({"train": [["a", "b"], ["b"]], "valid": [["c"]]})
    assert [seg.types[i] for i in seg.splits["train"]] == ["a", "b", "\n", "b"]
    save_segmented(seg, tmp_path / "key")
    loaded = load_segmented(tmp_path / "key")
    assert loaded.types == seg.types
    assert isinstance(loaded.splits["train"], np.memmap)
    assert loaded.splits["train"].tolist() == seg.splits["train"].tolist()
    assert load_segmented(tmp_path / "missing") is None
