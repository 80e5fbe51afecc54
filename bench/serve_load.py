"""Load on the server: many clients at once against ``lstmgen serve``, then streams whose clients leave.

    python bench/serve_load.py [--run RUN] [--clients 64] [--seconds 60] [--timeout 30]

Without --run it first trains a small run (``lstmgen train --preset tiny`` for --train-budget) on
../shared/corpora/sidamingzhu/西游记.txt, read where it lies, into a temporary folder. It then starts
``lstmgen serve RUN`` as a child process on a free port of 127.0.0.1 and runs three phases:

1. load: --clients clients send one request after another for --seconds, each a POST /generate or a
   POST /generate/stream for a short text (50-200 characters); a few of the streams ask for long texts
   (8 samples of --long-length) and leave after the first piece. A 503 must carry Retry-After; its client then waits that long (at
   most --max-pause, so the queue stays full) and goes on. Every request has a deadline (--timeout)
   and one that passes it counts as a hang. The server's resident memory and /health are sampled
   every second.
2. drain: once the clients have stopped, how long /health takes to show nothing writing or waiting.
3. leaving: --rounds times, a stream asks for a long text, and once its first piece has come,
   --leavers - 1 more requests for long texts (streams and /generate in turn) wait behind it and then
   leave. Their places in the queue must be free while the first is still being written; then that one
   leaves too, and a short request must be served without waiting for the abandoned text. The server's
   log must say, for every one of them, that it stopped writing for it.

It prints a table and exits 1 if a request hung, failed to connect, got a status other than 200 or 503,
got a 503 without Retry-After or a stream without its closing "done" (or with pieces that do not add up
to its text), if /health did not come back to nothing waiting, if a client that left kept its place in
the queue or the server went on writing for it, or if the server did not stop cleanly. Latencies are
those of the 200s: the whole answer for /generate and for a stream (to its "done"), the first piece
for a stream that leaves; "generation" is the three kinds together, without /health.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path("..") / "shared" / "corpora" / "sidamingzhu" / "西游记.txt"  # from the repository root
LEFT_LINE = "stopped writing for it"  # what serve.py logs when a client leaves before its text is written


@dataclass
class Outcome:
    """One request: what came back and how long it took."""

    kind: str  # generate | stream | leave | health
    status: int | None  # None: no answer at all
    seconds: float
    problem: str = ""  # empty when the answer was as it should be
    retry_after: float = 0.0
    health: dict | None = None  # what /health said
    written_first: bool = False  # a stream that left: its whole text had come with its first piece


@dataclass
class Sample:
    seconds: float  # since the load began
    rss: int  # the server's resident set, bytes
    generating: int
    waiting: int


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_small_run(folder: Path, budget: str) -> Path:
    corpus = REPO / CORPUS
    if not corpus.is_file():
        raise RuntimeError(f"no corpus at {CORPUS} (from the repository root); give a run with --run")
    run = folder / "run"
    cmd = [sys.executable, "-m", "lstmgen", "train", str(corpus), "--preset", "tiny", "--time-budget", budget,
           "--out", str(run)]
    print(f"training: lstmgen train {CORPUS} --preset tiny --time-budget {budget}", flush=True)
    with open(folder / "train.log", "w") as log:
        done = subprocess.run(cmd, check=False, env={**os.environ, "LSTMGEN_CACHE": str(folder / "cache")},
                              stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"training failed; see {folder / 'train.log'}")
    return run


def start_server(run: Path, port: int, log_path: Path) -> subprocess.Popen:
    """``lstmgen serve`` in its own session, so a Ctrl+C at the terminal reaches only this script, which
    then stops the server once (a second SIGINT would make uvicorn quit without finishing requests)."""
    cmd = [sys.executable, "-m", "lstmgen", "serve", str(run), "--host", "127.0.0.1", "--port", str(port)]
    # the log goes to a file: a pipe nobody reads fills up and then blocks the server mid-request
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(server: subprocess.Popen, timeout: float) -> int | None:
    """SIGINT (uvicorn's graceful stop), then a kill if it has not exited by ``timeout``; its exit code."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            return None
    return server.returncode


async def wait_until_up(http: httpx.AsyncClient, server: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode} before answering; "
                               f"its log: {log_path}")
        try:
            if (await http.get("/health", timeout=2)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the server did not answer /health within {timeout:g} s; its log: {log_path}")


async def answer(http: httpx.AsyncClient, kind: str, body: dict, timeout: float) -> Outcome:
    """One request with a deadline; a request still unanswered by then is a hang."""
    start = time.perf_counter()
    try:
        outcome = await asyncio.wait_for(_send(http, kind, body, start), timeout)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        return Outcome(kind, None, time.perf_counter() - start, "hang")
    except httpx.HTTPError as err:
        return Outcome(kind, None, time.perf_counter() - start, f"error: {type(err).__name__}: {err}")
    return outcome


async def _send(http: httpx.AsyncClient, kind: str, body: dict, start: float) -> Outcome:
    if kind == "health":
        response = await http.get("/health")
        if response.status_code != 200:
            return Outcome(kind, response.status_code, time.perf_counter() - start, f"status {response.status_code}")
        return Outcome(kind, 200, time.perf_counter() - start, health=response.json())
    if kind == "generate":
        response = await http.post("/generate", json=body)
        seconds = time.perf_counter() - start
        if response.status_code != 200:
            return refused(kind, response, seconds)
        texts = response.json().get("texts")
        ok = isinstance(texts, list) and len(texts) == 1 and len(texts[0]) == body["length"]
        return Outcome(kind, 200, seconds, "" if ok else "an answer without the text asked for")
    if kind == "leave":
        return await leave_after_first_piece(http, body, start)
    async with http.stream("POST", "/generate/stream", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return refused(kind, response, time.perf_counter() - start)
        written, done = "", None
        async for line in response.aiter_lines():
            if not line:
                continue
            event = json.loads(line)
            if event["event"] == "text":
                written += event["text"]
            elif event["event"] == "done":
                done = event
            elif event["event"] == "error":
                return Outcome(kind, 200, time.perf_counter() - start, f"error event: {event.get('detail')}")
        seconds = time.perf_counter() - start
        if done is None:
            return Outcome(kind, 200, seconds, "a stream that ended without its done event")
        if done["texts"] != [written] or len(written) != body["length"]:
            return Outcome(kind, 200, seconds, "streamed pieces that do not add up to the text")
        return Outcome(kind, 200, seconds)


async def leave_after_first_piece(http: httpx.AsyncClient, body: dict, start: float) -> Outcome:
    """A stream that leaves (closes its connection) as soon as a piece of text has come.

    The server sends what piled up as one chunk; when the client, or the server's own event loop, falls
    behind the writing thread, the first piece can come together with the closing "done": the text was
    written before the client could leave, and there was nothing to stop. ``written_first`` says so.
    """
    async with http.stream("POST", "/generate/stream", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return refused("leave", response, time.perf_counter() - start)
        received = b""
        async for chunk in response.aiter_bytes():
            received += chunk
            events = [json.loads(line)["event"] for line in received.split(b"\n")[:-1] if line]
            if "error" in events:
                return Outcome("leave", 200, time.perf_counter() - start, "error event")
            if "text" in events:  # leaving the block closes the connection mid-stream
                return Outcome("leave", 200, time.perf_counter() - start,
                               written_first="done" in events or b'"event": "done"' in received)
    return Outcome("leave", 200, time.perf_counter() - start, "a stream that ended without any text")


def refused(kind: str, response: httpx.Response, seconds: float) -> Outcome:
    if response.status_code != 503:
        return Outcome(kind, response.status_code, seconds, f"status {response.status_code}: {response.text[:200]}")
    retry_after = response.headers.get("retry-after", "")
    if not retry_after.isdigit():
        return Outcome(kind, 503, seconds, f"503 without a usable Retry-After ({retry_after!r})")
    return Outcome(kind, 503, seconds, retry_after=float(retry_after))


async def client(http: httpx.AsyncClient, index: int, deadline: float, args: argparse.Namespace,
                 outcomes: list[Outcome]) -> None:
    rng = random.Random(index)  # each client its own mix, the same from one run of the bench to the next
    while time.monotonic() < deadline:
        draw = rng.random()
        kind = "generate" if draw < 0.5 else "leave" if draw < 0.5 + args.leave_share else "stream"
        body = {"length": rng.randint(50, 200), "seed": rng.randrange(2**31)}
        if kind == "leave":  # long enough that its client leaves before the text is written
            body.update(length=args.long_length, num_samples=8)
        outcome = await answer(http, kind, body, args.timeout)
        outcomes.append(outcome)
        if outcome.status == 503:
            await asyncio.sleep(min(outcome.retry_after, args.max_pause) * rng.uniform(0.5, 1.0))
        elif outcome.status is None:  # no answer: do not spin on a server that is gone
            await asyncio.sleep(0.5)


async def sampler(http: httpx.AsyncClient, pid: int, stop: asyncio.Event, load_end: float,
                  args: argparse.Namespace, samples: list[Sample], outcomes: list[Outcome]) -> None:
    """Every second until ``stop``: the server's RSS and /health (counted in ``outcomes`` until ``load_end``)."""
    process = psutil.Process(pid)
    start = time.monotonic()
    while not stop.is_set():
        rss = process.memory_info().rss
        outcome = await answer(http, "health", {}, args.timeout)
        if time.monotonic() <= load_end:
            outcomes.append(outcome)
        health = outcome.health or {}
        samples.append(Sample(time.monotonic() - start, rss, health.get("generating", -1), health.get("waiting", -1)))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


async def drain_seconds(http: httpx.AsyncClient, timeout: float) -> float | None:
    """Seconds until /health shows nothing writing and nothing waiting; None if not within ``timeout``."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        health = (await answer(http, "health", {}, timeout)).health or {}
        if health.get("generating") == 0 and health.get("waiting") == 0:
            return time.perf_counter() - start
        await asyncio.sleep(0.02)
    return None


def count_left(log_path: Path) -> int:
    return log_path.read_text(encoding="utf-8", errors="replace").count(LEFT_LINE)


async def logged_stops(log_path: Path, expected: int, timeout: float) -> int:
    """The server's count of requests it stopped writing for, once it reaches ``expected`` (or at
    ``timeout``): it logs a stop just after /health stops counting the request, not before."""
    deadline = time.monotonic() + timeout
    while (stopped := count_left(log_path)) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return stopped


async def leave_round(http: httpx.AsyncClient, args: argparse.Namespace, log_path: Path) -> dict[str, Any]:
    """A stream for a long text; --leavers - 1 requests queued behind it (streams and /generate, in
    turn) that leave while it writes; then it leaves too, and a short request follows."""
    before = count_left(log_path)
    body = {"length": args.long_length, "num_samples": 8, "seed": 1}
    first_piece = asyncio.Event()

    async def stream(writer: bool) -> None:
        async with http.stream("POST", "/generate/stream", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"a stream that was to leave got status {response.status_code}")
            async for line in response.aiter_lines():
                event = json.loads(line) if line else {}
                if writer and event.get("event") == "text":
                    first_piece.set()

    async def health() -> dict:
        return (await answer(http, "health", {}, args.timeout)).health or {}

    async def until(condition: Any) -> dict:
        deadline = time.monotonic() + args.timeout
        while not condition(state := await health()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return state

    writer = asyncio.create_task(stream(writer=True))
    queued: list[asyncio.Task] = []
    try:
        await asyncio.wait_for(first_piece.wait(), args.timeout)
        for i in range(args.leavers - 1):
            queued.append(asyncio.create_task(
                stream(writer=False) if i % 2 == 0 else http.post("/generate", json=body)))
        full_queue = await until(lambda h: h.get("waiting") == args.leavers - 1)
        left = time.perf_counter()
        for task in queued:  # cancelling a task closes its connection: the client has left
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        emptied = await until(lambda h: h.get("waiting") == 0)
        queue_freed = time.perf_counter() - left
        still_writing = not writer.done()  # its text not yet all sent: the model was busy all along
    finally:
        writer.cancel()  # and now the one being written for leaves mid-stream
        for task in queued:
            task.cancel()
        await asyncio.gather(writer, *queued, return_exceptions=True)
    next_request = await answer(http, "generate", {"length": 20, "seed": 1}, args.timeout)
    drained = await drain_seconds(http, args.timeout)
    stopped = await logged_stops(log_path, before + args.leavers, args.timeout) - before
    return {"full_queue": full_queue, "queue_freed": queue_freed if emptied.get("waiting") == 0 else None,
            "still_writing": still_writing, "next": next_request, "drained": drained, "stopped": stopped}


def milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(share * len(ordered) + 0.999999) - 1))]


def table(outcomes: list[Outcome], seconds: float) -> list[str]:
    lines = [("| kind | requests | 200 | 503 (all with Retry-After) | other status | hangs | errors | requests/s "
             "| p50 | p99 | max |"), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in ("generate", "stream", "leave", "health", "generation"):
        rows = [o for o in outcomes if kind == o.kind or (kind == "generation" and o.kind != "health")]
        if not rows:
            continue
        ok = [o.seconds for o in rows if o.status == 200]
        busy = [o for o in rows if o.status == 503]
        busy_ok = all(o.retry_after > 0 for o in busy)
        other = sum(o.status not in (None, 200, 503) for o in rows)
        hangs = sum(o.problem == "hang" for o in rows)
        errors = sum(o.status is None and o.problem != "hang" for o in rows)
        p50 = f"{percentile(ok, 0.5) * 1000:,.0f} ms" if ok else "-"
        p99 = f"{percentile(ok, 0.99) * 1000:,.0f} ms" if ok else "-"
        longest = f"{max(ok) * 1000:,.0f} ms" if ok else "-"
        lines.append(f"| {kind} | {len(rows):,} | {len(ok):,} | {len(busy):,}{'' if busy_ok else ' (NOT all)'} "
                     f"| {other} | {hangs} | {errors} | {len(rows) / seconds:,.1f} | {p50} | {p99} | {longest} |")
    return lines


def memory_lines(samples: list[Sample], load_seconds: float) -> list[str]:
    if not samples:
        return ["no memory samples"]
    mb = 2**20
    load = [s for s in samples if s.seconds <= load_seconds]
    first = [s.rss for s in load if s.seconds < 10]
    last = [s.rss for s in load if s.seconds >= load_seconds - 10]
    lines = [(f"server RSS: start {samples[0].rss / mb:,.1f} MB, end {samples[-1].rss / mb:,.1f} MB, "
             f"max {max(s.rss for s in samples) / mb:,.1f} MB ({len(samples)} samples, one a second)")]
    if first and last:
        mean_first, mean_last = sum(first) / len(first) / mb, sum(last) / len(last) / mb
        lines.append(f"load's first 10 s: mean {mean_first:,.1f} MB; last 10 s: mean {mean_last:,.1f} MB "
                     f"({mean_last - mean_first:+,.1f} MB)")
    if load:
        tens = [[s.rss for s in load if i <= s.seconds < i + 10] for i in range(0, int(load_seconds), 10)]
        lines.append("load's RSS by 10 s (mean MB): " + ", ".join(f"{sum(t) / len(t) / mb:,.1f}" for t in tens if t))
        lines.append(f"/health during the load: at most {max(s.generating for s in load)} writing, "
                     f"{max(s.waiting for s in load)} waiting")
    return lines


async def bench(args: argparse.Namespace, run: Path, folder: Path) -> int:
    port = free_port()
    log_path = folder / "serve.log"
    server = start_server(run, port, log_path)
    failures: list[str] = []
    limits = httpx.Limits(max_connections=args.clients + args.leavers + 4, max_keepalive_connections=args.clients)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=args.timeout,
                                     limits=limits) as http, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=args.timeout) as monitor:
            await wait_until_up(monitor, server, log_path, 120)
            info = (await monitor.get("/info")).json()
            print(f"serving {run} on 127.0.0.1:{port}: {info['parameters']:,} parameters, vocabulary "
                  f"{info['vocab_size']:,}, precision {info['precision']}", flush=True)

            # 1. load
            outcomes: list[Outcome] = []
            samples: list[Sample] = []
            stop = asyncio.Event()
            print(f"load: {args.clients} clients for {args.seconds:g} s", flush=True)
            cpu_before = time.process_time()
            start = time.monotonic()
            load_end = start + args.seconds
            watcher = asyncio.create_task(sampler(monitor, server.pid, stop, load_end, args, samples, outcomes))
            await asyncio.gather(*(client(http, i, load_end, args, outcomes) for i in range(args.clients)))
            load_seconds = time.monotonic() - start
            bench_cpu = time.process_time() - cpu_before

            # 2. drain
            drained = await drain_seconds(monitor, args.timeout)
            if drained is None:
                failures.append(f"/health still showed requests {args.timeout:g} s after the clients stopped")
            left = sum(o.kind == "leave" and o.status == 200 for o in outcomes)
            written_first = sum(o.kind == "leave" and o.written_first for o in outcomes)
            stopped = await logged_stops(log_path, left - written_first, args.timeout)
            if stopped != left - written_first:
                failures.append(f"under load, the server stopped writing for {stopped} of the {left - written_first} "
                                "streams that left while their text was being written")

            # 3. leaving
            full = await answer(monitor, "generate", {"length": args.long_length, "num_samples": 8, "seed": 1},
                                args.timeout)
            if full.status != 200:
                failures.append(f"the long text for the leaving rounds: {full.problem or full.status}")
            rounds = [await leave_round(http, args, log_path) for _ in range(args.rounds)]
            stop.set()
            await watcher

        print()
        print(f"{args.clients} clients, {load_seconds:.1f} s of load (the bench itself used {bench_cpu:.1f} s "
              f"of CPU in that time), per-request deadline {args.timeout:g} s")
        print()
        print("\n".join(table(outcomes, load_seconds)))
        print()
        print("\n".join(memory_lines(samples, load_seconds)))
        print(f"under load, the server stopped writing for {stopped} of the {left} streams that left "
              f"(for {written_first} of them, the whole text had come with the first piece)")
        print(f"after the clients stopped, /health showed nothing writing or waiting within {milliseconds(drained)}")
        print(f"one long text ({args.long_length:,} characters x 8 samples) written in full: "
              f"{full.seconds * 1000:,.0f} ms")
        for i, result in enumerate(rounds, 1):
            nxt, queue = result["next"], result["full_queue"]
            print(f"leaving, round {i}: 1 stream writing, {queue.get('waiting')} requests waiting behind it left: "
                  f"nothing waiting after {milliseconds(result['queue_freed'])}, "
                  f"{'while the stream was still being written' if result['still_writing'] else 'but the stream had ended'}; "
                  f"then the stream left: the next request {nxt.status} in {milliseconds(nxt.seconds)}, "
                  f"nothing writing or waiting after {milliseconds(result['drained'])}; "
                  f"the server stopped writing for {result['stopped']} of {args.leavers}")
            if result["queue_freed"] is None:
                failures.append(f"round {i}: requests whose clients left kept their places in the queue")
            elif not result["still_writing"]:
                failures.append(f"round {i}: the queue emptied only once the long text was written (if that is "
                                "quick here, raise --long-length)")
            if result["stopped"] != args.leavers:
                failures.append(f"round {i}: the server stopped writing for {result['stopped']} of "
                                f"{args.leavers} requests whose clients left")
            if nxt.status != 200:
                failures.append(f"round {i}: the request after the others left: {nxt.problem or nxt.status}")
            elif nxt.seconds >= full.seconds:
                failures.append(f"round {i}: the request after the stream left waited as long as the abandoned "
                                "text would take")
            if result["drained"] is None:
                failures.append(f"round {i}: /health still showed requests after everyone left")
        problems: dict[str, int] = {}
        for outcome in outcomes:
            if outcome.problem:
                problems[f"{outcome.kind}: {outcome.problem}"] = problems.get(f"{outcome.kind}: {outcome.problem}", 0) + 1
        failures += [f"{count} x {problem}" for problem, count in sorted(problems.items())]
    finally:
        code = stop_server(server, 30)
    print(f"the server stopped with exit code {code}")
    if code != 0:
        failures.append(f"the server did not stop cleanly (exit code {code}); its log: {log_path}")
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run (default: train a tiny one first)")
    parser.add_argument("--train-budget", default="20s", help="training time of that tiny run")
    parser.add_argument("--clients", type=int, default=64, help="clients at once")
    parser.add_argument("--seconds", type=float, default=60, help="length of the load phase")
    parser.add_argument("--timeout", type=float, default=30, help="seconds before a request counts as hung")
    parser.add_argument("--max-pause", type=float, default=1.0, help="longest wait after a 503 (Retry-After caps it too)")
    parser.add_argument("--leave-share", type=float, default=0.05,
                        help="share of the load's requests that are streams leaving after their first piece")
    parser.add_argument("--long-length", type=int, default=5000, help="characters asked for by streams that leave")
    parser.add_argument("--leavers", type=int, default=7,
                        help="clients that leave per round: one stream being written, the rest waiting behind it")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of leaving clients after the load")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (run, server log)")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.timeout <= 0 or args.leavers < 2 or not 0 <= args.leave_share <= 0.5:
        parser.error("--clients must be at least 1, --leavers at least 2, --seconds and --timeout positive, "
                     "--leave-share between 0 and 0.5")

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    print(f"{os.cpu_count()}-core {cpu}, {datetime.datetime.now():%Y-%m-%d %H:%M}, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops the server too, as Ctrl+C does
    folder = Path(tempfile.mkdtemp(prefix="lstmgen-serve-load-"))
    try:
        run = Path(args.run) if args.run else train_small_run(folder, args.train_budget)
        code = asyncio.run(bench(args, run, folder))
    except RuntimeError as err:  # no run, or the server would not start: keep the logs
        print(err, file=sys.stderr)
        args.keep, code = True, 1
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        code = 130
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
