"""Languages without labelled pairs: the evaluation sets (scored by `sbert_exp.evaluation.
languages`), the training text of each language, and the guard that keeps the two apart.

- A **bitext set** (`bitext/<name>/accuracy`): N translated pairs; each sentence's nearest
  neighbour by cosine among the N sentences of the other language must be its translation; the
  accuracy of both directions, averaged (MTEB's bitext-mining accuracy).
- An **agreement set** (`agreement/<name>/spearman`): held-out sentences of one language; the
  Spearman correlation between the model's and the unpruned teacher's cosines over a seeded set
  of sentence pairs: how much of the teacher's geometry the model kept there, with no labels.
- A **text source**: the training part of a language asset, for distillation and the vocabulary
  corpus. No sentence of an evaluated set ever reaches either (`held_out`, `exclude`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbert_exp.data import assets
from sbert_exp.data.readers import read_lines
from sbert_exp.errors import ConfigError, DataError

AGREEMENT_PAIRS = 3000  # sentence pairs whose cosines are compared, a seeded sample
PAIR_SEED = 2409  # fixed: every job and model compares the same pairs


@dataclass(frozen=True)
class EvalSet:
    """A held-out evaluation set shipped as an asset file."""

    kind: str  # "bitext" (English<TAB>translation per line) or "agreement" (a sentence per line)
    asset: str
    file: str
    about: str


EVAL_SETS: dict[str, EvalSet] = {
    "en-hi": EvalSet("bitext", "ui_strings", "en-hi.tsv", "Django and Sphinx UI strings"),
    "en-mr": EvalSet("bitext", "ui_strings", "en-mr.tsv", "Django UI strings"),
    "en-hi_lo": EvalSet("bitext", "libreoffice", "en-hi-eval.tsv",
                        "LibreOffice UI strings, held out"),
    "en-mr_lo": EvalSet("bitext", "libreoffice", "en-mr-eval.tsv",
                        "LibreOffice UI strings, held out"),
    "hi": EvalSet("agreement", "hindi_news", "hi-eval.txt", "Hindi news sentences, held out"),
    "mr": EvalSet("agreement", "libreoffice", "mr-eval.txt",
                  "Marathi LibreOffice UI strings, held out"),
}

# Training text: asset, file, and whether each line is a translated pair (both sides are text).
TEXTS: dict[str, tuple[str, str, bool]] = {
    "hi_news": ("hindi_news", "hi-train.txt", False),  # Hindi news sentences
    "lo_hi": ("libreoffice", "en-hi-train.tsv", True),  # LibreOffice strings, English and Hindi
    "lo_mr": ("libreoffice", "en-mr-train.tsv", True),  # LibreOffice strings, English and Marathi
}


@dataclass
class Loaded:
    """One evaluation set, read and checked."""

    name: str
    kind: str
    path: Path
    first: list[str]  # bitext: the English side; agreement: the sentences
    second: list[str] = field(default_factory=list)  # bitext: the translations
    pairs: np.ndarray | None = None  # agreement: [P, 2] indices into `first`

    @property
    def metric(self) -> str:
        return f"{self.kind}/{self.name}/" + ("accuracy" if self.kind == "bitext" else "spearman")

    @property
    def sentences(self) -> list[str]:
        return [*self.first, *self.second]


def _kind_of(path: Path, where: str) -> str:
    if path.suffix in (".tsv", ".txt"):
        return "bitext" if path.suffix == ".tsv" else "agreement"
    raise ConfigError(f"{where}: {path} must end in .tsv (a bitext set: English<TAB>translation "
                      "per line) or .txt (an agreement set: one sentence per line)")


def set_names(configured: Sequence[str] | None, default: Sequence[str],
              files: Mapping[str, str]) -> list[str]:
    """The sets a job evaluates: `eval.languages`, else the base model's own, plus the names of
    `eval.language_files`; each name once, checked."""
    names = list(dict.fromkeys([*(default if configured is None else configured), *files]))
    for name in names:
        if name not in EVAL_SETS and name not in files:
            raise ConfigError(f"unknown language set '{name}': choose from "
                              f"{', '.join(EVAL_SETS)}, or give it a file: "
                              f"+eval.language_files.{name}=path.tsv")
    return names


def job_sets(cfg) -> list[str]:
    """The sets a job (a `TrainConfig`) evaluates: eval.languages, else the base model's own."""
    return set_names(cfg.eval.languages, cfg.base_model.languages, cfg.eval.language_files)


def set_path(name: str, files: Mapping[str, str]) -> Path:
    """The file of a set: a user's file, else the checked asset file (AssetError names the fix)."""
    if name in files:
        return Path(files[name]).expanduser()
    spec = EVAL_SETS[name]
    return assets.resolve(spec.asset) / spec.file


def read_pairs(path: Path, where: str) -> tuple[list[str], list[str]]:
    """The two sides of a bitext file; a line without exactly two non-empty sides is an error."""
    first, second = [], []
    for i, line in enumerate(read_lines(path, where), start=1):
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) != 2 or not all(cols):
            raise DataError(f"{where}: line {i} of {path} has {len(cols)} column(s) or an empty "
                            "side; a bitext file needs two per line: English<TAB>translation")
        first.append(cols[0])
        second.append(cols[1])
    return first, second


def agreement_pairs(n: int, count: int = AGREEMENT_PAIRS, seed: int = PAIR_SEED) -> np.ndarray:
    """A seeded sample of `count` distinct index pairs (i < j) of n sentences (all when fewer)."""
    total = n * (n - 1) // 2
    rng = random.Random(seed)
    if total <= count:
        return np.array([(i, j) for i in range(n) for j in range(i + 1, n)], dtype=np.int64)
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < count:
        i, j = rng.sample(range(n), 2)
        chosen.add((min(i, j), max(i, j)))
    return np.array(sorted(chosen), dtype=np.int64)


def load(names: Sequence[str], files: Mapping[str, str]) -> list[Loaded]:
    """Read and check every set a job evaluates, before any model loads."""
    loaded = []
    for name in names:
        where = f"eval.language_files.{name}" if name in files else f"language set '{name}'"
        path = set_path(name, files)
        kind = _kind_of(path, where) if name in files else EVAL_SETS[name].kind
        if kind == "bitext":
            first, second = read_pairs(path, where)
        else:
            first, second = list(dict.fromkeys(read_lines(path, where))), []
        if len(first) < 2:
            raise DataError(f"{where}: {path} holds {len(first)} usable "
                            f"{'pairs' if kind == 'bitext' else 'sentences'}; a set needs at "
                            "least 2: add lines, or leave the set out of eval.languages")
        if kind == "bitext" and (len(set(first)) < len(first) or len(set(second)) < len(second)):
            raise DataError(f"{where}: {path} repeats a sentence on one side, so a retrieval "
                            "has two right answers: keep each sentence once")
        pairs = agreement_pairs(len(first)) if kind == "agreement" else None
        loaded.append(Loaded(name, kind, path, first, second, pairs))
    return loaded


def read_text(name: str) -> list[str]:
    """The training sentences of a text source (both sides of a translated source)."""
    if name not in TEXTS:
        raise ConfigError(f"unknown text source '{name}': choose from {', '.join(TEXTS)}")
    asset, file, paired = TEXTS[name]
    path = assets.resolve(asset) / file
    if not paired:
        return read_lines(path, f"text source '{name}'")
    first, second = read_pairs(path, f"text source '{name}'")
    return [s for pair in zip(first, second, strict=True) for s in pair]


def text_path(name: str) -> Path:
    asset, file, _ = TEXTS[name]
    return assets.resolve(asset) / file


def held_out(sets: Iterable[Loaded]) -> set[str]:
    """Every sentence of the evaluated sets: none may be trained on or shape the vocabulary."""
    return {s for loaded in sets for s in loaded.sentences}


def exclude(sentences: Iterable[str], held: set[str]) -> tuple[list[str], int]:
    """The distinct `sentences` outside `held`, in order, and how many distinct ones were held."""
    distinct = list(dict.fromkeys(sentences))
    kept = [s for s in distinct if s not in held]
    return kept, len(distinct) - len(kept)
