"""The training loop's parts alone: when it validates and saves, what a record summarises, what a
resume restores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmgen.training.metrics import MetricsWindow
from lstmgen.training.state import CLOCK, Counters, TrainState
from lstmgen.training.timetable import LOG_EVERY, Timetable

QUIET = (False, False, False)  # the clocks say nothing


def steps_where(table: Timetable, what: str, total: int) -> list[int]:
    return [step for step in range(1, total + 1) if getattr(table.due(step, QUIET, 1, False), what)]


def test_by_steps_it_validates_every_n_steps_at_every_epoch_end_and_after_the_last_step():
    table = Timetable(windows=7, total_steps=20, eval_every=5, save_every=0)
    assert steps_where(table, "evaluate", 20) == [5, 7, 10, 14, 15, 20]
    assert steps_where(table, "save", 20) == [5, 7, 10, 14, 15, 20]  # save_every 0: at every validation
    table = Timetable(windows=7, total_steps=20, eval_every=0, save_every=3)
    assert steps_where(table, "evaluate", 20) == [7, 14, 20]  # eval_every 0: at each epoch's end
    assert steps_where(table, "save", 20) == [3, 6, 9, 12, 15, 18]


def test_by_time_it_validates_and_saves_on_the_training_clock_alone():
    table = Timetable(windows=7, total_steps=20, eval_every="30s", save_every="1m")
    assert steps_where(table, "evaluate", 19) == []  # no epoch ends: an epoch may take seconds
    assert table.clock(elapsed=29.9, since_flush=0.0) == QUIET
    assert table.clock(elapsed=30.0, since_flush=0.0) == (False, True, False)
    table.evaluated_at = 30.0
    assert table.clock(elapsed=59.0, since_flush=6.0) == (True, False, False)  # only a flush for progress
    assert table.clock(elapsed=60.0, since_flush=0.0) == (False, True, True)
    due = table.due(3, (False, True, True), pending=1, stopping=False)
    assert due.evaluate and due.save and due.flush
    assert table.due(20, QUIET, 1, False).evaluate  # the last step


def test_the_losses_are_looked_at_every_few_steps_and_before_every_save_and_stop():
    table = Timetable(windows=100, total_steps=1000, eval_every=0, save_every=0)
    assert not table.due(3, QUIET, pending=LOG_EVERY - 1, stopping=False).flush
    assert table.due(3, QUIET, pending=LOG_EVERY, stopping=False).flush
    assert table.due(3, QUIET, pending=1, stopping=True).flush  # a signal: checked before the state is saved
    assert table.due(100, QUIET, pending=1, stopping=False).flush  # an evaluation and a save


def test_a_record_summarises_the_steps_since_the_last_and_survives_a_resume():
    window = MetricsWindow()
    window.add(np.array([[2.0, 0.5], [4.0, 3.0]]), clip=1.0)
    saved = window.state_dict()
    restored = MetricsWindow()
    restored.load_state_dict(saved)
    for record in (window.summary(), restored.summary()):
        assert record["train_loss"] == 3.0 and record["train_perplexity"] == pytest.approx(np.exp(3.0))
        assert record["grad_norm_median"] == 1.75 and record["clip_fraction"] == 0.5
    empty = window.summary()  # cleared by the summary before
    assert empty["train_loss"] is None and "train_perplexity" not in empty and empty["clip_fraction"] == 0


def _state(tmp_path) -> TrainState:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainState(model, optimizer, None, device=torch.device("cpu"), rank=0, world_size=1, batch_size=2,
                      run_dir=tmp_path)


def test_a_train_state_comes_back_whole_and_a_back_off_keeps_the_clock(tmp_path):
    torch.manual_seed(0)
    state = _state(tmp_path)
    state.counters = Counters(step=7, tokens=700, best_valid=3.5, elapsed=12.0, eval_seconds=2.0, backoffs=0)
    state.window.add(np.array([[1.0, 0.2]]), clip=0.0)
    state.hidden = (torch.ones(1, 2, 4), torch.zeros(1, 2, 4))
    saved = state.state_dict()
    next_draw = torch.rand(2)

    resumed = _state(tmp_path)
    resumed.load_state_dict(saved)
    assert resumed.counters == state.counters and resumed.window.losses == [1.0]
    assert torch.equal(resumed.hidden[0], state.hidden[0]) and torch.equal(torch.rand(2), next_draw)
    for name, value in state.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value)

    backed_off = _state(tmp_path)
    backed_off.counters = Counters(step=9, elapsed=20.0, eval_seconds=3.0, backoffs=1)
    backed_off.load_state_dict(saved, clock=False)
    assert backed_off.counters.step == 7 and backed_off.counters.best_valid == 3.5
    assert [getattr(backed_off.counters, name) for name in CLOCK] == [20.0, 3.0, 1]
