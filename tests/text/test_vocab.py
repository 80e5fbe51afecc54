"""Vocab: deterministic ids, <unk> handling, frequency and size limits, encode/decode, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lstmgen.errors import LstmgenError
from lstmgen.text.vocab import Vocab

TRAIN = [["b", "a", "c", "a", "\n"], ["c", "a", "d", "b", "\n"], ["e"]]
# counts: a 3, b 2, c 2, \n 2, d 1, e 1


def test_unk_first_then_by_count_ties_by_token() -> None:
    vocab = Vocab.build(TRAIN)
    assert vocab.tokens == ["<unk>", "a", "\n", "b", "c", "d", "e"]
    assert vocab.unk_id == 0 and vocab.token_to_id("<unk>") == 0
    assert vocab.counts == [0, 3, 2, 2, 2, 1, 1]
    assert Vocab.build(reversed(TRAIN)).tokens == vocab.tokens  # order of the data does not matter


def test_min_freq_sends_rare_tokens_to_unk() -> None:
    vocab = Vocab.build(TRAIN, min_freq=2)
    assert vocab.tokens == ["<unk>", "a", "\n", "b", "c"]
    assert vocab.encode(["d", "a", "e"]).tolist() == [0, 1, 0]
    assert vocab.counts[0] == 2  # d and e now count as <unk>


def test_max_size_counts_unk() -> None:
    vocab = Vocab.build(TRAIN, max_size=3)
    assert len(vocab) == 3 and vocab.tokens == ["<unk>", "a", "\n"]
    assert len(Vocab.build(TRAIN, max_size=100)) == 7
    with pytest.raises(LstmgenError):
        Vocab.build(TRAIN, max_size=1)


def test_a_literal_unk_in_the_data_is_id_zero_not_a_second_entry() -> None:
    vocab = Vocab.build([["the", "<unk>", "cat", "<unk>", "the"]])
    assert vocab.tokens == ["<unk>", "the", "cat"]
    assert vocab.counts == [2, 2, 1]
    assert vocab.encode(["<unk>", "dog", "cat"]).tolist() == [0, 0, 2]


def test_required_tokens_are_kept_even_when_unseen_or_rare() -> None:
    vocab = Vocab.build(TRAIN, min_freq=2, required=["e", "z"])
    assert "e" in vocab and "z" in vocab and "d" not in vocab
    assert vocab.tokens[-2:] == ["e", "z"]  # still ordered by count: e once, z never
    capped = Vocab.build(TRAIN, max_size=4, required=["e", "z"])
    assert capped.tokens == ["<unk>", "a", "e", "z"]


def test_a_cap_too_small_for_the_required_tokens_is_a_user_error_not_a_silent_cut() -> None:
    with pytest.raises(LstmgenError, match="allow at least 4"):
        Vocab.build(TRAIN, max_size=3, required=["a", "e", "z"])


def test_encode_is_int32_and_decode_takes_lists_arrays_and_tensors() -> None:
    vocab = Vocab.build(TRAIN)
    ids = vocab.encode(["a", "b", "\n", "never-seen"])
    assert ids.dtype == np.int32 and ids.tolist() == [1, 3, 2, 0]
    expected = ["a", "b", "\n", "<unk>"]
    assert vocab.decode(ids) == expected
    assert vocab.decode(ids.tolist()) == expected
    assert vocab.decode(torch.tensor(ids, dtype=torch.long)) == expected
    assert vocab.encode([]).shape == (0,) and vocab.decode([]) == []
    assert vocab.id_to_token(4) == "c"
    with pytest.raises(LstmgenError):
        vocab.decode([len(vocab)])


def test_encode_handles_a_million_tokens_quickly() -> None:
    vocab = Vocab.build([[str(i) for i in range(1000)]])
    tokens = [str(i % 1200) for i in range(1_000_000)]
    ids = vocab.encode(tokens)
    assert ids.shape == (1_000_000,)
    assert int((ids == 0).sum()) == sum(1 for token in tokens if int(token) >= 1000)
    assert vocab.decode(ids[:5]) == ["0", "1", "2", "3", "4"]


def test_json_round_trip_keeps_ids_and_counts() -> None:
    vocab = Vocab.build(TRAIN, min_freq=2)
    loaded = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert loaded == vocab and loaded.counts == vocab.counts
    tokens = ["a", "d", "\n", "<unk>", "c"]
    assert loaded.encode(tokens).tolist() == vocab.encode(tokens).tolist()


def test_bad_vocabularies_are_refused() -> None:
    with pytest.raises(LstmgenError):
        Vocab(["a", "<unk>"])
    with pytest.raises(LstmgenError):
        Vocab(["<unk>", "a", "a"])
    with pytest.raises(LstmgenError):
        Vocab.from_dict({"kind": "char"})
