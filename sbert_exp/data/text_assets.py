"""Hindi and Marathi text that installs offline: how each language asset is built.

No labelled Hindi or Marathi STS or NLI pairs install from a package registry, but real text
does:

- `hindi_news`: the Hindi news sentences of the `lingatagger==1.0` wheel (Apache License), one
  Python list in `lingatagger/sentence.py`, read with `ast` (the package is never installed).
- `ui_strings`: English-Hindi and English-Marathi translated strings of the gettext catalogues in
  the `django==5.2.8` (BSD-3) and `sphinx==8.2.3` (BSD-2) wheels, read with polib.
- `libreoffice` (optional): the .mo catalogues of Debian's `libreoffice-l10n-mr` and
  `libreoffice-l10n-hi` (MPL-2.0), fetched with `apt-get download` (no root) and unpacked with
  `dpkg-deb -x`: the only sizeable Marathi text found.

Every string passes one rule (`clean`); what each step drops is counted in the asset's
`counts.json`. Each asset is split once, by a fixed seed, into evaluation files (bitext and
agreement sets, never trained on) and training files (distillation and vocabulary text).
"""

from __future__ import annotations

import ast
import json
import logging
import random
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from sbert_exp.errors import AssetError, AssetUnavailable

log = logging.getLogger(__name__)

SPLIT_SEED = 2409  # the fixed seed of every held-out split: the same files on every machine
MIN_WORDS = 3  # a string, or a pair's English side, needs at least this many words
# Format codes, placeholders, markup and mnemonics: a string holding any of them is dropped.
FORMAT_CHARS = set("%{}<>$\\[]|&=_@#")
DEVANAGARI = re.compile("[\u0900-\u097f]")
HINDI_EVAL = 1000  # held-out Hindi news sentences: the `hi` agreement set
LO_BITEXT_EVAL = 1000  # held-out LibreOffice pairs per language: en-hi_lo, en-mr_lo
LO_AGREEMENT_EVAL = 500  # held-out Marathi LibreOffice strings: the `mr` agreement set
# GTK mnemonics of LibreOffice's dialogs: "_Wrap text" and its translation's "(_W)".
MNEMONIC = re.compile(r"\s*\(_\w\)|(?<!\S)_(?=\w)")

DJANGO = "django==5.2.8"
SPHINX = "sphinx==8.2.3"
LINGATAGGER = "lingatagger==1.0"
LO_PACKAGES = {"hi": "libreoffice-l10n-hi", "mr": "libreoffice-l10n-mr"}


def unmark(text: str) -> str:
    """The string without LibreOffice's mnemonics (`~`, `_` at a word's start, `(_X)`), its
    whitespace collapsed."""
    return " ".join(MNEMONIC.sub("", text.replace("~", "")).split())


def clean(text: str) -> str | None:
    """The string as kept, or None when the rule drops it.

    Mnemonics are removed and whitespace is collapsed (`unmark`); a string that then holds
    a format code, placeholder, markup, or mnemonic character (`FORMAT_CHARS`) or has fewer
    than `MIN_WORDS` words is dropped.
    """
    text = unmark(text)
    if not text or FORMAT_CHARS.intersection(text) or len(text.split()) < MIN_WORDS:
        return None
    return text


def clean_pairs(pairs: Iterable[tuple[str, str]], counts: Counter) -> list[tuple[str, str]]:
    """Translated pairs (English, Devanagari) that pass `clean` on both sides, each English and
    each translation once (bitext retrieval needs one right answer); `counts` tallies the drops."""
    kept: list[tuple[str, str]] = []
    seen_en: set[str] = set()
    seen_tr: set[str] = set()
    for en, tr in pairs:
        counts["entries"] += 1
        en_c, tr_c = clean(en), unmark(tr)
        if en_c is None:
            counts["dropped: short or format codes"] += 1
        elif not DEVANAGARI.search(tr_c) or FORMAT_CHARS.intersection(tr_c):
            counts["dropped: translation not Devanagari, or format codes"] += 1
        elif en_c in seen_en or tr_c in seen_tr:
            counts["dropped: duplicate"] += 1
        else:
            seen_en.add(en_c)
            seen_tr.add(tr_c)
            kept.append((en_c, tr_c))
    counts["kept"] = len(kept)
    return kept


def _catalogue_pairs(path: Path) -> Iterable[tuple[str, str]]:
    """(msgid, msgstr) of the translated, not fuzzy, singular entries of a .po or .mo file."""
    import polib

    catalogue = polib.mofile(str(path)) if path.suffix == ".mo" else polib.pofile(str(path))
    for entry in catalogue:
        if entry.msgid and entry.msgstr and not entry.msgid_plural and not entry.obsolete \
                and "fuzzy" not in entry.flags:
            yield entry.msgid, entry.msgstr


def write_pairs(path: Path, pairs: Iterable[tuple[str, str]]) -> int:
    rows = [f"{a}\t{b}\n" for a, b in pairs]
    path.write_text("".join(rows), encoding="utf-8")
    return len(rows)


def write_lines(path: Path, lines: Iterable[str]) -> int:
    rows = [f"{s}\n" for s in lines]
    path.write_text("".join(rows), encoding="utf-8")
    return len(rows)


def _shuffled(items: list, seed: int = SPLIT_SEED) -> list:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def _record(out: Path, counts: dict) -> None:
    (out / "counts.json").write_text(json.dumps(counts, indent=1, ensure_ascii=False) + "\n")
    for source, tally in counts.items():
        log.info("%s: %s", source, ", ".join(f"{k} {v}" for k, v in tally.items()))


# ------------------------------------------------------------------ hindi_news


def hindi_sentences(source: str, counts: Counter) -> list[str]:
    """The distinct sentences of lingatagger's `sentence.py` (a Python list literal) that pass
    `clean` and are written in Devanagari."""
    tree = ast.parse(source)
    lists = [node for node in ast.walk(tree) if isinstance(node, ast.List)]
    strings = [elt.value for lst in lists[:1] for elt in lst.elts
               if isinstance(elt, ast.Constant) and isinstance(elt.value, str)]
    if not strings:
        raise AssetError(f"{LINGATAGGER}: sentence.py holds no list of strings: remove the "
                         "hindi_news asset and run `make assets`")
    kept: dict[str, None] = {}
    for s in strings:
        counts["entries"] += 1
        c = clean(s)
        if c is None or not DEVANAGARI.search(c):
            counts["dropped: short, format codes or not Devanagari"] += 1
        elif c in kept:
            counts["dropped: duplicate"] += 1
        else:
            kept[c] = None
    counts["kept"] = len(kept)
    return list(kept)


def prepare_hindi_news(out: Path, download) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download(LINGATAGGER, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            source = zf.read("lingatagger/sentence.py").decode("utf-8")
    counts: Counter = Counter()
    sentences = _shuffled(hindi_sentences(source, counts))
    counts["eval (hi-eval.txt)"] = write_lines(out / "hi-eval.txt", sentences[:HINDI_EVAL])
    counts["train (hi-train.txt)"] = write_lines(out / "hi-train.txt", sentences[HINDI_EVAL:])
    _record(out, {LINGATAGGER: dict(counts)})


# ------------------------------------------------------------------ ui_strings


def prepare_ui_strings(out: Path, download) -> None:
    """en-hi.tsv (Django and Sphinx) and en-mr.tsv (Django): every kept pair is evaluation data."""
    found: dict[str, list[tuple[str, str]]] = {"hi": [], "mr": []}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in (DJANGO, SPHINX):
            wheel = download(spec, Path(tmp) / spec)
            with zipfile.ZipFile(wheel) as zf:
                for name in sorted(zf.namelist()):
                    m = re.search(r"/locale/(hi|mr)/LC_MESSAGES/[^/]+\.po$", name)
                    if m is None:
                        continue
                    path = Path(tmp) / "po" / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(zf.read(name))
                    found[m.group(1)] += list(_catalogue_pairs(path))
    counts = {}
    for lang, pairs in found.items():
        tally: Counter = Counter()
        counts[f"en-{lang}"] = tally
        tally[f"en-{lang}.tsv"] = write_pairs(out / f"en-{lang}.tsv", clean_pairs(pairs, tally))
    _record(out, {k: dict(v) for k, v in counts.items()})


# ------------------------------------------------------------------ libreoffice


def _apt_download(package: str, dest: Path) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise AssetUnavailable("apt-get is not on this machine: the libreoffice asset (Marathi "
                               "text) comes from Debian's packages; experiment=marathi_local "
                               "and the sets en-hi_lo, en-mr_lo, mr need it")
    proc = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True,
                          text=True)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        why = reason[-1] if reason else f"exit code {proc.returncode}"
        raise AssetError(f"apt-get download {package} failed ({why}): run `apt-get update` "
                         "(as root), then `make assets-libreoffice`")
    return debs[-1]


def prepare_libreoffice(out: Path) -> None:
    """Per language: 1,000 held-out pairs (en-<lang>-eval.tsv), for Marathi 500 more held-out
    strings (mr-eval.txt, agreement), the rest for training (en-<lang>-train.tsv)."""
    counts: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lang, package in LO_PACKAGES.items():
            folder = Path(tmp) / lang
            folder.mkdir()
            deb = _apt_download(package, folder)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(folder / "x")], check=True)
            pairs = []
            for mo in sorted((folder / "x").rglob(f"resource/{lang}/LC_MESSAGES/*.mo")):
                pairs += list(_catalogue_pairs(mo))
            tally: Counter = Counter()
            kept = _shuffled(clean_pairs(pairs, tally))
            if len(kept) < LO_BITEXT_EVAL + LO_AGREEMENT_EVAL + 1:
                raise AssetError(f"{deb.name} gave only {len(kept)} usable pairs: check the "
                                 "package, then run `make assets-libreoffice` again")
            tally["package"] = deb.name
            tally[f"en-{lang}-eval.tsv"] = write_pairs(out / f"en-{lang}-eval.tsv",
                                                       kept[:LO_BITEXT_EVAL])
            rest = kept[LO_BITEXT_EVAL:]
            if lang == "mr":
                tally["mr-eval.txt"] = write_lines(out / "mr-eval.txt",
                                                   [t for _, t in rest[:LO_AGREEMENT_EVAL]])
                rest = rest[LO_AGREEMENT_EVAL:]
            tally[f"en-{lang}-train.tsv"] = write_pairs(out / f"en-{lang}-train.tsv", rest)
            counts[package] = dict(tally)
    _record(out, counts)
