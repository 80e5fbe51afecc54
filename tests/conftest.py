"""Shared fixtures: a tiny corpus the tests write themselves, and a private token cache."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lstmgen.device import bf16_problem

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPORA = REPO.parent / "shared" / "corpora"

# Tests of bf16 on the CPU need a CPU that runs a bf16 LSTM step (probed, as lstmgen itself does).
CPU_BF16_PROBLEM = bf16_problem(torch.device("cpu"))
needs_cpu_bf16 = pytest.mark.skipif(CPU_BF16_PROBLEM is not None, reason=f"bf16 on this CPU: {CPU_BF16_PROBLEM}")

# A small made-up vocabulary: sentences built from it have the shape of novel text.
NAMES = ["郭靖", "黄蓉", "洪七公", "欧阳锋", "杨过", "小龙女"]
VERBS = ["说道", "笑道", "走进", "望着", "想起", "拔出"]
THINGS = ["长剑", "江湖", "桃花岛", "大漠", "古墓", "一碗酒", "月光"]
ENDS = ["。", "！", "？", "，心中一动。"]


def make_text(seed: int, paragraphs: int = 40) -> str:
    """Deterministic novel-like text: paragraphs of short sentences."""
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = [rng.choice(NAMES) + rng.choice(VERBS) + rng.choice(THINGS) + rng.choice(ENDS)
                     for _ in range(rng.randint(2, 5))]
        out.append("".join(sentences))
    return "\n".join(out)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own token cache: no test sees another's cached segmentation."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LSTMGEN_CACHE", str(cache))
    return cache


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A folder like users have: a UTF-8 novel, a GB18030 novel with CRLF and an advert line, an index."""
    folder = tmp_path / "小说 集"
    folder.mkdir()
    (folder / "射雕.txt").write_text(make_text(1, 60), encoding="utf-8")
    gbk = "\u3000\u3000" + make_text(2, 60).replace("\n", "\r\n\u3000\u3000")
    gbk = gbk.replace("\r\n", "\r\n本书来自www.cr173.com免费txt小说下载站\r\n", 1)
    (folder / "神雕.txt").write_bytes(gbk.encode("gb18030"))
    (folder / "inf.txt").write_text("射雕，神雕", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained once per test session (tiny preset, two epochs of a 120-paragraph novel beside it).

    Tests only read it: generation, serving and evaluation never write into a run directory.
    """
    from lstmgen.cli.main import main

    root = tmp_path_factory.mktemp("tiny-run")
    (root / "novel.txt").write_text(make_text(1, 120), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:  # the autouse private cache is per test; this is per session
        patch.setenv("LSTMGEN_CACHE", str(root / "cache"))
        assert main(["train", str(root / "novel.txt"), "--out", str(root / "run"), "--preset", "tiny",
                     "--epochs", "2", "--seed", "3"]) == 0
    return root / "run"
