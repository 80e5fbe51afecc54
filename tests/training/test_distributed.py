"""Data-parallel training as users launch it: torchrun, two CPU processes over gloo, 127.0.0.1 only.

The reference is one process trained on the same global batch laid out the same way: two ranks
with --batch-size 2 must end with the weights of one process with --batch-size 4.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import torch.multiprocessing as mp

from conftest import make_text
from lstmgen.cli.main import main
from lstmgen.model.run_dir import WEIGHTS, load_run, read_metrics
from lstmgen.tokens.batches import derived_seed
from lstmgen.training import distributed as dist_utils
from lstmgen.training.checkpoints import load_latest_state, load_state

EPOCHS = 4  # 55 steps per epoch on this corpus: long enough to be stopped half-way
# With a weight average, as the default recipe has: validated and resumed across the ranks too.
# fp32: the check is that data parallelism adds up to one process's arithmetic; under bf16 autocast
# (what auto picks on a CPU with AMX) two layouts of the same batch round differently
COMMON = ["--preset", "tiny", "--dropout", "0", "--seed", "3", "--epochs", str(EPOCHS), "--device", "cpu",
          "--ema-decay", "0.9", "--amp", "off"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], env: dict[str, str], *, port: int = 0, nodes: int = 1) -> subprocess.Popen:
    """``torchrun --nproc-per-node 2 -m lstmgen ARGS`` on this machine's loopback only; or, with ``nodes``
    > 1, one of that many launches (one process each) that meet at ``port``, as on separate machines."""
    port = port or free_port()
    per_node = ["--nproc-per-node", "2"] if nodes == 1 else ["--nnodes", str(nodes), "--nproc-per-node", "1"]
    command = [sys.executable, "-m", "torch.distributed.run", *per_node, "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "lstmgen-test", "--local-addr", "127.0.0.1",
               "-m", "lstmgen", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


# Guards against a deadlock, not limits on speed: on a 2-core machine busy with other work, starting two
# ranks (each importing torch) and training a few seconds' worth took over a minute, so they are wide.
DEADLOCK_SECONDS = 600


def finish(process: subprocess.Popen, timeout: float = DEADLOCK_SECONDS) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a deadlock: take the whole launch down, then fail
        ranks = psutil.Process(process.pid).children(recursive=True)  # in sessions of their own, holding our pipes
        os.killpg(process.pid, signal.SIGKILL)
        for rank in ranks:
            with contextlib.suppress(psutil.NoSuchProcess):
                rank.kill()
        out, err = process.communicate()
        pytest.fail(f"torchrun did not finish in {timeout}s (ranks deadlocked?)\n{err[-3000:]}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "a.txt").write_text(make_text(1, 60), encoding="utf-8")
    (folder / "b.txt").write_text(make_text(2, 60), encoding="utf-8")
    return folder


def launch_environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    (root / "tmp").mkdir()  # torchrun's own torchelastic_* folders, which it leaves behind when stopped
    env.update(LSTMGEN_CACHE=str(root / "cache"), OMP_NUM_THREADS="1", TMPDIR=str(root / "tmp"))
    return env


@pytest.fixture(scope="module")
def single_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process on the global batch of two ranks with batch 2."""
    single = tmp_path_factory.mktemp("single") / "run"
    threads = torch.get_num_threads()
    try:  # one thread, as each rank had: faster on a busy machine, and the same arithmetic
        assert main(["train", str(corpus), "--out", str(single), "--batch-size", "4", "--threads", "1", *COMMON]) == 0
    finally:
        torch.set_num_threads(threads)
    return single


def assert_same_training(run: Path, single: Path) -> None:
    mine, reference = load_state(run), load_state(single)
    assert mine["step"] == reference["step"] == EPOCHS * 55
    for name, tensor in reference["model"].items():
        assert torch.allclose(mine["model"][name], tensor, rtol=1e-4, atol=1e-5), name
    assert mine["average"]["updates"] == reference["average"]["updates"] == EPOCHS * 55
    for a, b in zip(mine["average"]["averages"], reference["average"]["averages"]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    # what was logged is the global batch's: train loss, and validation scored as one process scores it
    ours, theirs = read_metrics(run), read_metrics(single)
    assert [r.get("step") for r in ours] == [r.get("step") for r in theirs]  # each record once: rank 0 alone writes
    for a, b in zip(ours, theirs):
        for key in ("train_loss", "valid_perplexity", "valid_bits_per_char", "test_perplexity"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)


@pytest.fixture(scope="module")
def two_process_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two ranks, stopped by SIGTERM to torchrun half-way, then resumed to the end with torchrun."""
    root = tmp_path_factory.mktemp("ddp")
    return stopped_and_resumed(["train", str(corpus), "--out", str(root / "run"), "--batch-size", "2", *COMMON],
                               root / "run", launch_environment(root))


def stopped_and_resumed(args: list[str], run: Path, env: dict[str, str]) -> dict:
    """Launch ``args`` on two ranks, stop them with SIGTERM after the first evaluation, resume to the end."""
    first = torchrun(args, env)
    deadline = time.monotonic() + DEADLOCK_SECONDS
    while not read_metrics(run) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the first evaluation (step 55) is written: training is under way
    os.kill(first.pid, signal.SIGTERM)  # what a cluster scheduler does: torchrun passes it to every rank
    first_out, first_err = finish(first)
    stopped = load_latest_state(run)

    second = torchrun(["train", "--resume", str(run)], env)
    out, err = finish(second)
    return {"run": run, "first_err": first_err, "stopped": stopped, "returncode": second.returncode,
            "out": out, "err": err}


def test_two_processes_train_what_one_process_trains_on_the_global_batch(two_process_run: dict, single_run: Path):
    run, stopped = two_process_run["run"], two_process_run["stopped"]
    assert two_process_run["returncode"] == 0, two_process_run["err"][-3000:]
    # the stop came half-way, and every rank's LSTM state was saved in the layout of one process
    assert stopped is not None and 0 < stopped["step"] < EPOCHS * 55, two_process_run["first_err"][-3000:]
    assert stopped["world_size"] == 2 and stopped["hidden"][0].shape == (1, 4, 32)
    assert_same_training(run, single_run)


def test_two_machines_with_one_process_each_train_what_one_process_trains(corpus: Path, single_run: Path,
                                                                          tmp_path: Path):
    # Two launches of the same command, as a job script starts it on each of two machines: both
    # processes are local rank 0 of their "machine", so each prepares the data (into one shared
    # cache here, as with a shared home folder); only global rank 0 writes the run.
    env, port = launch_environment(tmp_path), free_port()
    run = tmp_path / "run"
    nodes = [torchrun(["train", str(corpus), "--out", str(run), "--batch-size", "2", *COMMON], env, port=port,
                      nodes=2) for _ in range(2)]
    results = [finish(node) for node in nodes]
    for node, (out, err) in zip(nodes, results):
        assert node.returncode == 0, err[-3000:]
    assert sum(out.count("run: ") for out, _ in results) == 1  # one summary, from rank 0
    assert_same_training(run, single_run)


def test_each_rank_draws_its_own_dropout_masks_and_resumes_them_exactly(corpus: Path, tmp_path: Path):
    args = ["train", str(corpus), "--batch-size", "2", *COMMON, "--dropout", "0.3"]  # the last --dropout counts
    env = launch_environment(tmp_path)
    whole = torchrun([*args, "--out", str(tmp_path / "whole")], env)
    _, err = finish(whole)
    assert whole.returncode == 0, err[-3000:]
    resumed = stopped_and_resumed([*args, "--out", str(tmp_path / "resumed")], tmp_path / "resumed", env)
    assert resumed["returncode"] == 0, resumed["err"][-3000:]
    assert 0 < resumed["stopped"]["step"] < EPOCHS * 55
    mine, reference = load_state(tmp_path / "resumed"), load_state(tmp_path / "whole")
    generators = reference["rng_cpu_ranks"]  # each rank's torch generator, saved with the run
    assert len(generators) == 2 and not torch.equal(generators[0], generators[1])  # different masks
    assert torch.equal(generators[0], reference["rng_cpu"])  # rank 0 draws as one process would
    # stopped and resumed, each rank took up its own masks where it left them: the same weights, bit for bit
    for name, tensor in reference["model"].items():
        assert torch.equal(mine["model"][name], tensor), name


def test_the_console_shows_each_line_once(two_process_run: dict):
    err, out = two_process_run["err"], two_process_run["out"]
    assert err.count("resuming") == 1 and err.count("test: perplexity") == 1  # rank 1 logs warnings only
    assert out.count("run: ") == 1 and "best valid" in out  # one summary, from rank 0
    assert "terminate called" not in err and "Traceback" not in err
    assert two_process_run["first_err"].count("stopped; state saved") == 1


def test_a_distributed_run_loads_on_one_cpu_and_resumes_only_with_its_world_size(two_process_run: dict, capsys):
    run = two_process_run["run"]
    loaded = load_run(run)
    assert not any(k.startswith("module.") for k in loaded.model.state_dict())
    from safetensors import safe_open

    with safe_open(str(run / WEIGHTS), framework="pt") as f:
        assert not any(k.startswith("module.") for k in f.keys())
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["perplexity"] == pytest.approx(read_metrics(run)[-1]["test_perplexity"], rel=1e-5)
    assert main(["generate", str(run), "--prompt", "郭靖", "--length", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("郭靖")

    assert main(["train", "--resume", str(run)]) == 2
    assert "was trained on 2 processes" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the agreements alone


def _agreement_worker(rank: int, port: int, results: "mp.Queue") -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist_utils.init_from_env()
    try:
        hidden = (torch.full((1, 2, 3), float(rank)), torch.full((1, 2, 3), 10.0 + rank))
        rows = dist_utils.gather_rows(hidden)
        torch.manual_seed(derived_seed(5, rank))
        generators = dist_utils.gather_rng_states(torch.device("cpu"))["rng_cpu_ranks"]
        first = torch.rand(3)
        dist_utils.set_own_rng_state({"rng_cpu_ranks": generators}, rank=rank, device=torch.device("cpu"))
        results.put((rank, {
            "draws": (first.tolist(), torch.rand(3).tolist()),
            # rank 1 alone reached the time budget / caught SIGTERM: both must stop
            "flag": dist_utils.agree((rank == 1, False), signal.SIGTERM if rank == 1 else None),
            "clock": dist_utils.max_over_ranks(1.5 + rank),
            "loss": dist_utils.mean_over_ranks(torch.tensor([[1.0 + 2 * rank, float("nan") if rank else 0.0]])).tolist(),
            "zero": dist_utils.rank_zero_decides(rank == 0),
            "name": dist_utils.rank_zero_text(f"runs/20261127-21360{rank}-tiny"),  # the clock turned a second
            "rows": rows[0][0, :, 0].tolist(),
            "own": torch.equal(dist_utils.own_rows(rows, rank=rank, batch_size=2, device=torch.device("cpu"))[1],
                               hidden[1]),
        }))
    finally:
        dist_utils.finish()


def test_ranks_that_see_different_things_reach_the_same_decision():
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    processes = [context.Process(target=_agreement_worker, args=(rank, port, results)) for rank in range(2)]
    for p in processes:
        p.start()
    answers = dict(results.get(timeout=DEADLOCK_SECONDS) for _ in processes)
    for p in processes:
        p.join(timeout=DEADLOCK_SECONDS)
    for answer in answers.values():
        assert answer["flag"] == ((True, False), signal.SIGTERM)
        assert answer["clock"] == 2.5
        assert answer["loss"][0][0] == 2.0 and answer["loss"][0][1] != answer["loss"][0][1]  # mean; NaN spreads
        assert answer["zero"] is True
        assert answer["name"] == "runs/20261127-213600-tiny"
        assert answer["rows"] == [0.0, 0.0, 1.0, 1.0]  # rank 0's rows, then rank 1's
        assert answer["own"] is True
        first, again = answer["draws"]
        assert first == again  # its own generator back from the gathered rows
    assert answers[0]["draws"][0] != answers[1]["draws"][0]  # ...which differ between ranks
    single = torch.Generator().manual_seed(5)
    assert answers[0]["draws"][0] == torch.rand(3, generator=single).tolist()  # rank 0 draws as one process


def test_under_torchrun_a_process_never_picks_a_device_its_peers_cannot_share(monkeypatch):
    from lstmgen.device import pick_device
    from lstmgen.errors import LstmgenError

    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(LstmgenError, match="each process takes its own GPU"):
        pick_device("cuda:0")  # every rank on GPU 0: NCCL would fail, or all would crowd one card
    with pytest.raises(LstmgenError, match="give --device cpu"):
        pick_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cpu")  # a Mac under torchrun: gloo cannot reach MPS
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert pick_device("auto") == torch.device("mps")  # one process: MPS is fine


def test_when_rank_0_is_turned_away_every_rank_stops_with_it(corpus: Path, tmp_path: Path):
    from lstmgen.training.lock import RunLock

    run = tmp_path / "run"
    with RunLock(run):  # another writer holds the run directory: rank 0 alone sees it
        launch = torchrun(["train", str(corpus), "--out", str(run), *COMMON], launch_environment(tmp_path))
        out, err = finish(launch)  # before: rank 1 went on to read the data, unaware, and never ended
    assert launch.returncode != 0
    # rank 1 says rank 0's reason: torchrun may stop rank 0 (rank 1 gone) before rank 0 prints its own
    assert f"rank 0 stopped before training: {run}: another lstmgen process" in err
    assert not (run / "config.json").exists()
