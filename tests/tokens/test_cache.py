"""`lstmgen cache`: listing the token cache, pruning what no run used lately, clearing it; driven through main."""

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

import lstmgen.tokens.cache_admin as cache
from conftest import make_text
from lstmgen.cli.main import main
from lstmgen.config import DataConfig, TokenizerConfig
from lstmgen.tokens.cache_report import human_size
from lstmgen.tokens.prepare import prepare

DAY = 86400


def _corpus(folder: Path, name: str, seed: int) -> Path:
    path = folder / name
    path.write_text(make_text(seed, 100), encoding="utf-8")
    return path


@pytest.fixture
def filled(tmp_path: Path, private_cache: Path) -> dict[str, Path]:
    """Three token folders: two corpora by the char tokenizer, one of them by the word tokenizer too."""
    a, b = _corpus(tmp_path, "射雕.txt", 1), _corpus(tmp_path, "神雕.txt", 2)
    prepare(a, DataConfig(), TokenizerConfig(tokenizer="char"))
    prepare(a, DataConfig(), TokenizerConfig(tokenizer="word"))
    prepare(b, DataConfig(), TokenizerConfig(tokenizer="char"))
    folders = {}
    for folder in (private_cache / "tokens").iterdir():
        source = json.loads((folder / "source.json").read_text(encoding="utf-8"))
        folders[f"{Path(source['corpus']).name} {source['settings']['segmenter']}"] = folder
    assert sorted(folders) == ["射雕.txt char", "射雕.txt word", "神雕.txt char"]
    return folders


def _last_used(folder: Path, days_ago: float) -> None:
    when = time.time() - days_ago * DAY
    os.utime(folder / "last-used", (when, when))


def _du(folder: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in [folder, *folder.rglob("*")])


def test_the_listing_shows_each_folder_with_its_size_use_tokenizer_tokens_and_corpus(filled, tmp_path, private_cache,
                                                                                     capsys):
    _last_used(filled["神雕.txt char"], 3.5)
    assert main(["cache"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"token cache: {private_cache} ($LSTMGEN_CACHE)"
    rows = {line.split()[0]: line for line in out if line[:32] in {f.name for f in filled.values()}}
    assert len(rows) == 3
    for name, folder in filled.items():
        row = rows[folder.name]
        assert human_size(_du(folder)) in row  # its size on disk, its ids-* folder included
        corpus, kind = name.split()
        assert row.endswith(str(tmp_path / corpus))  # the corpus it was made from
        assert ("  char  " in row) == (kind == "char") and ("  word/hybrid (" in row) == (kind == "word")
        train = (folder / "train.bin").stat().st_size // 4
        assert f"{train:,}" in row  # tokens of the training split
    assert "3 days ago" in rows[filled["神雕.txt char"].name] and "just now" in rows[filled["射雕.txt char"].name]
    # the total is the whole cache folder, as du -s counts it: manifests included
    total = _du(private_cache)
    assert out[-1] == f"total: {human_size(total)}"
    manifests = sum(_du(path) for path in (private_cache / "read").iterdir())
    assert f"read manifests: 2, {human_size(manifests)}" in out  # one per corpus, whatever the tokenizer


def test_an_empty_or_missing_cache_lists_as_empty(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LSTMGEN_CACHE", str(tmp_path / "never-made"))
    assert main(["cache"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "nothing there yet"
    assert main(["cache", "--prune", "30"]) == 0 and main(["cache", "--clear"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert not (tmp_path / "never-made").exists()  # looking made nothing


def test_prune_removes_exactly_the_folders_not_used_since_the_cutoff(filled, private_cache, capsys):
    _last_used(filled["神雕.txt char"], 31)
    _last_used(filled["射雕.txt word"], 29)
    old_folder = filled["射雕.txt char"]  # from before the marker: judged by when it was made
    (old_folder / "last-used").unlink()
    os.utime(old_folder / "types.json", (time.time() - 40 * DAY,) * 2)
    sizes = {name: _du(folder) for name, folder in filled.items()}
    # a build in progress, and one a killed run left 2 days ago
    building = Path(tempfile.mkdtemp(prefix=old_folder.name + ".", dir=old_folder.parent))
    (building / "train.bin").write_bytes(b"\0" * 4096)
    os.utime(building, (time.time() - 40 * DAY,) * 2)  # the folder's own time is old; its file is being written
    killed = Path(tempfile.mkdtemp(prefix=old_folder.name + ".", dir=old_folder.parent))
    (killed / "train.bin").write_bytes(b"\0" * 4096)
    for path in (killed / "train.bin", killed):
        os.utime(path, (time.time() - 2 * DAY,) * 2)
    killed_size = _du(killed)
    manifest = {json.loads(p.read_text(encoding="utf-8"))["documents"][0]["name"]: p
                for p in (private_cache / "read").iterdir()}["神雕.txt"]
    manifest_size = _du(manifest)

    assert main(["cache", "--prune", "30"]) == 0
    out = capsys.readouterr().out
    assert not filled["神雕.txt char"].exists() and not old_folder.exists()
    assert filled["射雕.txt word"].is_dir() and building.is_dir() and not killed.exists()
    assert sorted(p.name for p in (private_cache / "tokens").iterdir()) == sorted([filled["射雕.txt word"].name,
                                                                                   building.name])
    freed = sizes["神雕.txt char"] + sizes["射雕.txt char"] + killed_size + manifest_size
    assert f"removed 2 token folders, 1 abandoned build and 1 read manifest: {human_size(freed)} freed" in out
    assert "kept 1 token folder used in the last 30 days" in out and "1 build in progress" in out
    # 神雕's manifest pointed only at its removed folder; 射雕's still leads to its word folder
    manifests = [json.loads(p.read_text(encoding="utf-8")) for p in (private_cache / "read").iterdir()]
    assert [m["documents"][0]["name"] for m in manifests] == ["射雕.txt"]


def test_a_reused_segmentation_is_marked_as_used(filled, tmp_path, capsys):
    folder = filled["神雕.txt char"]
    _last_used(folder, 60)
    prepare(tmp_path / "神雕.txt", DataConfig(), TokenizerConfig(tokenizer="char"))  # a cached start
    assert time.time() - (folder / "last-used").stat().st_mtime < 60
    assert main(["cache", "--prune", "30"]) == 0
    assert folder.is_dir() and "nothing to remove" in capsys.readouterr().out


def test_a_read_only_cache_still_loads(filled, tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(Path, "touch", refuse)
    data = prepare(tmp_path / "神雕.txt", DataConfig(), TokenizerConfig(tokenizer="char"))
    assert len(data.ids["train"]) > 0


def test_clear_removes_every_folder_and_manifest_keeps_the_demo_and_a_run_after_it_segments_again(
        filled, tmp_path, private_cache, capsys):
    poems = private_cache / "demo" / "tang-poems"
    poems.mkdir(parents=True)
    (poems / "poet.tang.0.txt").write_text("床前明月光\n", encoding="utf-8")
    assert main(["cache", "--clear"]) == 0
    out = capsys.readouterr().out
    assert "removed 3 token folders and 2 read manifests" in out and "kept demo/" in out
    assert list((private_cache / "tokens").iterdir()) == [] and list((private_cache / "read").iterdir()) == []
    assert (poems / "poet.tang.0.txt").is_file()
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "神雕.txt"), "--out", str(run), "--preset", "tiny", "--epochs", "1"]) == 0
    assert re.search(r"segmentation: \d+ types", capsys.readouterr().err) and (run / "model.safetensors").is_file()
    [folder] = (private_cache / "tokens").iterdir()
    assert (folder / "last-used").is_file() and json.loads((folder / "source.json").read_text())["corpus"] == \
        str((tmp_path / "神雕.txt").resolve())


def test_removal_never_follows_links_out_of_the_cache(filled, tmp_path, private_cache, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine", encoding="utf-8")
    link = private_cache / "tokens" / ("f" * 32)  # a link with a cache folder's name
    link.symlink_to(outside, target_is_directory=True)
    (filled["神雕.txt char"] / "ids-link").symlink_to(outside, target_is_directory=True)
    assert main(["cache"]) == 0
    assert "f" * 32 not in capsys.readouterr().out
    assert main(["cache", "--clear"]) == 0
    assert link.is_symlink() and (outside / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert not filled["神雕.txt char"].exists()


def test_user_errors_end_in_one_line(filled, monkeypatch, capsys):
    for args in (["--prune", "thirty"], ["--prune", "-1"], ["--prune", "nan"], ["--prune", "3", "--clear"]):
        assert main(["cache", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lstmgen: error: ") and err.count("\n") == 1, args
    assert all(folder.is_dir() for folder in filled.values())  # nothing was removed

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache.os, "rename", refuse)
    assert main(["cache", "--clear"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "could not remove" in captured.err and "(and 2 more)" in captured.err
    assert "nothing to remove" in captured.out and all(folder.is_dir() for folder in filled.values())


def test_a_clear_while_a_run_opens_its_token_ids_leaves_the_run_its_ids(tmp_path: Path, private_cache: Path,
                                                                         monkeypatch):
    import lstmgen.tokens.prepare as pipeline

    corpus = _corpus(tmp_path, "射雕.txt", 1)
    first = prepare(corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
    real_open = pipeline.open_ids

    def cleared_first(path: Path):  # `lstmgen cache --clear` in another process, just before the ids are opened
        if path.parent.exists():
            assert main(["cache", "--clear"]) == 0
        return real_open(path)

    monkeypatch.setattr(pipeline, "open_ids", cleared_first)
    again = prepare(corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
    assert not list((private_cache / "tokens").iterdir())  # it was cleared
    for split in ("train", "valid", "test"):
        assert (again.ids[split] == first.ids[split]).all()


def test_the_cache_lives_where_the_platform_keeps_caches_unless_lstmgen_cache_says(tmp_path, monkeypatch):
    import platformdirs

    from lstmgen.tokens.store import default_cache_dir

    assert default_cache_dir() == Path(os.environ["LSTMGEN_CACHE"])  # set for every test: it wins
    monkeypatch.delenv("LSTMGEN_CACHE")
    assert default_cache_dir() == Path(platformdirs.user_cache_dir("lstmgen", appauthor=False))
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_cache_dir() == tmp_path / "xdg" / "lstmgen"  # Linux: XDG_CACHE_HOME honoured
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert default_cache_dir() == Path.home() / ".cache" / "lstmgen"
