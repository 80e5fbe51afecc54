"""A web page and an HTTP API over a trained run: ``lstmgen serve RUN``.

    GET  /                  the page: type a prompt, set the controls, watch the text appear
    GET  /health            {"status": "ok", "generating": 0|1, "waiting": N}
    GET  /info              the run's settings, size and metrics, and this server's limits
    POST /generate          JSON settings in, every text at once out (JSON)
    POST /generate/stream   the same settings in; newline-delimited JSON out, text as it is written:
                            {"event": "start", "seed": S, "rows": [{"row": 0, "prompt": "..."}, ...]}
                            {"event": "text", "row": 0, "text": "..."}   (many)
                            {"event": "done", "seed": S, "texts": [...], "seconds": T}
                            or, if something breaks mid-way, {"event": "error", "detail": "..."}

One model serves every request, and one request writes at a time (``desk.ModelDesk``): on a CPU, two
generations at once only fight over the same cores, and each would take longer than both in turn. The
LSTM state lives inside each ``generate`` call, so requests never see each other's text.

A request may carry a ``context``, a text (a chapter, say) the model reads before the prompts, and
``adapt``, how it adapts to that text as it reads (``generation.context``, docs/adaptation.md).

Bad settings get a 422 whose ``detail`` is one readable line; bodies over MAX_BODY_BYTES get a 413; past
MAX_WAITING waiting requests, a 503 with Retry-After. The server listens on 127.0.0.1 unless told
otherwise; it has no login, so only open it to people you trust.

FastAPI, uvicorn and pydantic are imported inside the functions here, so ``lstmgen --help`` and the rest
of lstmgen start without loading them.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the request model from the endpoint
# annotations at runtime, and that model is built inside create_app (pydantic is imported lazily).

import logging
import random
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from lstmgen.errors import LstmgenError
from lstmgen.serving.desk import ClientGone, ModelDesk, ServerBusy
from lstmgen.serving.transport import BodyLimit, client_leaves, merge_text, ndjson_line

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lstmgen.model.run_dir import TrainedRun as Run


logger = logging.getLogger(__name__)


STATIC = Path(__file__).resolve().parent / "static"


MAX_LENGTH = 5000  # characters per text


MAX_SAMPLES = 8  # samples per prompt


MAX_PROMPTS = 8  # prompts per request


MAX_ROWS = 16  # prompts x samples: texts written in one batch


MAX_PROMPT_CHARS = 2000


MAX_ACROSTIC = 64


MAX_CONTEXT_CHARS = 20_000  # a chapter or two, read before the prompts


# Room for a request with every text field at its longest, each character written as a \uXXXX escape
# (6 bytes: what JSON encoders that escape non-ASCII text send; raw UTF-8 Chinese takes 3), and for the
# keys and numbers around them. Still a limit: nothing longer is ever read into memory.
MAX_BODY_BYTES = 6 * (MAX_CONTEXT_CHARS + MAX_PROMPTS * MAX_PROMPT_CHARS + MAX_ACROSTIC) + 16 * 1024


MAX_SEED = 2**53 - 1  # the largest integer a JavaScript page can hold exactly


PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


SERVE_EXTRA = (
    "the web server needs FastAPI and uvicorn, which lstmgen installs; they are missing here: pip install fastapi uvicorn")


def _require_server_packages() -> None:
    """One clear line when the optional packages are missing, instead of an ImportError traceback."""
    try:
        import fastapi  # noqa: F401
        import pydantic
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise LstmgenError(f"{SERVE_EXTRA} ({err})") from None
    if pydantic.VERSION.startswith("1."):
        raise LstmgenError(f"the web server needs pydantic 2 (found {pydantic.VERSION}): pip install -U 'pydantic>=2'")


def _load(run: Union[str, Path, "Run"], device: str) -> "Run":
    from lstmgen.model.run_dir import TrainedRun as Run
    from lstmgen.model.run_dir import load_run

    if isinstance(run, Run):
        return run
    return load_run(run, device=device)


def run_info(run: "Run") -> dict[str, Any]:
    """What /info returns: settings, size, the best validation and the test scores, and the limits."""
    records = run.metrics
    valid = [r for r in records if "valid_nll" in r]
    test = next((r for r in reversed(records) if r.get("split") == "test"), None)
    info = {k: v for k, v in run.info.items() if k != "documents"}  # documents can run to thousands of files
    return {
        "run": run.path.name,
        "tokenizer": run.tokenizer.kind,
        "vocab_size": len(run.vocab),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "documents": len(run.info.get("documents", [])),
        "config": run.config.to_dict(),
        "info": info,
        "best_valid": min(valid, key=lambda r: r["valid_nll"]) if valid else None,
        "test": test,
        "limits": {"length": MAX_LENGTH, "num_samples": MAX_SAMPLES, "prompts": MAX_PROMPTS, "rows": MAX_ROWS,
                   "prompt_chars": MAX_PROMPT_CHARS, "acrostic_chars": MAX_ACROSTIC,
                   "context_chars": MAX_CONTEXT_CHARS, "body_bytes": MAX_BODY_BYTES, "seed": MAX_SEED},
    }


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """pydantic's error list as one line: 'length: Input should be less than or equal to 5000; ...'."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON (at character {error.get('loc', ['?'])[-1]})")
            continue
        where = ".".join(str(x) for x in error.get("loc", ()) if x != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def create_app(run: Union[str, Path, "Run"], *, device: str = "cpu", precision: str = "auto") -> "FastAPI":
    """The FastAPI application serving ``run`` (a run directory or a loaded Run).

    Args:
        run: the run to write with.
        device: where to load the model when ``run`` is a path (cpu | cuda | mps).
        precision: the weights every request generates with (``generate --precision``): auto | fp32 | int8.
    """
    _require_server_packages()
    from typing import Annotated, List, Literal

    from fastapi import FastAPI, Request, Response
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.concurrency import run_in_threadpool

    from lstmgen import __version__
    from lstmgen.evaluation.adapt import ADAPT_MODES, AdaptConfig, as_adapt_config
    from lstmgen.generation.cpu_step import StepWeights, resolve_precision
    from lstmgen.generation.generate import GenerateConfig, check_request, prompts_for_run

    defaults = GenerateConfig(precision=precision)  # a bad value is said before the model loads
    loaded = _load(run, device)
    # int8 on a GPU is said now, not per request; /info names what "auto" became
    model_device = next(loaded.model.parameters()).device
    precision_used = resolve_precision(precision, model_device)
    step_weights = None
    if model_device.type == "cpu":  # quantised once (a few tenths of a second for the seed's model), not per request
        step_weights = StepWeights(loaded.model, int8=precision_used == "int8")
    desk = ModelDesk(loaded, step_weights)
    Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]

    class GenerateRequest(BaseModel):
        """What to write; every field may be left out. Unknown fields are refused (a typo is not ignored)."""

        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

        prompt: Prompt = Field("", description="text to continue; empty starts at a paragraph")
        prompts: Optional[List[Prompt]] = Field(None, min_length=1, max_length=MAX_PROMPTS,
                                                description="several prompts in one batch (instead of prompt)")
        length: int = Field(defaults.length, ge=1, le=MAX_LENGTH, description="characters to write")
        temperature: float = Field(defaults.temperature, ge=0, le=5, description="0 is greedy")
        top_k: int = Field(defaults.top_k, ge=0, le=1_000_000, description="0: off")
        top_p: float = Field(defaults.top_p, gt=0, le=1, description="1: off")
        repetition_penalty: float = Field(defaults.repetition_penalty, ge=1, le=10, description="1: off")
        no_repeat_ngram: int = Field(defaults.no_repeat_ngram, ge=0, le=64, description="0: off")
        stop_at: Literal["none", "sentence", "paragraph"] = "none"
        seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="same seed, same text; empty: random")
        num_samples: int = Field(defaults.num_samples, ge=1, le=MAX_SAMPLES, description="samples per prompt")
        acrostic: Optional[str] = Field(None, max_length=MAX_ACROSTIC,
                                        description="line i begins with character i of this text")
        context: Optional[str] = Field(None, max_length=MAX_CONTEXT_CHARS,
                                       description="text the model reads first (a chapter); the prompts continue it")
        adapt: Literal[ADAPT_MODES] = Field("both", description="how the model adapts to the context as it "
                                            "reads it: off | dynamic | cache | both (only with a context)")

    def job(body: GenerateRequest) -> tuple[list[str], GenerateConfig, Optional[str], Optional[AdaptConfig]]:
        """Request -> prompts, config, context and adapt, refusing (422) what generate() would refuse,
        before any text."""
        if body.prompts is not None and body.prompt:
            raise LstmgenError("give prompt or prompts, not both")
        context = adapt = None
        if body.context is not None:
            if not body.context.strip():
                raise LstmgenError("context: it is empty; give some text to read first, or leave it out")
            context = prompts_for_run([body.context], loaded)[0]  # read in the run's script, as prompts are
            adapt = as_adapt_config(body.adapt)
        prompts = prompts_for_run(list(body.prompts) if body.prompts is not None else [body.prompt], loaded)
        if len(prompts) * body.num_samples > MAX_ROWS:
            raise LstmgenError(f"{len(prompts)} prompts x {body.num_samples} samples is over the {MAX_ROWS} "
                               "texts one request may write")
        seed = body.seed if body.seed is not None else random.SystemRandom().randrange(2**31)
        config = GenerateConfig(length=body.length, temperature=body.temperature, top_k=body.top_k,
                                top_p=body.top_p, repetition_penalty=body.repetition_penalty,
                                no_repeat_ngram=body.no_repeat_ngram, stop_at=body.stop_at,
                                num_samples=body.num_samples, seed=seed, acrostic=body.acrostic or None,
                                precision=precision)
        check_request(prompts, config, loaded.tokenizer, loaded.vocab)
        desk.admit()  # last: a request refused above never holds a place in the queue
        return prompts, config, context, adapt

    def row_prompts(prompts: list[str], config: GenerateConfig) -> list[str]:
        return [p.strip() for p in prompts for _ in range(config.num_samples)]

    app = FastAPI(title="lstmgen", version=__version__,
                  description=f"Write with the lstmgen run {loaded.path.name}.")
    app.state.desk = desk

    @app.exception_handler(LstmgenError)
    async def user_error(request: Request, err: LstmgenError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.exception_handler(ServerBusy)
    async def busy(request: Request, err: ServerBusy) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        # type, place and message only: the input itself may be huge, or NaN, which JSON cannot carry
        errors = jsonable_encoder([{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in err.errors()])
        return JSONResponse({"detail": _validation_message(errors), "errors": errors}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # /health and /info are async: they must answer at once even when every worker thread waits for the model
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "generating": desk.generating, "waiting": desk.waiting}

    @app.get("/info")
    async def info() -> dict:
        return {**run_info(loaded), "lstmgen_version": __version__, "precision": precision_used,
                "defaults": GenerateRequest().model_dump(exclude={"prompts", "seed", "acrostic", "context"})}

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, err: ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it: the client has left

    @app.post("/generate")
    async def generate_all(body: GenerateRequest, request: Request) -> dict:
        import asyncio

        prompts, config, context, adapt = await run_in_threadpool(job, body)
        gone = threading.Event()
        writing = asyncio.ensure_future(run_in_threadpool(desk.write, prompts, config, cancelled=gone,
                                                          context=context, adapt=adapt))
        leaving = asyncio.ensure_future(client_leaves(request))
        try:
            await asyncio.wait({writing, leaving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
            if not writing.done():
                gone.set()  # the client left (or the server is stopping): stop waiting or writing for it
        try:
            texts, seconds = await writing
        except ClientGone:
            logger.info("a client left before its text was written; stopped writing for it")
            raise
        return {"texts": texts, "prompts": row_prompts(prompts, config), "seed": config.seed,
                "seconds": round(seconds, 3), "characters": sum(map(len, texts))}

    @app.post("/generate/stream")
    async def generate_stream(body: GenerateRequest) -> StreamingResponse:
        import asyncio

        # in a thread, as /generate does: converting a long context to the run's script must not hold
        # up the event loop, which answers /health and every other client
        prompts, config, context, adapt = await run_in_threadpool(job, body)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        gone = threading.Event()

        def put(item: dict) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop has closed: the server is shutting down
                raise ClientGone() from None

        def on_text(row: int, piece: str) -> None:
            put({"event": "text", "row": row, "text": piece})

        def work() -> None:
            try:
                texts, seconds = desk.write(prompts, config, on_text=on_text, cancelled=gone, context=context,
                                            adapt=adapt)
                put({"event": "done", "seed": config.seed, "texts": texts, "seconds": round(seconds, 3)})
            except ClientGone:
                logger.info("a client left mid-stream; stopped writing for it")
            except Exception as err:  # the stream has begun (status 200): report inside it
                logger.exception("generation failed")
                put({"event": "error", "detail": f"{type(err).__name__}: {err}"})

        # now, not when the response starts: admitted, so it must write (or see its client leave). On
        # the same pool as /generate, whose threads outnumber the queue: every admitted request waits
        # in a thread of its own, where it can notice its client leaving, not behind other requests.
        worker = asyncio.ensure_future(run_in_threadpool(work))

        async def events() -> Any:
            try:
                rows = [{"row": i, "prompt": p} for i, p in enumerate(row_prompts(prompts, config))]
                yield ndjson_line({"event": "start", "seed": config.seed, "rows": rows})
                while True:
                    batch = [await queue.get()]
                    while not queue.empty():  # send what piled up as one chunk: fewer, larger writes
                        batch.append(queue.get_nowait())
                    yield "".join(ndjson_line(item) for item in merge_text(batch))
                    if any(item["event"] != "text" for item in batch):
                        break
                await worker
            finally:
                gone.set()  # the client left (or the stream ended): stop writing at the next token

        return StreamingResponse(events(), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    return app


def serve(run: Union[str, Path], *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          precision: str = "auto") -> None:
    """Serve ``run`` until interrupted (Ctrl+C)."""
    _require_server_packages()
    import uvicorn

    app = create_app(run, device=device, precision=precision)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: anyone who can reach it can use the model (there is no login)", host)
    shown = f"[{host}]" if ":" in host else host
    logger.info("serving %s at http://%s:%d/ (Ctrl+C to stop)", Path(run).name, shown, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    except SystemExit as exit_:  # uvicorn exits when it cannot listen, after logging why
        if exit_.code:
            raise LstmgenError(f"cannot listen on {host}:{port} (in use, or not an address of this machine)") \
                from None
        raise
