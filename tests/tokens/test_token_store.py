import numpy as np
import pytest
import torch

from lstmgen.tokens.batches import IGNORE_INDEX, batchify, batchify_padded, device_grid, get_window, num_windows
from lstmgen.tokens.store import load_segmented, remap, segment_texts


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


def test_the_padded_grid_of_a_big_split_costs_four_bytes_a_token(tmp_path):
    # eval --split train lays the whole (memory-mapped) training split out: no int64 copies of it
    import tracemalloc

    path = tmp_path / "ids.bin"
    np.arange(2_000_000, dtype=np.int32).tofile(path)
    ids = np.memmap(path, dtype=np.int32, mode="r")
    tracemalloc.start()
    try:
        grid = batchify_padded(ids, 16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert grid.dtype == np.int32 and peak < 4.5 * len(ids)  # the grid itself: 4 bytes a token
    assert (grid.reshape(-1)[: len(ids)] == ids).all()


def test_a_grid_held_as_a_tensor_gives_the_same_windows_as_the_array():
    # On a GPU the grid lives in device memory as int32 (device_grid); its windows must be exactly
    # those cut from the array, pads included. The CPU keeps the array itself.
    grid = batchify_padded(np.arange(1, 60), 4)  # ends in pads
    assert device_grid(grid, torch.device("cpu")) is grid
    held = torch.from_numpy(grid.astype(np.int32))
    for w in range(num_windows(grid, 7)):
        for got, want in zip(get_window(held, w, 7, torch.device("cpu")), get_window(grid, w, 7, torch.device("cpu"))):
            assert got.dtype == torch.int64 and torch.equal(got, want)


def test_remap_expands_types_into_runs_of_ids():
    type_ids = np.array([0, 1, 2, 1], dtype=np.int32)
    table = [[5], [6, 7], []]
    assert remap(type_ids, table).tolist() == [5, 6, 7, 6, 7]
    assert remap(type_ids, [[1], [2], [3]]).tolist() == [1, 2, 3, 2]


def _tokenize_many(texts, workers=0):
    return [t.replace("\n", " \n ").split(" ") for t in texts]


@pytest.mark.parametrize("chunk", [3, 1 << 20])
@pytest.mark.parametrize("characters", [True, False])
def test_segmentation_cache_is_memory_mapped_and_chunking_changes_nothing(tmp_path, monkeypatch, chunk, characters):
    import lstmgen.tokens.store as data

    monkeypatch.setattr(data, "CHUNK_CHARS", chunk)
    texts = {"train": ["a b\nc d\ne", "f"], "valid": ["b a"], "test": []}
    segment_texts(texts, _tokenize_many, tmp_path / "key", characters=characters)
    seg = load_segmented(tmp_path / "key")
    assert isinstance(seg.splits["train"], np.memmap)
    expect = list("a b\nc d\ne\nf") if characters else ["a", "b", "\n", "c", "d", "\n", "e", "\n", "f"]
    assert [seg.types[i] for i in seg.splits["train"]] == expect
    assert len(seg.splits["test"]) == 0
    assert seg.type_counts("valid")[seg.types.index("a")] == 1
    assert load_segmented(tmp_path / "missing") is None


def test_remap_to_a_file_matches_in_memory(tmp_path):
    type_ids = np.array([0, 1, 2, 1] * 5, dtype=np.int32)
    table = [[5], [6, 7], []]
    assert remap(type_ids, table, out=tmp_path / "ids.bin").tolist() == remap(type_ids, table).tolist()
