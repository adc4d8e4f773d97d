"""Content digests of files, folders, base models and data splits; a file's SHA-256 is kept in
the cache per (path, size, mtime), so a large file is read once."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from sbert_exp.config.schema import BaseModelConfig, Source, SplitConfig
from sbert_exp.data import assets
from sbert_exp.data.readers import resolve_path
from sbert_exp.utils.cache import Cache

log = logging.getLogger(__name__)


# path -> (size, mtime, SHA-256) of every file hashed, one JSON table.
HASHES, HASH_TABLE = Cache("file_hashes", version=1), "sha256.json"


_memo: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file, computed once per (path, size, mtime) and kept in the asset cache."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    stored = _read_cache().get(key[0])
    if stored is not None and tuple(stored[:2]) == key[1:]:
        digest = stored[2]
    else:
        digest = assets.sha256_file(path)
        _write_cache(key, digest)
    _memo[key] = digest
    return digest


def _read_cache() -> dict[str, list]:
    return HASHES.read_json(HASH_TABLE) or {}  # none yet or unreadable: hashed again


def _write_cache(key: tuple[str, int, int], digest: str) -> None:
    try:
        with HASHES.lock(HASH_TABLE):
            table = _read_cache()
            table[key[0]] = [key[1], key[2], digest]
            HASHES.write_json(HASH_TABLE, table)
    except OSError as e:  # a read-only cache only costs hashing again next time
        log.debug("could not record the hash of %s: %s", key[0], e)


def dir_digest(root: Path) -> str:
    """One digest of every file below `root` (relative path and content)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    listing = [(str(p.relative_to(root)), file_digest(p)) for p in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def model_digest(base: BaseModelConfig, path: str) -> str:
    """The content of the base model's files (`path` from modeling.locate)."""
    if base.source is Source.embedded:
        # Checked against these hashes on every use (assets.resolve): no need to read again.
        asset = assets.get(base.location)
        hashes = assets.expected_hashes(asset, Path(path))
        return hashlib.sha256(json.dumps(sorted(hashes.items())).encode()).hexdigest()
    if base.source is Source.hub:
        return f"hub:{base.location}@{Path(path).name}"  # the snapshot folder is the commit
    return dir_digest(Path(path))


def split_digest(split: SplitConfig, where: str) -> str:
    if split.source is Source.hub:
        return f"hub:{split.location}:{split.hub_name}:{split.hub_split}"
    return file_digest(resolve_path(split, where))
