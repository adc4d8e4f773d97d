"""The real prepared language assets (`make assets`): hindi_news, ui_strings and, where apt-get
could fetch it, libreoffice. Their sizes, the held-out split, the filtering rule on every kept
string, and every built-in language set and text source as a job reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbert_exp.data import assets, languages
from sbert_exp.data.text_assets import DEVANAGARI, FORMAT_CHARS, clean, unmark
from sbert_exp.errors import AssetError

pytestmark = pytest.mark.slow  # reads the prepared assets in the user's cache

LINES = {
    ("hindi_news", "hi-eval.txt"): 1000,
    ("hindi_news", "hi-train.txt"): 18451,
    ("ui_strings", "en-hi.tsv"): 253,
    ("ui_strings", "en-mr.tsv"): 148,
    ("libreoffice", "en-hi-eval.tsv"): 1000,
    ("libreoffice", "en-mr-eval.tsv"): 1000,
    ("libreoffice", "mr-eval.txt"): 500,
}
SENTENCE_FILES = [("hindi_news", "hi-eval.txt"), ("hindi_news", "hi-train.txt"),
                  ("libreoffice", "mr-eval.txt")]
PAIR_FILES = [("ui_strings", "en-hi.tsv"), ("ui_strings", "en-mr.tsv"),
              ("libreoffice", "en-hi-eval.tsv"), ("libreoffice", "en-hi-train.tsv"),
              ("libreoffice", "en-mr-eval.tsv"), ("libreoffice", "en-mr-train.tsv")]
# Held out (evaluation) and training files of one language of an asset.
SPLITS = [("hindi_news", ["hi-eval.txt"], ["hi-train.txt"]),
          ("libreoffice", ["en-hi-eval.tsv"], ["en-hi-train.tsv"]),
          ("libreoffice", ["en-mr-eval.tsv", "mr-eval.txt"], ["en-mr-train.tsv"])]


def _root(asset: str) -> Path:
    """The checked asset; libreoffice is optional (it needs apt-get), the others are not."""
    if asset != "libreoffice":
        return assets.resolve(asset)
    try:
        return assets.resolve(asset)
    except AssetError as e:
        pytest.skip(f"the optional libreoffice asset is not prepared ({e})")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]  # every line ends in "\n"


def _sentences(path: Path) -> list[str]:
    """A file's sentences: a .txt file's lines, both sides of a .tsv file's lines."""
    lines = _lines(path)
    return [s for line in lines for s in line.split("\t")] if path.suffix == ".tsv" else lines


@pytest.mark.parametrize(("asset", "file"), list(LINES))
def test_line_counts(asset, file):
    lines = _lines(_root(asset) / file)
    assert len(lines) == LINES[asset, file]
    assert all(line.strip() == line and line for line in lines)  # no blank or padded line
    assert len(set(lines)) == len(lines)


@pytest.mark.parametrize(("asset", "held", "train"), SPLITS)
def test_no_held_out_sentence_is_in_the_training_file(asset, held, train):
    root = _root(asset)
    held_sentences = {s for f in held for s in _sentences(root / f)}
    train_lines = {line for f in train for line in _lines(root / f)}
    train_sentences = {s for f in train for s in _sentences(root / f)}
    assert len(train_sentences) > 1000
    assert not {line for f in held for line in _lines(root / f)} & train_lines
    assert not held_sentences & train_sentences


@pytest.mark.parametrize(("asset", "file"), SENTENCE_FILES)
def test_every_sentence_passes_the_rule(asset, file):
    lines = _lines(_root(asset) / file)
    assert all(DEVANAGARI.search(s) for s in lines)
    if asset == "hindi_news":
        # Whole sentences: the rule keeps each exactly as it is.
        assert [s for s in lines if clean(s) != s] == []
    else:
        # mr-eval.txt holds translations of held-out pairs: unmarked, free of format codes;
        # the rule's word count applies to a pair's English side only.
        assert [s for s in lines if unmark(s) != s or FORMAT_CHARS.intersection(s)] == []


@pytest.mark.parametrize(("asset", "file"), PAIR_FILES)
def test_every_pair_passes_the_rule(asset, file):
    pairs = [line.split("\t") for line in _lines(_root(asset) / file)]
    assert {len(p) for p in pairs} == {2}
    assert [en for en, _ in pairs if clean(en) != en] == []  # the English side: the whole rule
    assert [tr for _, tr in pairs if unmark(tr) != tr or FORMAT_CHARS.intersection(tr)
            or not DEVANAGARI.search(tr)] == []
    # Bitext retrieval needs one right answer: each side's strings once.
    assert len({en for en, _ in pairs}) == len({tr for _, tr in pairs}) == len(pairs)


SIZES = {"en-hi": 253, "en-mr": 148, "en-hi_lo": 1000, "en-mr_lo": 1000, "hi": 1000, "mr": 500}


@pytest.mark.parametrize("name", list(languages.EVAL_SETS))
def test_every_built_in_set_loads(name):
    spec = languages.EVAL_SETS[name]
    root = _root(spec.asset)
    [s] = languages.load([name], {})
    assert (s.name, s.kind, s.path) == (name, spec.kind, root / spec.file)
    assert len(s.first) == SIZES[name]
    if s.kind == "bitext":
        assert len(s.second) == SIZES[name] and s.pairs is None
        assert s.metric == f"bitext/{name}/accuracy"
    else:
        assert s.second == [] and s.pairs.shape == (languages.AGREEMENT_PAIRS, 2)
        assert s.metric == f"agreement/{name}/spearman"


def test_the_default_sets_of_e5_small_load():
    from conftest import compose

    cfg, _ = compose([])
    assert cfg.base_model.name == "e5_small"
    names = languages.job_sets(cfg)
    assert names == ["en-hi", "en-mr", "hi"]
    assert [s.metric for s in languages.load(names, cfg.eval.language_files)] == [
        "bitext/en-hi/accuracy", "bitext/en-mr/accuracy", "agreement/hi/spearman"]


def test_text_sources_and_the_guard_on_the_real_sets():
    """hi_news holds no sentence of any set; the two LibreOffice languages translate the same
    English strings, so the English side of one language's held-out pairs is in the other's
    training text, and only the guard keeps it out."""
    hi_news = languages.read_text("hi_news")
    assert len(hi_news) == 18451 and languages.text_path("hi_news") == \
        assets.resolve("hindi_news") / "hi-train.txt"
    every = [n for n, s in languages.EVAL_SETS.items() if s.asset != "libreoffice"]
    held = languages.held_out(languages.load(every, {}))
    assert languages.exclude(hi_news, held) == (hi_news, 0)
    _root("libreoffice")
    sets = {s.name: s for s in languages.load(list(languages.EVAL_SETS), {})}
    for source, own, other in (("lo_hi", "en-hi_lo", "en-mr_lo"),
                               ("lo_mr", "en-mr_lo", "en-hi_lo")):
        text = languages.read_text(source)
        pairs = languages.read_pairs(languages.text_path(source), source)
        assert text == [s for pair in zip(*pairs, strict=True) for s in pair]
        kept, removed = languages.exclude(text, languages.held_out([sets[own]]))
        assert removed == 0 and kept == list(dict.fromkeys(text))
        kept, removed = languages.exclude(text, languages.held_out([sets[other]]))
        assert removed > 0 and not set(kept) & set(sets[other].first)
    kept, _ = languages.exclude(languages.read_text("lo_mr"), languages.held_out([sets["mr"]]))
    assert not set(kept) & set(sets["mr"].first)
