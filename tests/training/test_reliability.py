"""Nothing lost, nothing run that shouldn't be: exact resume after kills and signals, atomic saves,
safe loading, NaN handling, one writer per run, and one clear line for every bad input.

The resume tests run real ``python -m lstmgen train`` processes and stop them at random steps
(the seed is in every failure message). They share one uninterrupted reference run that trains
beside them, and are the slowest tests here: about 15-20 s each on an idle 2-core machine, most
of it the start-up of seven Python processes that import torch.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_text
from lstmgen.cli.main import main
from lstmgen.config import DataConfig
from lstmgen.files import append_jsonl, write_json
from lstmgen.model.lstm import LSTMLM
from lstmgen.model.run_dir import read_metrics, save_weights
from lstmgen.text.splitting import split_corpus
from lstmgen.training.checkpoints import STATE_KEYS, load_latest_state, load_state, remove_stale_temporaries, save_state
from lstmgen.training.lock import RunLock

# 1.5 epochs of 369 windows (553 steps): a few seconds of training, with evaluations at steps 60,
# 120, ..., save points every 7 steps (not a multiple of anything else) and an epoch boundary inside.
# Every kind of dropout draws random numbers and the weight average is state, so all are on.
TRAIN = ["--preset", "tiny", "--epochs", "1.5", "--eval-every", "60", "--save-every", "7", "--threads", "1",
         "--seed", "5", "--dropout", "0.1", "--locked-dropout", "--embed-drop", "0.1", "--ema-decay", "0.95"]


def is_timing(key: str) -> bool:
    """Fields that measure time or memory: the only ones a resumed run may change."""
    return any(word in key for word in ("seconds", "per_s", "memory"))


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def one_thread_then_restore():
    """In-process trainings here use --threads 1 (fast on a shared 2-core machine); restore torch's setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / "语料 库"  # a space and Chinese in every path
    folder.mkdir()
    (folder / "甲 篇.txt").write_text(make_text(11, 400), encoding="utf-8")
    (folder / "乙篇.txt").write_bytes(make_text(12, 400).replace("\n", "\r\n").encode("gb18030"))
    return folder


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the training processes: one token cache for all of them."""
    return {**os.environ, "LSTMGEN_CACHE": str(tmp_path_factory.mktemp("process-cache"))}


def start(args: list[str], environment: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lstmgen", "-q", *map(str, args)], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def saved_step(run: Path, since_ns: int) -> int:
    """The step of the newest state a process started at ``since_ns`` has saved; -1 before its first."""
    try:
        fresh = [(p.stat().st_mtime_ns, p) for p in (run / "state").glob("*.pt")]
        fresh = [p for mtime, p in sorted(fresh) if mtime > since_ns]
        return int(torch.load(fresh[-1], weights_only=True)["step"]) if fresh else -1
    except FileNotFoundError:  # a state file went away under our feet (superseded): look again
        return -1


def wait_until_training(process: subprocess.Popen, run: Path, since_ns: int, step: int = 0,
                        timeout: float = 120) -> None:
    """Until ``process`` has saved the state of ``step`` or later (it is in the loop, the lock is held)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if saved_step(run, since_ns) >= step:
            return
        if process.poll() is not None:
            raise AssertionError(f"the training process ended first ({process.returncode}): "
                                 f"{process.communicate()[1][-2000:]}")
        time.sleep(0.01)
    raise AssertionError(f"the training process saved no state of step {step} or later in time")


def stop_at(step: int, command: list, run: Path, environment: dict[str, str], signum: int,
            rng: random.Random) -> tuple[subprocess.Popen, str]:
    """Run ``command`` until it has passed ``step``, then send ``signum`` a random moment later.

    Returns the ended process and what it wrote on stderr.
    """
    since = time.time_ns()
    process = start(command, environment)
    wait_until_training(process, run, since, step)
    time.sleep(rng.uniform(0.0, 0.05))  # anywhere in the next few steps, saves included
    process.send_signal(signum)
    return process, process.communicate(timeout=120)[1]


class Reference:
    """The uninterrupted run, trained in a process of its own while a test interrupts another."""

    def __init__(self, run: Path, process: subprocess.Popen) -> None:
        self.run, self.process = run, process

    def result(self) -> Path:
        _, err = self.process.communicate(timeout=300)
        assert self.process.returncode == 0, err[-2000:]
        return self.run


@pytest.fixture(scope="module")
def reference(corpus: Path, environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("reference") / "run"
    process = start(["train", corpus, "--out", run, *TRAIN], environment)
    yield Reference(run, process)
    if process.poll() is None:
        process.kill()
        process.wait()


def assert_same_run(reference: Path, resumed: Path, note: str) -> None:
    """Bit-identical best and last weights, and the same metrics but for timings."""
    best, other = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert sorted(best) == sorted(other)
    for name in best:
        assert torch.equal(best[name], other[name]), f"{name} of the best weights differs ({note})"
    last, other_last = load_state(reference), load_state(resumed)
    assert last["finished"] and other_last["finished"] and last["step"] == other_last["step"]
    for name, tensor in last["model"].items():
        assert torch.equal(tensor, other_last["model"][name]), f"{name} of the last weights differs ({note})"

    def strip(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if not is_timing(k)} for r in records]

    assert strip(read_metrics(reference)) == strip(read_metrics(resumed)), note


def files_of(run: Path) -> dict[str, bytes]:
    """Every file of a run and its bytes (the lock's files aside)."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name not in (".lock", ".lock.pid")}


def one_line_error(capsys: pytest.CaptureFixture, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("lstmgen: error:")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err  # after any progress log
    return errors[0]


# ------------------------------------------------------------------------- 1. exact resume after kills


def test_killed_at_three_random_moments_the_resumed_run_ends_bit_identical(
        corpus: Path, environment: dict[str, str], reference: Reference, tmp_path: Path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    run = tmp_path / "运行 目录"
    command = ["train", corpus, "--out", run, *TRAIN]
    for step in sorted(rng.sample(range(1, 450), 3)):
        process, _ = stop_at(step, command, run, environment, signal.SIGKILL, rng)  # no handler, no clean-up
        assert process.returncode == -signal.SIGKILL, f"seed {seed}: the run ended before it was killed"
        command = ["train", "--resume", run]
    finished = subprocess.run([sys.executable, "-m", "lstmgen", "-q", *map(str, command)], env=environment,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert_same_run(reference.result(), run, f"seed {seed}")


# ------------------------------------------------------------------------------------ 3. signals


def test_sigterm_and_ctrl_c_save_print_the_resume_command_and_exit_143_and_130(
        corpus: Path, environment: dict[str, str], reference: Reference, tmp_path: Path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    run = tmp_path / "信号 run"
    command = ["train", corpus, "--out", run, *TRAIN]
    for step, signum in zip(sorted(rng.sample(range(1, 450), 2)), (signal.SIGTERM, signal.SIGINT)):
        process, err = stop_at(step, command, run, environment, signum, rng)
        assert process.returncode == 128 + signum, err[-2000:]
        assert f"Continue with: lstmgen train --resume {shlex.quote(str(run))}" in err
        state = load_latest_state(run)
        assert state["step"] >= step and not state["finished"]  # saved where it stopped, not at a save point before
        eval_seconds = state["eval_seconds"]  # validating and saving: left out of tokens/s across resumes
        command = ["train", "--resume", run]
    finished = subprocess.run([sys.executable, "-m", "lstmgen", "-q", *map(str, command)], env=environment,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert not (run / "state" / "interrupted.pt").exists()  # superseded by the checkpoints after it
    assert eval_seconds <= read_metrics(run)[-1]["eval_seconds"]  # carried over, not restarted from 0
    assert_same_run(reference.result(), run, f"seed {seed}")


# --------------------------------------------------------------------------------- 6. one writer


def test_a_second_writer_is_refused_and_a_killed_writer_leaves_no_lock_behind(
        corpus: Path, environment: dict[str, str], tmp_path: Path, capsys):
    run = tmp_path / "run"
    since = time.time_ns()
    process = start(["train", corpus, "--out", run, *TRAIN, "--epochs", "50"], environment)
    try:
        wait_until_training(process, run, since)
        err = one_line_error(capsys, main(["train", "--resume", str(run)]))
        assert f"another lstmgen process (pid {process.pid}) is training in this run directory" in err
        err = one_line_error(capsys, main(["train", str(corpus), "--out", str(run), "--preset", "tiny"]))
        assert "already holds a run" in err
        assert process.poll() is None  # the first writer goes on undisturbed
    finally:
        process.kill()
        process.communicate()
    assert (run / ".lock.pid").read_text() == str(process.pid)  # the dead writer's files are still there...
    assert (run / ".lock").exists()
    with RunLock(run):  # ...but the kernel released its lock
        pass


# ---------------------------------------------------------------------------------- 2. atomic saves

# Saves ever bigger versions of every kind of run file, as fast as it can, until it is killed.
SAVER = r"""
import sys, torch
from pathlib import Path
from lstmgen.files import append_jsonl, write_json
from lstmgen.model.run_dir import save_weights
from lstmgen.training.checkpoints import STATE_KEYS, save_state
run = Path(sys.argv[1])
layer = torch.nn.Linear(1000, 1000)
for version in range(1, 10**9):
    with torch.no_grad():
        layer.weight.fill_(version)
        layer.bias.fill_(version)
    state = dict.fromkeys(STATE_KEYS, version)
    state["model"] = {"w": torch.full((2_000_000,), float(version))}
    save_state(run, state)
    save_weights(layer, run / "model.safetensors")
    write_json(run / "config.json", {"version": version, "padding": str(version) * 200_000})
    append_jsonl(run / "metrics.jsonl", {"step": version, "padding": "x" * 1000})
    if version == 2:
        print("saving", flush=True)
"""


def test_a_kill_in_the_middle_of_saving_leaves_the_previous_files_whole(environment: dict[str, str],
                                                                      tmp_path: Path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    runs = [tmp_path / f"run {i}" for i in range(2)]
    savers = [subprocess.Popen([sys.executable, "-c", SAVER, str(run)], env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for run in runs]
    for saver in savers:  # each process killed at its own random moment
        assert saver.stdout.readline().strip() == "saving", saver.communicate()[1][-2000:]
        time.sleep(rng.uniform(0.0, 0.3))
        saver.kill()
        saver.communicate()
    for run in runs:
        state = load_state(run)
        version = int(state["step"])
        assert version >= 2 and torch.equal(state["model"]["w"], torch.full((2_000_000,), float(version)))
        weights = load_file(run / "model.safetensors")
        assert {float(weights["weight"].min()), float(weights["weight"].max())} == {float(weights["bias"][0])}
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        assert config["padding"] == str(config["version"]) * 200_000
        assert [r["step"] for r in read_metrics(run)] == list(range(1, len(read_metrics(run)) + 1))
        assert (run / "metrics.jsonl").read_text(encoding="utf-8").endswith("\n")
        remove_stale_temporaries(run)  # a killed writer's half-written temporary files, if any
        assert sorted(p.name for p in run.rglob("*")) == sorted(
            ["state", "checkpoint.pt", "model.safetensors", "config.json", "metrics.jsonl"]), seed


def test_a_crash_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch):
    good = dict.fromkeys(STATE_KEYS, 1)
    save_state(tmp_path, good)
    before = (tmp_path / "state" / "checkpoint.pt").read_bytes()

    def half_then_crash(obj, path):
        Path(path).write_bytes(before[: len(before) // 2])  # as far as a dying writer gets
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path, dict.fromkeys(STATE_KEYS, 2))
    assert (tmp_path / "state" / "checkpoint.pt").read_bytes() == before
    assert load_state(tmp_path)["step"] == 1
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_file_of_a_run_gets_the_mode_the_umask_gives(tmp_path: Path, umask: int):
    # safetensors renames a 0600 file of its own into place; the weights must follow the umask like the rest
    old = os.umask(umask)
    try:
        save_weights(torch.nn.Linear(2, 2), tmp_path / "model.safetensors")
        save_state(tmp_path, dict.fromkeys(STATE_KEYS, 1))
        write_json(tmp_path / "config.json", {"a": 1})
    finally:
        os.umask(old)
    for path in (tmp_path / "model.safetensors", tmp_path / "state" / "checkpoint.pt", tmp_path / "config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["checkpoint.pt", "config.json", "model.safetensors",
                                                          "state"]


def test_a_torn_metrics_line_does_not_swallow_the_next_record(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "valid_perpl', encoding="utf-8")  # an older writer, killed
    append_jsonl(path, {"step": 3})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 3]


# ------------------------------------------------------------------------------------ a trained run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained on a folder of five encodings, at a path with spaces and Chinese characters."""
    root = tmp_path_factory.mktemp("trained")
    folder = root / "混合 编码"
    folder.mkdir()
    text = make_text(21, 120)
    (folder / "a.txt").write_bytes(text.encode("utf-8"))
    (folder / "b.txt").write_bytes(make_text(22, 120).encode("utf-8-sig"))
    (folder / "c.txt").write_bytes(make_text(23, 120).replace("\n", "\r\n").encode("gb18030"))
    (folder / "d.txt").write_bytes(make_text(24, 120).encode("utf-16"))
    (folder / "e.txt").write_bytes("話說那山中有一座古廟，廟裡住著一個老和尚。\n".encode("big5") * 30)
    run = root / "训练 结果"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LSTMGEN_CACHE", str(root / "cache"))
        assert main(["train", str(folder), "--out", str(run), "--preset", "tiny", "--epochs", "0.5",
                     "--threads", "1"]) == 0
    torch.set_num_threads(threads)
    return run


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "运行 副本"
    shutil.copytree(trained, copy)
    return copy


def test_a_folder_of_five_encodings_trains(trained: Path):
    config = json.loads((trained / "config.json").read_text(encoding="utf-8"))
    assert [d["encoding"] for d in config["documents"]] == ["utf-8", "utf-8-sig", "gb18030", "utf-16", "big5"]
    assert (trained / "model.safetensors").is_file() and read_metrics(trained)[-1]["split"] == "test"


# --------------------------------------------------------------------------------- 4. safe loading


class Payload:
    """A pickle that, when unpickled, runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code from the run directory ran')",)


def test_a_planted_pickle_is_refused_and_its_code_never_runs(run_copy: Path, tmp_path: Path, capsys):
    marker = tmp_path / "marker"
    planted = run_copy / "state" / "checkpoint.pt"
    torch.save({**dict.fromkeys(STATE_KEYS, 0), "model": Payload(marker)}, planted)
    torch.load(planted, weights_only=False)  # the payload is live: an unsafe loader runs it...
    assert marker.exists()
    marker.unlink()
    before = files_of(run_copy)
    err = one_line_error(capsys, main(["train", "--resume", str(run_copy)]))
    assert "checkpoint.pt: refused" in err and "never runs code" in err
    assert not marker.exists()  # ...lstmgen did not
    shutil.copy(planted, run_copy / "model.safetensors")  # the same payload where the weights belong
    err = one_line_error(capsys, main(["generate", str(run_copy), "--length", "5"]))
    assert "model.safetensors: damaged" in err and not marker.exists()
    assert files_of(run_copy) == {**before, "model.safetensors": planted.read_bytes()}


# ---------------------------------------------------------------------------------- 5. NaN and inf


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "小 语料"
    folder.mkdir()
    (folder / "a.txt").write_text(make_text(31, 200), encoding="utf-8")
    return folder


def faulty_forward(monkeypatch: pytest.MonkeyPatch, bad_calls) -> None:
    """Make the training loss NaN on the forward passes that ``bad_calls(n)`` picks (n from 1)."""
    original, calls = LSTMLM.forward, [0]

    def forward(self, inputs, targets, state=None):
        calls[0] += 1
        loss, state = original(self, inputs, targets, state)
        return (loss * float("nan") if bad_calls(calls[0]) else loss), state

    monkeypatch.setattr(LSTMLM, "forward", forward)


NAN_ARGS = ["--preset", "tiny", "--epochs", "0.5", "--schedule", "constant", "--save-every", "5",
            "--eval-every", "10", "--threads", "1"]


def test_a_run_stopped_under_a_gpus_autocast_resumes_on_a_cpu(small_corpus, tmp_path, monkeypatch):
    # On CUDA, autocast makes the LSTM hand back its carried (h, c) in bf16; a CPU's LSTM refuses an
    # fp32 input with a bf16 state. Stand in for the GPU: the same forward, its state returned in bf16,
    # and Ctrl-C at the 12th step.
    original, calls = LSTMLM.forward, [0]

    def forward(self, inputs, targets, state=None):
        calls[0] += 1
        if calls[0] == 12:
            os.kill(os.getpid(), signal.SIGINT)
        state = None if state is None else tuple(part.float() for part in state)
        loss, (h, c) = original(self, inputs, targets, state)
        return loss, (h.bfloat16(), c.bfloat16())

    monkeypatch.setattr(LSTMLM, "forward", forward)
    run = tmp_path / "run"
    assert main(["train", str(small_corpus), "--out", str(run), *NAN_ARGS]) == 130
    saved = load_latest_state(run)
    assert saved is not None and saved["step"] > 0 and "hidden" in saved
    assert all(part.dtype == torch.float32 for part in saved["hidden"])
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert read_metrics(run)[-1]["split"] == "test"


def test_a_signal_during_the_last_validation_stops_before_the_test_and_resume_only_scores_it(small_corpus, tmp_path,
                                                                                             monkeypatch, capsys):
    from lstmgen.training.loop import Trainer

    straight = tmp_path / "straight"
    assert main(["-q", "train", str(small_corpus), "--out", str(straight), *NAN_ARGS]) == 0
    original = Trainer.record_eval

    def record_eval(self):
        original(self)
        if self.state.counters.step == self.total_steps:  # Ctrl-C while the last validation runs
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "record_eval", record_eval)
    run = tmp_path / "run"
    assert main(["-q", "train", str(small_corpus), "--out", str(run), *NAN_ARGS]) == 130
    assert f"lstmgen train --resume {run}" in capsys.readouterr().err
    assert not any(r.get("split") == "test" for r in read_metrics(run))  # stopped before the test
    weights = (run / "model.safetensors").read_bytes()
    monkeypatch.setattr(Trainer, "record_eval", original)
    assert main(["-q", "train", "--resume", str(run)]) == 0
    records = read_metrics(run)
    assert [r.get("split") for r in records].count("test") == 1 and records[-1]["split"] == "test"
    assert (run / "model.safetensors").read_bytes() == weights  # nothing trained again
    def scores(records):
        return [(r["step"], r.get("train_loss"), r.get("valid_nll"), r.get("test_nll")) for r in records]

    assert scores(records) == scores(read_metrics(straight))  # as in the run no signal reached


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(small_corpus, tmp_path, monkeypatch, capsys):
    faulty_forward(monkeypatch, lambda n: n >= 23)  # from step 23 on; noticed at the save point 25
    run = tmp_path / "run"
    err = one_line_error(capsys, main(["train", str(small_corpus), "--out", str(run), *NAN_ARGS]))
    assert "the loss became NaN or infinite by step 25; the last good state (step 20) is kept" in err
    assert "--nan-policy backoff" in err
    state = load_state(run)
    assert state["step"] == 20 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert all(torch.isfinite(t).all() for t in load_file(run / "model.safetensors").values())
    assert [r["step"] for r in read_metrics(run)] == [10, 20]


def test_nan_policy_backoff_goes_back_to_the_checkpoint_once_with_half_the_lr(small_corpus, tmp_path, monkeypatch,
                                                                            capsys):
    faulty_forward(monkeypatch, lambda n: n == 23)  # one bad batch
    run = tmp_path / "run"
    assert main(["train", str(small_corpus), "--out", str(run), *NAN_ARGS, "--nan-policy", "backoff"]) == 0
    assert "non-finite loss by step 25: back to the checkpoint of step 20 with the learning rate halved" in \
        capsys.readouterr().err
    state = load_state(run)
    assert state["finished"] and state["backoffs"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    rates = {r["step"]: r["lr"] for r in read_metrics(run) if "lr" in r}
    assert rates[10] == rates[20] == 0.01 and rates[30] == 0.005


def test_a_back_off_forgets_what_came_after_the_checkpoint(small_corpus, tmp_path, monkeypatch, capsys):
    # Validated every 2 steps, saved every 10: the steps 21-24 of the path given up wrote metrics and
    # maybe best weights; the run goes on from step 20 as if they had never been.
    faulty_forward(monkeypatch, lambda n: n == 23)
    run = tmp_path / "run"
    args = ["train", str(small_corpus), "--out", str(run), "--preset", "tiny", "--epochs", "0.5", "--schedule",
            "constant", "--save-every", "10", "--eval-every", "2", "--threads", "1", "--nan-policy", "backoff"]
    assert main(args) == 0
    assert "back to the checkpoint of step 20" in capsys.readouterr().err
    steps = [r["step"] for r in read_metrics(run) if r.get("split") != "test"]
    assert steps == sorted(set(steps))  # each step once, in order: the given-up records are gone
    best = min((r for r in read_metrics(run) if "valid_nll" in r), key=lambda r: r["valid_nll"])
    rates = {r["step"]: r["lr"] for r in read_metrics(run) if "lr" in r}
    assert rates[22] == 0.005 and rates[20] == 0.01  # step 22 is the replay's, at half the rate
    assert main(["eval", str(run), "--split", "valid", "--json"]) == 0  # the weights kept are the best's
    assert json.loads(capsys.readouterr().out)["perplexity"] == pytest.approx(best["valid_perplexity"], rel=1e-6)


def test_a_nan_in_the_last_steps_before_the_time_budget_ends_is_caught(small_corpus, tmp_path, monkeypatch, capsys):
    # Slow steps, NaN from the third on, and nothing due before the 1.5 s budget ends: only the check
    # at the budget's end can see the NaN (it once ended the run with exit 0 and NaN weights).
    original = LSTMLM.forward

    def slow_forward(self, inputs, targets, state=None):
        time.sleep(0.2)
        return original(self, inputs, targets, state)

    monkeypatch.setattr(LSTMLM, "forward", slow_forward)
    faulty_forward(monkeypatch, lambda n: n >= 3)
    run = tmp_path / "run"
    args = ["train", str(small_corpus), "--out", str(run), "--preset", "tiny", "--time-budget", "1.5s",
            "--eval-every", "1000", "--save-every", "1000", "--threads", "1"]
    err = one_line_error(capsys, main(args))
    assert "the loss became NaN or infinite by step" in err and "the last good state (step 0) is kept" in err
    assert all(torch.isfinite(t).all() for t in load_state(run)["model"].values())


def test_a_huge_learning_rate_ends_with_one_clear_line(small_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(small_corpus), "--out", str(run), "--preset", "tiny", "--lr", "1e30", "--clip", "0",
            "--nan-policy", "backoff", "--threads", "1"]
    err = one_line_error(capsys, main(args))
    assert "NaN or infinite again after backing off once" in err and "lower --lr" in err
    assert all(torch.isfinite(t).all() for t in load_state(run)["model"].values())


# ---------------------------------------------------------------------------------- 7. bad inputs


def bad_corpus(kind: str, root: Path) -> Path:
    folder = root / "坏 语料"
    folder.mkdir()
    if kind == "empty folder":
        pass
    elif kind == "only empty files":
        (folder / "a.txt").write_bytes(b"")
        (folder / "b.txt").write_bytes("\r\n\u3000 \r\n\n".encode("utf-8"))
    elif kind == "binary named .txt":
        (folder / "封面.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    elif kind == "unreadable encoding":
        (folder / "roman.txt").write_bytes("Le café était fermé, même à midi.\n".encode("cp1252") * 20)
    elif kind == "index names a missing novel":
        (folder / "射雕.txt").write_text(make_text(1, 5), encoding="utf-8")
        (folder / "inf.txt").write_text("射雕，神雕侠侣", encoding="utf-8")
    elif kind == "too small for one batch":
        (folder / "a.txt").write_text("郭靖说。", encoding="utf-8")
    return folder


@pytest.mark.parametrize("kind, message", [
    ("empty folder", "holds no .txt files"),
    ("only empty files", "the corpus is empty"),
    ("binary named .txt", "封面.txt: not text"),
    ("unreadable encoding", "roman.txt: not text in UTF-8, GB18030/GBK, Big5 or UTF-16"),
    ("index names a missing novel", "names the novel '神雕侠侣'"),
    ("too small for one batch", "too small for one batch of 4 rows"),
])
def test_a_bad_corpus_ends_with_one_clear_line_and_leaves_no_run(kind, message, tmp_path, capsys):
    run = tmp_path / "runs" / "run"
    code = main(["train", str(bad_corpus(kind, tmp_path)), "--out", str(run), "--preset", "tiny"])
    assert message in one_line_error(capsys, code)
    assert not (tmp_path / "runs").exists()  # the folders made for it are gone again: fix the corpus, run it again


def test_a_failed_start_leaves_no_empty_dated_run_and_keeps_a_folder_it_did_not_make(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "no such file or folder" in one_line_error(capsys, main(["train", "missing.txt"]))
    assert list(tmp_path.iterdir()) == []  # no runs/DATE-default left for each typo
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept", encoding="utf-8")
    assert "no such file or folder" in one_line_error(capsys, main(["train", "missing.txt", "--out", "mine"]))
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "kept"


def test_a_50_mb_file_without_line_breaks_is_read_and_split(tmp_path):
    # its speed is measured by bench/read_speed.py, not asserted by a test a busy machine could fail
    path = tmp_path / "一行.txt"
    line = make_text(41, 50).replace("\n", "")
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < 50 * 2**20:
            f.write(line)
    texts, described = split_corpus(path, DataConfig())
    total = described[0]["characters"]
    assert total > 16_000_000
    assert [round(len(texts[s][0]) / total, 3) for s in ("train", "valid", "test")] == [0.9, 0.05, 0.05]


@pytest.mark.parametrize("prompt", ["龘靐齉 and Latin", "👍🏽郭靖👨‍👩‍👧", "\u200b黄蓉"])
def test_prompts_with_characters_never_seen_in_training_work(trained: Path, prompt: str, capsys):
    assert main(["generate", str(trained), "--prompt", prompt, "--length", "20", "--seed", "1"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith(prompt.strip()) and len(text) == len(prompt.strip()) + 20 and "<unk>" not in text


@pytest.mark.parametrize("option, message", [
    (["--prompt", " \u3000\t\n"], "only whitespace"),
    (["--length", "-5"], "--length"),
    (["--temperature", "-0.5"], "--temperature"),
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "-0.2"], "--top-p"),
    (["--top-p", "1.01"], "--top-p"),
])
def test_bad_generation_options_end_with_one_clear_line_and_change_nothing(trained, option, message, capsys):
    before = files_of(trained)
    assert message in one_line_error(capsys, main(["generate", str(trained), *option]))
    assert files_of(trained) == before


def damage(run: Path, how: str) -> None:
    if how == "vocab.json missing":
        (run / "vocab.json").unlink()
    elif how == "config.json corrupted":
        (run / "config.json").write_bytes(os.urandom(300))
    elif how == "tokenizer.json not JSON":
        (run / "tokenizer.json").write_text("{\"kind\": \"char\",", encoding="utf-8")
    elif how == "model.safetensors truncated":
        raw = (run / "model.safetensors").read_bytes()
        (run / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    elif how == "checkpoint.pt truncated":
        raw = (run / "state" / "checkpoint.pt").read_bytes()
        (run / "state" / "checkpoint.pt").write_bytes(raw[: len(raw) // 3])
    elif how == "format_version from the future":
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        (run / "config.json").write_text(json.dumps({**config, "format_version": 99}), encoding="utf-8")
    elif how == "vocab.json from another run":
        vocab = json.loads((run / "vocab.json").read_text(encoding="utf-8"))
        vocab["tokens"], vocab["counts"] = vocab["tokens"] + ["多余"], vocab["counts"] + [1]  # whole, but bigger
        (run / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("how, commands, message", [
    ("vocab.json missing", ("generate", "eval", "resume"), "vocab.json"),
    ("config.json corrupted", ("generate", "eval", "resume"), "config.json: damaged or unreadable"),
    ("tokenizer.json not JSON", ("generate", "eval", "resume"), "tokenizer.json: damaged or unreadable"),
    ("model.safetensors truncated", ("generate", "eval"), "model.safetensors: damaged"),
    ("checkpoint.pt truncated", ("resume",), "checkpoint.pt: damaged or truncated"),
    ("format_version from the future", ("generate", "eval", "resume"), "run format 99 is not the 1"),
    ("vocab.json from another run", ("generate", "eval", "resume"), "does not"),
])
def test_a_damaged_run_directory_ends_with_one_clear_line_and_loses_nothing(run_copy, how, commands, message,
                                                                          capsys):
    damage(run_copy, how)
    before = files_of(run_copy)
    arguments = {"generate": ["generate", str(run_copy), "--length", "5"], "eval": ["eval", str(run_copy)],
                 "resume": ["train", "--resume", str(run_copy)]}
    for command in commands:
        assert message in one_line_error(capsys, main(arguments[command])), command
        assert files_of(run_copy) == before, command


def test_resuming_a_finished_run_changes_nothing(trained: Path, capsys):
    before = files_of(trained)
    assert main(["train", "--resume", str(trained)]) == 0
    assert "the run is finished" in capsys.readouterr().err
    assert files_of(trained) == before


def test_resume_takes_where_the_run_goes_on_and_refuses_what_it_trains(run_copy: Path, capsys, monkeypatch):
    from lstmgen import device

    err = one_line_error(capsys, main(["train", "--resume", str(run_copy), "--lr", "0.1", "--time-budget", "20m"]))
    assert "--lr, --time-budget cannot be given" in err and "start a new run" in err
    config = json.loads((run_copy / "config.json").read_text(encoding="utf-8"))
    config["train"]["device"] = "cuda:7"  # made on a GPU machine, finished on this one
    config["train"]["amp"] = "bf16"  # ... in bf16, which this CPU cannot run
    (run_copy / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(run_copy / "state")  # so that it trains again
    monkeypatch.setattr(device, "bf16_problem", lambda _: "this CPU has no bf16 LSTM kernel")
    before = files_of(run_copy)
    err = one_line_error(capsys, main(["train", "--resume", str(run_copy), "--device", "cpu", "--threads", "1"]))
    assert err == "lstmgen: error: --amp bf16: this CPU has no bf16 LSTM kernel; use --amp auto or off on this machine"
    assert files_of(run_copy) == before
    assert main(["train", "--resume", str(run_copy), "--device", "cpu", "--threads", "1", "--amp", "auto"]) == 0
    assert load_state(run_copy)["finished"]


def test_a_run_killed_before_its_first_checkpoint_starts_again_on_resume(trained: Path, run_copy: Path, capsys):
    shutil.rmtree(run_copy / "state")  # config.json, tokenizer.json and vocab.json are all it had
    (run_copy / "model.safetensors").unlink()
    (run_copy / "metrics.jsonl").unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LSTMGEN_CACHE", str(trained.parent / "cache"))
        assert main(["train", "--resume", str(run_copy)]) == 0
    assert "no saved state yet; starting the run again from step 0" in capsys.readouterr().err
    assert_same_run(trained, run_copy, "restarted from step 0")


def test_eval_and_save_every_a_duration_follow_the_training_clock(small_corpus, tmp_path, monkeypatch):
    import itertools

    import lstmgen.training.loop as train_module

    ticks = itertools.count()  # a clock that moves 0.05 s each time it is read: the same run on any machine
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks) * 0.05)
    saves = []
    original = train_module.save_state

    def spy(run_dir, state, *, name="checkpoint.pt"):
        saves.append(float(state["elapsed"]))
        return original(run_dir, state, name=name)

    monkeypatch.setattr(train_module, "save_state", spy)
    run = tmp_path / "run"
    assert main(["train", str(small_corpus), "--out", str(run), "--preset", "tiny", "--epochs", "2",
                 "--eval-every", "1s", "--save-every", "3s", "--threads", "1"]) == 0
    valid = [r for r in read_metrics(run) if "valid_nll" in r]
    assert len(valid) >= 4
    for before, after in zip(valid, valid[1:-1]):  # the last comes with the last step
        assert after["seconds"] - before["seconds"] >= 0.99
    # by the clock alone: between epoch ends, and not at the first one (this clock does not land there)
    assert any(r["epoch"] % 1 for r in valid) and 1.0 not in [r["epoch"] for r in valid]
    between = saves[1:-1]  # step 0 and the finished run aside
    assert between and len(between) < len(valid) - 1  # not at every validation
    for before, after in zip(saves, between):
        assert after - before >= 3


def test_stale_temporaries_are_ours_and_nothing_else(tmp_path: Path):
    run = tmp_path / "run"
    (run / "state").mkdir(parents=True)
    # atomic_write's private folders, as a kill leaves them: one with safetensors' own temporary inside
    stale = [run / ".model.safetensors.0123456789ab.tmp", run / "state" / ".checkpoint.pt.ba9876543210.tmp"]
    (stale[0]).mkdir()
    (stale[0] / ".tmpAb12Cd").write_text("x")
    (stale[1]).mkdir()
    (stale[1] / "checkpoint.pt").write_text("x")
    old = [run / ".config.json.00112233aabb.tmp"]  # what older versions left: a file of that name
    kept = [run / ".tmpnotes.txt", run / ".lock", run / ".lock.pid", run / "notes.tmp", run / ".notes.tmp", run / "config.json",
            run / ".tmpZ9y8X7", run / ".my.backup.tmp"]
    for path in old + kept:
        path.write_text("x")
    assert remove_stale_temporaries(run) == len(stale) + len(old)
    assert sorted(p for p in run.rglob("*") if p.is_file()) == sorted(kept)
    assert sorted(p for p in run.rglob("*") if p.is_dir()) == [run / "state"]


def test_a_runs_peak_memory_is_its_own_not_its_parents():
    # A sweep starts each run from a process that may have held far more (models loaded to measure
    # finished runs); on Linux a child's ru_maxrss starts at its parent's peak from before exec.
    import numpy as np

    held = np.ones(150_000_000)  # 1.2 GB, touched, held while the child starts
    code = "import torch; from lstmgen.device import peak_memory_mb; print(peak_memory_mb(torch.device('cpu')))"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(child.stdout) < 0.5 * held.nbytes / 2**20, child.stdout
    del held
