"""The HTTP API and the page's files, through FastAPI's TestClient and through a real uvicorn server."""

import contextlib
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from conftest import make_text
from lstmgen.cli.main import main
from lstmgen.serving.app import MAX_BODY_BYTES, MAX_CONTEXT_CHARS, MAX_PROMPT_CHARS, MAX_PROMPTS, create_app  # noqa: E402
from lstmgen.serving.desk import MAX_WAITING  # noqa: E402


@pytest.fixture(scope="module")
def trained(tiny_run_dir: Path) -> Path:
    return tiny_run_dir


@pytest.fixture(scope="module")
def client(trained: Path) -> TestClient:
    return TestClient(create_app(trained))


@pytest.fixture(scope="module")
def server(trained: Path):
    with serving(create_app(trained)) as url:
        yield url


@contextlib.contextmanager
def serving(app):
    """A real uvicorn server for ``app`` on a free port of 127.0.0.1, in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def stream_events(client: TestClient, body: dict) -> list[dict]:
    with client.stream("POST", "/generate/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def test_health_and_info_describe_the_run(client: TestClient, trained: Path):
    assert client.get("/health").json() == {"status": "ok", "generating": 0, "waiting": 0}
    info = client.get("/info").json()
    config = json.loads((trained / "config.json").read_text(encoding="utf-8"))
    assert info["run"] == "run" and info["tokenizer"] == "char"
    assert info["vocab_size"] == config["vocab_size"] and info["parameters"] == config["parameters"]
    assert info["config"]["model"] == config["model"] and info["config"]["train"]["seq_len"] == 16
    assert info["best_valid"]["valid_perplexity"] > 1 and info["test"]["test_bits_per_char"] > 0
    assert info["limits"]["length"] == 5000 and info["limits"]["num_samples"] == 8
    assert info["defaults"]["temperature"] == 0.8
    assert info["precision"] in ("fp32", "int8")  # what --precision auto became on this CPU


def test_the_servers_precision_reaches_every_request(trained: Path):
    from lstmgen.generation.generate import GenerateConfig, generate
    from lstmgen.model.run_dir import load_run

    run = load_run(trained)
    body = {"prompt": "郭靖", "length": 300, "seed": 5}  # long enough for int8's rounding to change a draw
    written = {}
    for precision in ("fp32", "int8"):
        fixed = TestClient(create_app(trained, precision=precision))
        assert fixed.get("/info").json()["precision"] == precision
        written[precision] = generate(run.model, run.tokenizer, run.vocab, ["郭靖"],
                                      GenerateConfig(length=300, seed=5, precision=precision))
        assert fixed.post("/generate", json=body).json()["texts"] == written[precision]
        assert fixed.post("/generate", json=body).json()["texts"] == written[precision]  # its weights, kept
    assert written["fp32"] != written["int8"]  # so the check above can tell the two apart


def test_generate_continues_the_prompt_and_the_same_seed_gives_the_same_text(client: TestClient):
    body = {"prompt": "郭靖", "length": 40, "seed": 5, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    first = client.post("/generate", json=body).json()
    text = first["texts"][0]
    assert text.startswith("郭靖") and len(text) == 2 + 40
    assert first["seed"] == 5 and first["prompts"] == ["郭靖"] and first["characters"] == len(text)
    assert client.post("/generate", json=body).json()["texts"] == [text]
    assert client.post("/generate", json={**body, "seed": 6}).json()["texts"] != [text]


def test_without_a_seed_the_answer_names_the_seed_that_repeats_it(client: TestClient):
    answer = client.post("/generate", json={"prompt": "黄蓉", "length": 30}).json()
    again = client.post("/generate", json={"prompt": "黄蓉", "length": 30, "seed": answer["seed"]}).json()
    assert again["texts"] == answer["texts"]


def test_several_prompts_and_samples_in_one_request(client: TestClient):
    answer = client.post("/generate", json={"prompts": ["郭靖", "杨过"], "num_samples": 3, "length": 20,
                                            "seed": 1}).json()
    assert answer["prompts"] == ["郭靖"] * 3 + ["杨过"] * 3
    assert [t[:2] for t in answer["texts"]] == answer["prompts"]
    assert len(set(answer["texts"])) == 6


def test_sampling_controls_reach_the_generator(client: TestClient):
    acrostic = client.post("/generate", json={"acrostic": "郭黄杨", "length": 45, "seed": 2}).json()["texts"][0]
    assert [line[0] for line in acrostic.split("\n")] == ["郭", "黄", "杨"]
    sentence = client.post("/generate", json={"prompt": "郭靖", "length": 20, "stop_at": "sentence",
                                              "seed": 2}).json()["texts"][0]
    assert len(sentence) >= 22 and sentence[-1] in "。！？”"
    text = client.post("/generate", json={"length": 120, "no_repeat_ngram": 3, "seed": 2,
                                          "repetition_penalty": 1.2}).json()["texts"][0]
    trigrams = [text[i:i + 3] for i in range(len(text) - 2)]
    assert len(set(trigrams)) == len(trigrams)


def test_stream_sends_start_text_pieces_and_done_matching_generate(client: TestClient):
    body = {"prompts": ["郭靖", "黄蓉"], "num_samples": 2, "length": 60, "seed": 3, "stop_at": "sentence"}
    events = stream_events(client, body)
    rows = [{"row": i, "prompt": p} for i, p in enumerate(["郭靖", "郭靖", "黄蓉", "黄蓉"])]
    assert events[0] == {"event": "start", "seed": 3, "rows": rows}
    assert events[-1]["event"] == "done" and events[-1]["seed"] == 3
    pieces = [""] * 4
    for event in events[1:-1]:
        assert event["event"] == "text"
        pieces[event["row"]] += event["text"]
    texts = events[-1]["texts"]
    assert [row["prompt"] + piece for row, piece in zip(events[0]["rows"], pieces)] == texts
    assert client.post("/generate", json=body).json()["texts"] == texts


CONTEXT = make_text(7, 20)  # a chapter the run did not train on, full of the names it knows


def test_a_context_is_read_first_and_the_same_seed_writes_the_same_text(client: TestClient):
    body = {"prompt": "郭靖", "length": 80, "seed": 4, "context": CONTEXT}
    first = client.post("/generate", json=body).json()
    text = first["texts"][0]
    assert text.startswith("郭靖") and len(text) == 2 + 80 and first["prompts"] == ["郭靖"]
    assert client.post("/generate", json=body).json()["texts"] == [text]
    without = {k: v for k, v in body.items() if k != "context"}
    assert client.post("/generate", json=without).json()["texts"] != [text]  # the context was read


def test_the_server_writes_after_a_context_what_the_api_writes(client: TestClient, trained: Path):
    from lstmgen import load

    run = load(trained)
    written = {}
    for adapt in ("cache", "off", "both"):
        body = {"prompt": "郭靖", "length": 120, "seed": 4, "context": CONTEXT, "adapt": adapt}
        written[adapt] = client.post("/generate", json=body).json()["texts"][0]
        assert written[adapt] == run.generate("郭靖", length=120, seed=4, context=CONTEXT, adapt=adapt), adapt
    assert len(set(written.values())) == 3  # each mode writes its own text: adapt reaches the generator


def test_the_stream_reads_a_context_too(client: TestClient):
    body = {"prompts": ["郭靖", "黄蓉"], "length": 40, "seed": 2, "context": CONTEXT, "adapt": "cache"}
    events = stream_events(client, body)
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    texts = events[-1]["texts"]
    assert texts == client.post("/generate", json=body).json()["texts"]
    without = {k: v for k, v in body.items() if k != "context"}
    assert stream_events(client, without)[-1]["texts"] != texts


def test_a_context_over_the_limit_is_refused_naming_the_limit(client: TestClient):
    assert client.get("/info").json()["limits"]["context_chars"] == MAX_CONTEXT_CHARS
    for path in ("/generate", "/generate/stream"):
        response = client.post(path, json={"context": "郭" * (MAX_CONTEXT_CHARS + 1), "length": 5})
        assert response.status_code == 422, path
        detail = response.json()["detail"]
        assert detail.startswith("context:") and str(MAX_CONTEXT_CHARS) in detail and "\n" not in detail
    assert client.post("/generate", json={"context": "郭" * MAX_CONTEXT_CHARS, "length": 5}).status_code == 200


def test_a_request_with_every_text_at_its_longest_fits_the_body_limit(client: TestClient):
    # escaped as \uXXXX, as Python's json and many clients send non-ASCII text: 6 bytes a character
    body = {"context": "郭" * MAX_CONTEXT_CHARS, "prompts": ["黄" * MAX_PROMPT_CHARS] * MAX_PROMPTS, "length": 1,
            "adapt": "off", "top_k": 40, "top_p": 0.95, "temperature": 0.8, "seed": 1}
    content = json.dumps(body, ensure_ascii=True, indent=1).encode()
    assert 64 * 1024 < len(content) <= MAX_BODY_BYTES
    response = client.post("/generate", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()["texts"]) == MAX_PROMPTS


@pytest.mark.parametrize("body, field", [
    ({"length": 0}, "length"),
    ({"length": 5001}, "length"),
    ({"num_samples": 9}, "num_samples"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"repetition_penalty": 0.9}, "repetition_penalty"),
    ({"stop_at": "chapter"}, "stop_at"),
    ({"seed": -3}, "seed"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"prompts": []}, "prompts"),
    ({"temprature": 1.0}, "temprature"),  # a typo is refused, not ignored
    ({"prompt": "   "}, "whitespace"),
    ({"acrostic": "鳯"}, "never saw"),
    ({"prompts": ["a", "b", "c"], "num_samples": 6}, "16 texts"),
    ({"prompt": "郭", "prompts": ["黄"]}, "not both"),
    ({"context": " \n "}, "empty"),
    ({"context": "郭靖说道。", "adapt": "all"}, "adapt"),
])
def test_bad_requests_get_422_with_a_one_line_message(client: TestClient, body: dict, field: str):
    for path in ("/generate", "/generate/stream"):
        response = client.post(path, json=body)
        assert response.status_code == 422, (path, body)
        detail = response.json()["detail"]
        assert isinstance(detail, str) and field in detail and "\n" not in detail


def test_bodies_that_are_not_json_or_too_large_are_refused(client: TestClient):
    response = client.post("/generate", content=b'{"temperature": NaN}', headers={"content-type": "application/json"})
    assert response.status_code == 422 and "finite" in response.json()["detail"]
    response = client.post("/generate", content=b'{"length": ', headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]
    big = json.dumps({"prompt": "郭" * MAX_BODY_BYTES}).encode()
    response = client.post("/generate", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413

    def chunks():  # no Content-Length: the limit counts the bytes as they come
        for _ in range(MAX_BODY_BYTES // 1000 + 2):
            yield b" " * 1000

    response = client.post("/generate", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_full_queue_answers_503_busy_instead_of_waiting_longer(client: TestClient):
    desk = client.app.state.desk
    desk.waiting = MAX_WAITING  # as if that many requests already waited for the model
    try:
        for path in ("/generate", "/generate/stream"):
            response = client.post(path, json={"length": 5})
            assert response.status_code == 503 and "busy" in response.json()["detail"]
            assert response.headers["retry-after"]
        assert client.get("/health").json()["waiting"] == MAX_WAITING  # health still answers
    finally:
        desk.waiting = 0
    assert client.post("/generate", json={"length": 5}).status_code == 200


def test_streams_queued_behind_a_busy_model_count_toward_the_503(trained: Path):
    # Streams run on a thread pool smaller than the queue (6 threads on 2 cores): requests waiting for
    # a thread must count as waiting too, or the queue could grow without end and never answer 503.
    app = create_app(trained)
    desk = app.state.desk
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        desk._lock.acquire()  # the model is busy writing for someone else
        try:
            with ThreadPoolExecutor(MAX_WAITING) as pool:
                waiting = [pool.submit(http.post, "/generate/stream", json={"length": 5}) for _ in range(MAX_WAITING)]
                deadline = time.monotonic() + 20
                while http.get("/health").json()["waiting"] < MAX_WAITING and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert http.get("/health").json()["waiting"] == MAX_WAITING
                refused = http.post("/generate/stream", json={"length": 5})
                assert refused.status_code == 503 and "busy" in refused.json()["detail"]
                desk._lock.release()
                assert all(f.result().status_code == 200 for f in waiting)  # each written in turn
        finally:
            if desk._lock.locked():
                desk._lock.release()
        assert http.get("/health").json() == {"status": "ok", "generating": 0, "waiting": 0}


def test_the_page_and_its_files_are_served_with_a_strict_policy(client: TestClient):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text and 'id="prompt"' in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert "/generate/stream" in client.get("/static/app.js").text
    assert client.get("/static/../app.py").status_code == 404


def test_concurrent_requests_each_get_their_own_text(server: str):
    bodies = [{"prompt": p, "length": 80, "seed": s} for p in ("郭靖", "黄蓉") for s in (1, 2, 3)]
    with httpx.Client(base_url=server, timeout=60) as http:
        alone = [http.post("/generate", json=b).json()["texts"][0] for b in bodies]
        with ThreadPoolExecutor(len(bodies)) as pool:
            together = list(pool.map(lambda b: httpx.post(server + "/generate", json=b, timeout=60).json(), bodies))
    assert [answer["texts"][0] for answer in together] == alone


def test_a_stream_arrives_while_writing_and_stops_when_the_client_leaves(server: str, caplog):
    caplog.set_level("INFO", logger="lstmgen.serving")
    body = {"length": 5000, "num_samples": 8, "seed": 1}  # seconds of work: long enough to leave in the middle
    with httpx.Client(base_url=server, timeout=60) as http:
        with http.stream("POST", "/generate/stream", json=body) as response:
            lines = response.iter_lines()
            assert json.loads(next(lines))["event"] == "start"
            assert json.loads(next(lines))["event"] == "text"
            assert http.get("/health").json()["generating"] == 1  # text came before the writing ended
        deadline = time.monotonic() + 30
        while http.get("/health").json()["generating"]:
            assert time.monotonic() < deadline, "generation went on after the client left"
            time.sleep(0.05)
        assert any("client left" in r.getMessage() for r in caplog.records)
        # the model is free again for the next client
        assert http.post("/generate", json={"length": 10, "seed": 1}).status_code == 200


def test_the_model_goes_to_waiting_requests_in_the_order_they_came():
    # Under load a lock that a newcomer can take ahead of those already waiting leaves some requests
    # waiting far longer than the rest; the model must go to the first in line.
    from lstmgen.serving.desk import TurnLock

    lock, order = TurnLock(), []

    def wait_then_write(name: str) -> None:
        assert lock.acquire()
        order.append(name)
        lock.release()

    lock.acquire()
    threads = []
    for name in ("first", "second", "third"):
        threads.append(threading.Thread(target=wait_then_write, args=(name,)))
        threads[-1].start()
        deadline = time.monotonic() + 30  # a hang guard only
        while len(lock._line) < len(threads):
            assert time.monotonic() < deadline, "a thread did not get in line"
            time.sleep(0.01)
    lock.release()
    wait_then_write("newcomer")  # comes as the lock is handed on: after those in line, not before
    for thread in threads:
        thread.join(timeout=30)
    assert order == ["first", "second", "third", "newcomer"]
    assert not lock.locked()


def test_a_request_that_leaves_the_line_is_passed_over():
    from lstmgen.serving.desk import TurnLock

    lock, order = TurnLock(), []
    left = threading.Event()

    def wait_then_write(name: str, cancelled: Optional[threading.Event] = None) -> None:
        if lock.acquire(cancelled):
            order.append(name)
            lock.release()
        else:
            order.append(f"{name} left")

    lock.acquire()
    leaving = threading.Thread(target=wait_then_write, args=("leaving", left))
    staying = threading.Thread(target=wait_then_write, args=("staying",))
    for thread, in_line in ((leaving, 1), (staying, 2)):
        thread.start()
        deadline = time.monotonic() + 30  # a hang guard only
        while len(lock._line) < in_line:
            assert time.monotonic() < deadline, "a thread did not get in line"
            time.sleep(0.01)
    left.set()
    leaving.join(timeout=30)
    assert order == ["leaving left"] and list(lock._line) and lock.locked()  # out of the line, without the lock
    lock.release()
    staying.join(timeout=30)
    assert order == ["leaving left", "staying"] and not lock.locked()


def send_and_stay_silent(url: str, path: str, body: dict) -> socket.socket:
    """POST ``body`` over a bare socket and read nothing: closing the socket is the client leaving."""
    data = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def wait_for_health(http: httpx.Client, **expected: int) -> None:
    deadline = time.monotonic() + 30  # a hang guard only: each of these takes a fraction of a second
    while (health := http.get("/health").json()) != {"status": "ok", **expected}:
        assert time.monotonic() < deadline, f"/health stayed at {health}, not {expected}"
        time.sleep(0.02)


def test_clients_that_leave_while_waiting_give_up_their_place_at_once(trained: Path, caplog):
    # A client that leaves while waiting (it timed out, or closed the page) must not keep its place in
    # the queue until the model gets to it: a queue of such places would answer 503 to everyone.
    caplog.set_level("INFO", logger="lstmgen.serving")
    app = create_app(trained)
    desk = app.state.desk
    staying, leaving = MAX_WAITING - 6, 3
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http, \
            ThreadPoolExecutor(staying) as pool, contextlib.ExitStack() as leavers:
        desk._lock.acquire()  # the model is busy writing for someone else until this test says
        try:
            def stay(seed: int) -> list[dict]:
                with httpx.Client(base_url=url, timeout=60) as own, \
                        own.stream("POST", "/generate/stream", json={"length": 5, "seed": seed}) as response:
                    return [json.loads(line) for line in response.iter_lines() if line]

            stayed = [pool.submit(stay, seed) for seed in range(staying)]
            wait_for_health(http, generating=0, waiting=staying)  # these hold the first places
            for _ in range(leaving):
                own = leavers.enter_context(httpx.Client(base_url=url, timeout=60))
                response = leavers.enter_context(own.stream("POST", "/generate/stream", json={"length": 5}))
                lines = response.iter_lines()  # kept: a line iterator let go of closes the stream
                assert json.loads(next(lines))["event"] == "start"
                leavers.callback(lines.close)
                leavers.callback(send_and_stay_silent(url, "/generate", {"length": 5}).close)
            wait_for_health(http, generating=0, waiting=MAX_WAITING)
            assert http.post("/generate", json={"length": 5}).status_code == 503  # the queue is full
            leavers.close()  # all six leave
            wait_for_health(http, generating=0, waiting=staying)  # while the model is still busy
            assert desk._lock.locked()
            with http.stream("POST", "/generate/stream", json={"length": 5}) as response:
                assert response.status_code == 200  # room in the queue again; this one leaves too
            wait_for_health(http, generating=0, waiting=staying)
        finally:
            desk._lock.release()
        assert all(events[-1]["event"] == "done" for events in (f.result() for f in stayed))
        wait_for_health(http, generating=0, waiting=0)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("client left mid-stream" in m for m in messages) == leaving + 1
    assert sum("client left before its text was written" in m for m in messages) == leaving


@pytest.mark.parametrize("path", ["/generate/stream", "/generate"])
def test_the_model_is_free_as_soon_as_the_client_it_writes_for_leaves(trained: Path, path: str, monkeypatch):
    # The abandoned text is made far too slow to finish while the test runs: the next request can only
    # be answered if the server stops writing it when its client leaves.
    app = create_app(trained)
    desk = app.state.desk
    write, ended = desk.write, []

    def slow_write(prompts, config, *, on_text=None, cancelled=None, **reading):
        def slow(row: int, piece: str) -> None:
            if on_text is not None:
                on_text(row, piece)
            if config.length == 5000:
                time.sleep(0.002)  # 8 rows x 5,000 characters: over a minute

        try:
            result = write(prompts, config, on_text=slow, cancelled=cancelled, **reading)
        except Exception as err:
            ended.append((config.length, type(err).__name__))
            raise
        ended.append((config.length, "written"))
        return result

    monkeypatch.setattr(desk, "write", slow_write)
    body = {"length": 5000, "num_samples": 8, "seed": 1}
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        if path == "/generate/stream":
            with http.stream("POST", path, json=body) as response:
                lines = response.iter_lines()
                assert [json.loads(next(lines))["event"] for _ in range(2)] == ["start", "text"]
        else:
            with contextlib.closing(send_and_stay_silent(url, path, body)):
                wait_for_health(http, generating=1, waiting=0)
        assert http.post("/generate", json={"length": 10, "seed": 1}).status_code == 200
        assert ended == [(5000, "ClientGone"), (10, "written")]
        wait_for_health(http, generating=0, waiting=0)


def test_serve_command_errors_are_one_line(trained: Path, tmp_path: Path, capsys, monkeypatch):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        assert main(["serve", str(trained), "--port", str(busy.getsockname()[1])]) == 2
        assert "cannot listen" in capsys.readouterr().err
    finally:
        busy.close()
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the serve extra were not installed
    assert main(["serve", str(trained)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install fastapi uvicorn" in err and len(err.splitlines()) == 1
