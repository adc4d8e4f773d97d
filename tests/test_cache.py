"""The one disk cache: content keys with a version, atomic writes, a lock processes share."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from sbert_exp.utils.atomic import write_text
from sbert_exp.utils.cache import Cache, cache_dir, content_key

WRITERS, ROUNDS = 6, 15


def _add_entries(root: str, writer: int) -> None:
    """Read-modify-write one entry under its lock, ROUNDS times."""
    cache = Cache("things", version=1, base=Path(root))
    for i in range(ROUNDS):
        with cache.lock("table.json"):
            table = cache.read_json("table.json") or {}
            table[f"{writer}-{i}"] = i
            cache.write_json("table.json", table)


def _overwrite(path: str, writer: int) -> None:
    """Write the same file, unlocked, ROUNDS times: every write is whole."""
    for i in range(ROUNDS):
        write_text(Path(path), json.dumps({"writer": writer, "i": i, "pad": "x" * 50_000}))


def _run_all(target, *args) -> list[int]:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=(*args, w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return [p.exitcode for p in procs]


def test_processes_updating_one_entry_at_once_lose_no_update(tmp_path):
    assert _run_all(_add_entries, str(tmp_path)) == [0] * WRITERS
    cache = Cache("things", version=1, base=tmp_path)
    table = cache.read_json("table.json")
    assert len(table) == WRITERS * ROUNDS
    assert sorted(p.name for p in (tmp_path / "things").iterdir()) == ["table.json",
                                                                        "table.json.lock"]


def test_processes_writing_one_file_at_once_leave_a_whole_one_and_no_temporary(tmp_path):
    path = tmp_path / "entry.json"
    assert _run_all(_overwrite, str(path)) == [0] * WRITERS  # a shared temporary name raced
    value = json.loads(path.read_text())
    assert value["i"] == ROUNDS - 1 and len(value["pad"]) == 50_000
    assert [p.name for p in tmp_path.iterdir()] == ["entry.json"]


def test_keys_hold_the_cache_name_and_version(tmp_path):
    one = Cache("scores", version=1, base=tmp_path)
    assert one.key("model", 3) == content_key("scores", 1, "model", 3)
    assert one.key("model", 3) != Cache("scores", version=2).key("model", 3)
    assert one.key("model", 3) != Cache("other", version=1).key("model", 3)
    assert one.key("model", 3) != one.key("model", 4)
    assert len(one.key("model")) == 24


def test_a_missing_or_unreadable_entry_reads_as_none(tmp_path):
    cache = Cache("scores", version=1, base=tmp_path)
    assert cache.read_json("nothing.json") is None
    cache.path("broken.json").parent.mkdir(parents=True)
    cache.path("broken.json").write_text("{half")
    assert cache.read_json("broken.json") is None


def test_the_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SBERT_EXP_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    assert Cache("layer_scores", version=1).root() == tmp_path / "layer_scores"
