"""Language sets without labels: the bitext and agreement metrics, the rule that filters the
assets' strings, the one-line errors of bad set files and bad config, the guard that keeps every
sentence of an evaluated set out of the training text, and one tiny job that scores the sets.

Everything runs on small files written here; no real language asset is read (see
test_language_assets_real.py for those)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import compose, run_tiny_job, tiny_overrides
from sbert_exp.data import assets, languages
from sbert_exp.data.languages import (
    agreement_pairs,
    exclude,
    held_out,
    load,
    read_pairs,
    set_names,
)
from sbert_exp.data.text_assets import clean, clean_pairs, hindi_sentences, unmark
from sbert_exp.errors import AssetError, ConfigError, DataError
from sbert_exp.evaluation.languages import agreement, bitext_accuracy
from sbert_exp.job.checks import check, plan


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def _one_line(excinfo: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(excinfo.value)


# ------------------------------------------------------------------ metrics


def test_bitext_accuracy_of_aligned_embeddings_is_one():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 8))
    assert bitext_accuracy(np.eye(4), np.eye(4)) == 1.0
    assert bitext_accuracy(emb, emb) == 1.0
    # Cosine: the length of a row does not matter.
    assert bitext_accuracy(emb, emb * np.array([[0.1], [3.0], [7.0], [0.5], [2.0]])) == 1.0


def test_bitext_accuracy_averages_both_directions():
    first = np.array([[1.0, 0.0], [0.0, 1.0]])
    second = np.array([[1.0, 0.0], [1.0, 0.1]])
    # Forward: both English rows find their translation (row 1's only positive cosine is with
    # its own). Backward: translation 1 is nearer English row 0 (0.995) than row 1 (0.0995).
    assert bitext_accuracy(first, second) == 0.75
    assert bitext_accuracy(second, first) == 0.75  # the directions swap, the average stays

    # Four pairs, one translation between two English rows: forward 1, backward 3/4.
    second4 = np.eye(4)
    second4[3] = [0.0, 0.0, 1.0, 0.1]
    assert bitext_accuracy(np.eye(4), second4) == pytest.approx((1.0 + 0.75) / 2)
    # Every translation shifted by one: nothing is retrieved.
    assert bitext_accuracy(np.eye(4), np.roll(np.eye(4), 1, axis=0)) == 0.0


def _angles(degrees: list[float]) -> np.ndarray:
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_agreement_with_itself_and_with_known_transformations():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(12, 6))
    pairs = agreement_pairs(len(emb))
    assert agreement(emb, emb, pairs) == pytest.approx(1.0, abs=1e-12)
    # A rotation and positive row scales keep every cosine: full agreement.
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    scales = rng.uniform(0.1, 10.0, size=(12, 1))
    assert agreement(emb @ rotation * scales, emb, pairs) == pytest.approx(1.0, abs=1e-12)
    # Three sentences at 0, 30 and 90 degrees: cosines (0,1)=.87, (0,2)=0, (1,2)=.5. Swapping
    # sentences 1 and 2 gives (0,1)=0, (0,2)=.87, (1,2)=.5: ranks reversed, Spearman -1.
    teacher = _angles([0, 30, 90])
    model = _angles([0, 90, 30])
    three = agreement_pairs(3)
    assert three.tolist() == [[0, 1], [0, 2], [1, 2]]
    assert agreement(model, teacher, three) == pytest.approx(-1.0)
    # Four sentences at 0, 10, 30, 70 degrees: the six pairs' angles 10, 30, 70, 20, 60, 40,
    # ranks 1 3 6 2 5 4. Sentence 3 moved to 25 degrees: 10, 30, 25, 20, 15, 5, ranks
    # 2 6 5 4 3 1. Spearman: 1 - 6 * (1 + 9 + 1 + 4 + 4 + 9) / (6 * 35) = 0.2.
    assert agreement(_angles([0, 10, 30, 25]), _angles([0, 10, 30, 70]),
                     agreement_pairs(4)) == pytest.approx(0.2)


def test_agreement_pairs_are_seeded_distinct_and_ordered():
    a, b = agreement_pairs(100, 500), agreement_pairs(100, 500)
    assert np.array_equal(a, b)  # the same pairs for every job and model
    assert a.shape == (500, 2) and a.dtype == np.int64
    assert (a[:, 0] < a[:, 1]).all() and a.min() >= 0 and a.max() < 100
    assert len({tuple(p) for p in a.tolist()}) == 500
    assert not np.array_equal(agreement_pairs(100, 500, seed=1), a)
    default = agreement_pairs(1000)
    assert len(default) == languages.AGREEMENT_PAIRS
    assert np.array_equal(default, agreement_pairs(1000, languages.AGREEMENT_PAIRS,
                                                   languages.PAIR_SEED))
    # Fewer pairs than asked for (or exactly as many): all of them, in order.
    assert agreement_pairs(5).tolist() == [[i, j] for i in range(5) for j in range(i + 1, 5)]
    assert agreement_pairs(4, 6).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert len(agreement_pairs(4, 5)) == 5


# ------------------------------------------------------------------ the filtering rule


def test_clean_drops_format_codes_markup_and_short_strings():
    for dropped in ["Save %s to the disk", "Open {name} in a new window",
                    "Show <b>bold</b> text here", "Save & close the file", "Cost in $ dollars",
                    "Set width=100 for cells", "file_name is not valid", "Use \\n for lines",
                    "Two words", "Word", "", "   ", "~ _"]:
        assert clean(dropped) is None, dropped
    assert clean("Save the file now") == "Save the file now"
    assert clean("  Many    spaces \t here  ") == "Many spaces here"


def test_unmark_and_clean_remove_mnemonics():
    assert unmark("~Save the file now") == "Save the file now"
    assert unmark("Fi~le name here") == "File name here"
    assert unmark("_Wrap text automatically") == "Wrap text automatically"
    assert unmark("Wrap _text automatically") == "Wrap text automatically"
    assert unmark("पाठ स्वतः लपेटें (_W)") == "पाठ स्वतः लपेटें"
    assert unmark("(_W) पाठ लपेटें") == "पाठ लपेटें"
    assert unmark("file_name stays") == "file_name stays"  # not a word's start: kept
    assert clean("~Save the file now") == "Save the file now"
    assert clean("_Wrap text automatically") == "Wrap text automatically"
    assert clean("Wrap text (_W) automatically") == "Wrap text automatically"
    assert clean("file_name is not valid") is None


def test_clean_pairs_keeps_each_side_once_and_counts_every_drop():
    pairs = [
        ("~Save the file now", "फ़ाइल अभी सहेजें (_S)"),  # kept, both unmarked
        ("_Wrap text automatically", "पाठ स्वतः लपेटें (_W)"),  # kept
        ("Save %s now please", "%s अभी सहेजें"),  # English format code
        ("Close", "बंद करें"),  # English too short
        ("Open the document now", "Open the document"),  # translation not Devanagari
        ("Open the second document", "दस्तावेज़ {name} खोलें"),  # translation format code
        ("Insert a new row", "नई_पंक्ति डालें"),  # translation: "_" inside a word
        ("Save the file now", "कुछ और"),  # English repeated (after unmark)
        ("Another English sentence here", "फ़ाइल अभी सहेजें"),  # translation repeated
        ("Print the whole page", "पूरा पृष्ठ छापें"),  # kept: a 3-word translation
        ("Show the page", "दिखाएँ"),  # kept: a translation may be one word
    ]
    counts: Counter = Counter()
    kept = clean_pairs(pairs, counts)
    assert kept == [("Save the file now", "फ़ाइल अभी सहेजें"),
                    ("Wrap text automatically", "पाठ स्वतः लपेटें"),
                    ("Print the whole page", "पूरा पृष्ठ छापें"),
                    ("Show the page", "दिखाएँ")]
    assert counts == Counter({"entries": 11, "dropped: short or format codes": 2,
                              "dropped: translation not Devanagari, or format codes": 3,
                              "dropped: duplicate": 2, "kept": 4})


def test_hindi_sentences_reads_the_first_list_of_a_python_source():
    source = (
        "# lingatagger's sentence.py, in small\n"
        "sentences = [\n"
        "    'यह एक अच्छा वाक्य है।',\n"
        "    'यह एक अच्छा वाक्य है।',\n"  # repeated
        "    '  दूसरा   अच्छा वाक्य यहाँ है  ',\n"  # kept, whitespace collapsed
        "    'छोटा वाक्य',\n"  # two words
        "    'This is English text',\n"  # no Devanagari
        "    'प्रतिशत %s वाला वाक्य है',\n"  # a format code
        "    'दूसरा अच्छा वाक्य यहाँ है',\n"  # repeated once collapsed
        "    5,\n"  # not a string: not an entry
        "]\n"
        "other = ['यह सूची पढ़ी नहीं जाती है']\n"
    )
    counts: Counter = Counter()
    assert hindi_sentences(source, counts) == ["यह एक अच्छा वाक्य है।",
                                               "दूसरा अच्छा वाक्य यहाँ है"]
    assert counts == Counter({"entries": 7, "dropped: short, format codes or not Devanagari": 3,
                              "dropped: duplicate": 2, "kept": 2})
    with pytest.raises(AssetError, match=r"sentence.py holds no list of strings: remove the "
                                         r"hindi_news asset and run `make assets`") as e:
        hindi_sentences("sentences = (1, 2)\n", Counter())
    _one_line(e)


# ------------------------------------------------------------------ set files and their errors


def test_load_reads_bitext_and_agreement_files(tmp_path):
    bitext = _write(tmp_path / "mine.tsv", ["\ufeffSave the file\tफ़ाइल सहेजें",
                                            "  Open the file \t फ़ाइल खोलें ", "",
                                            "Close the file\tफ़ाइल बंद करें"])
    agree = _write(tmp_path / "hi.txt", ["पहला वाक्य", "दूसरा वाक्य", "पहला वाक्य", "",
                                         "तीसरा वाक्य"])
    names = set_names([], [], {"mine": str(bitext), "ag": str(agree)})
    assert names == ["mine", "ag"]
    mine, ag = load(names, {"mine": str(bitext), "ag": str(agree)})
    assert (mine.kind, mine.path, mine.metric) == ("bitext", bitext, "bitext/mine/accuracy")
    assert mine.first == ["Save the file", "Open the file", "Close the file"]
    assert mine.second == ["फ़ाइल सहेजें", "फ़ाइल खोलें", "फ़ाइल बंद करें"]
    assert mine.pairs is None and mine.sentences == [*mine.first, *mine.second]
    assert (ag.kind, ag.metric) == ("agreement", "agreement/ag/spearman")
    assert ag.first == ["पहला वाक्य", "दूसरा वाक्य", "तीसरा वाक्य"]  # repeats once
    assert ag.second == [] and ag.pairs.tolist() == [[0, 1], [0, 2], [1, 2]]
    assert read_pairs(bitext, "w") == (mine.first, mine.second)
    assert held_out([mine, ag]) == {*mine.first, *mine.second, *ag.first}
    # A user's file may take a built-in set's name: its suffix then decides the kind.
    [own] = load(["en-hi"], {"en-hi": str(agree)})
    assert own.kind == "agreement" and own.path == agree


def test_set_names_default_configured_files_and_unknown():
    files = {"mine": "m.tsv"}
    assert set_names(None, ["en-hi", "hi"], files) == ["en-hi", "hi", "mine"]
    assert set_names([], ["en-hi", "hi"], {}) == []
    assert set_names(["mr", "en-mr", "mr"], ["en-hi"], {}) == ["mr", "en-mr"]
    assert set_names(["mine"], [], files) == ["mine"]
    with pytest.raises(ConfigError, match=r"^unknown language set 'xx-yy': choose from en-hi, "
                                          r"en-mr, en-hi_lo, en-mr_lo, hi, mr, or give it a "
                                          r"file: \+eval.language_files.xx-yy=path.tsv$") as e:
        set_names(["en-hi", "xx-yy"], [], files)
    _one_line(e)


@pytest.mark.parametrize(("lines", "message"), [
    (["Save the file\tफ़ाइल सहेजें", "only one column here"],
     r"eval.language_files.mine: line 2 of .*mine.tsv has 1 column\(s\) or an empty side; a "
     r"bitext file needs two per line: English<TAB>translation$"),
    (["Save the file\tफ़ाइल सहेजें", "Open the file\t"],
     r"line 2 of .*mine.tsv has 1 column\(s\) or an empty side"),
    (["\tफ़ाइल सहेजें", "Open the file\tफ़ाइल खोलें"],
     r"line 1 of .*mine.tsv has 1 column\(s\) or an empty side"),
    (["Save the file\t \tफ़ाइल सहेजें", "Open the file\tफ़ाइल खोलें"],
     r"line 1 of .*mine.tsv has 3 column\(s\) or an empty side"),
    (["Save the file\tफ़ाइल सहेजें"],
     r"eval.language_files.mine: .*mine.tsv holds 1 usable pairs; a set needs at least 2: add "
     r"lines, or leave the set out of eval.languages$"),
    ([], r"mine.tsv holds 0 usable pairs; a set needs at least 2"),
    (["Save the file\tफ़ाइल सहेजें", "Open the file\tफ़ाइल सहेजें"],
     r"eval.language_files.mine: .*mine.tsv repeats a sentence on one side, so a retrieval has "
     r"two right answers: keep each sentence once$"),
    (["Save the file\tफ़ाइल सहेजें", "Save the file\tफ़ाइल खोलें"],
     r"mine.tsv repeats a sentence on one side"),
])
def test_bad_bitext_files_fail_in_one_line_naming_the_fix(tmp_path, lines, message):
    path = _write(tmp_path / "mine.tsv", lines)
    with pytest.raises(DataError, match=message) as e:
        load(["mine"], {"mine": str(path)})
    _one_line(e)


def test_bad_agreement_and_missing_files_fail_in_one_line(tmp_path):
    one = _write(tmp_path / "one.txt", ["एक ही वाक्य", "एक ही वाक्य", ""])
    with pytest.raises(DataError, match=r"eval.language_files.one: .*one.txt holds 1 usable "
                                        r"sentences; a set needs at least 2") as e:
        load(["one"], {"one": str(one)})
    _one_line(e)
    with pytest.raises(DataError, match=r"eval.language_files.gone: file .*gone.tsv does not "
                                        r"exist: fix the path$"):
        load(["gone"], {"gone": str(tmp_path / "gone.tsv")})
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\nun autre\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8 text \(byte 3 cannot be "
                                        r"decoded\): re-save it as UTF-8$"):
        load(["l"], {"l": str(latin1)})
    with pytest.raises(DataError, match=r"^w: line 1 of .* has 1 column"):
        read_pairs(_write(tmp_path / "x.tsv", ["no tab"]), "w")


@pytest.mark.parametrize("name", ["mine.csv", "mine.tsv.bak", "mine"])
def test_a_set_file_must_end_in_tsv_or_txt(tmp_path, name):
    path = _write(tmp_path / name, ["Save the file\tफ़ाइल सहेजें", "Open the file\tफ़ाइल खोलें"])
    with pytest.raises(ConfigError, match=r"^eval.language_files.mine: .* must end in .tsv \(a "
                                          r"bitext set: English<TAB>translation per line\) or "
                                          r".txt \(an agreement set: one sentence per line\)$"):
        load(["mine"], {"mine": str(path)})
    # The suffix is checked before the file is read: a missing .csv names the suffix too.
    with pytest.raises(ConfigError, match=r"must end in .tsv"):
        load(["mine"], {"mine": str(tmp_path / "missing.csv")})


def test_unknown_text_source():
    with pytest.raises(ConfigError, match=r"^unknown text source 'nope': choose from hi_news, "
                                          r"lo_hi, lo_mr$"):
        languages.read_text("nope")


def test_exclude_keeps_distinct_sentences_in_order_and_counts_the_held():
    assert exclude(["b", "a", "x", "a", "c", "x", "y"], {"x", "y", "z"}) == (["b", "a", "c"], 2)
    assert exclude([], {"x"}) == ([], 0)
    assert exclude(["a", "a"], set()) == (["a"], 0)


# ------------------------------------------------------------------ the job's config


def test_unknown_language_set_in_the_config_fails_before_any_model_loads(tiny_bert, tmp_path,
                                                                         monkeypatch):
    from sbert_exp.model import modeling

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(modeling, "load_base", no_model)
    monkeypatch.setattr(modeling, "locate", no_model)
    cfg, _ = compose(["eval.languages=[xx-yy]"])
    with pytest.raises(ConfigError, match=r"^unknown language set 'xx-yy': choose from "):
        plan(cfg)
    cfg, _ = compose([*tiny_overrides(tiny_bert, tmp_path, phase="none"),
                      "eval.languages=[en-hi, xx-yy]"])
    with pytest.raises(ConfigError, match=r"unknown language set 'xx-yy'") as e:
        check(cfg)
    _one_line(e)
    # A set named only by its file is known.
    path = _write(tmp_path / "mine.tsv", ["Save the file\tफ़ाइल सहेजें"])
    cfg, _ = compose(["eval.languages=[mine]", f"+eval.language_files.mine={path}"])
    assert plan(cfg) == [0, 1, 2, 3, 4, 5]
    assert cfg.eval.language_files == {"mine": str(path)}


@pytest.mark.parametrize(("overrides", "message"), [
    (["phase=distill", "+phase.distill.text={nope: 5}"],
     r"^phase.distill.text.nope: unknown text source 'nope': choose from hi_news, lo_hi, lo_mr$"),
    (["phase=distill", "+phase.distill.text.hi_news=-1"],
     r"^phase.distill.text.hi_news=-1 is invalid: it must be at least 0 \(0: none of it\), or "
     r"null for all of the "
     r"source$"),
    (["vocab=corpus", "vocab.text=[hi_news, nope]"],
     r"^vocab.text: unknown text source 'nope': choose from hi_news, lo_hi, lo_mr$"),
])
def test_unknown_text_sources_fail_in_plan(overrides, message):
    cfg, _ = compose(overrides)
    with pytest.raises(ConfigError, match=message):
        plan(cfg)


# ------------------------------------------------------------------ the held-out guard

# An eval bitext set and an agreement set; the training text holds some of their sentences.
HELD_BITEXT = [("Save the open file now", "खुली फ़ाइल अभी सहेजें"),
               ("Print the whole page", "पूरा पृष्ठ छापें"),
               ("Close every open window", "हर खुली खिड़की बंद करें")]
HELD_AGREEMENT = ["पहला रोका गया वाक्य", "दूसरा रोका गया वाक्य", "तीसरा रोका गया वाक्य"]
(E1, T1), (E2, T2), (E3, T3) = HELD_BITEXT
A1, A2, A3 = HELD_AGREEMENT
KEEP = [f"प्रशिक्षण वाक्य संख्या {i}" for i in range(10)]


@pytest.fixture
def text_sources(tmp_path, monkeypatch) -> Path:
    """Two text sources of a fake asset in tmp_path: `src` (a sentence a line) and `srcp`
    (translated pairs, both sides text)."""
    root = tmp_path / "texts"
    root.mkdir()
    _write(root / "src.txt", [E1, KEEP[1], T2, A1, KEEP[2], A1, KEEP[3], KEEP[1], KEEP[4]])
    _write(root / "srcp.tsv", [f"{E3}\tअनुवाद एक", f"Some other line\t{A2}",
                               f"{KEEP[5]}\t{KEEP[6]}"])
    resolve = assets.resolve
    monkeypatch.setattr(assets, "resolve", lambda name: root if name == "test_texts"
                        else resolve(name))
    monkeypatch.setitem(languages.TEXTS, "src", ("test_texts", "src.txt", False))
    monkeypatch.setitem(languages.TEXTS, "srcp", ("test_texts", "srcp.tsv", True))
    return root


def _held_files(tmp_path: Path) -> list[str]:
    bitext = _write(tmp_path / "held.tsv", [f"{e}\t{t}" for e, t in HELD_BITEXT])
    agree = _write(tmp_path / "held.txt", HELD_AGREEMENT)
    # eval.languages=[]: only the files' sets, whatever base_model.languages says (e5_small's
    # en-hi, en-mr, hi read real assets).
    return ["eval.languages=[]", f"+eval.language_files.bt={bitext}",
            f"+eval.language_files.ag={agree}"]


def test_no_sentence_of_an_evaluated_set_reaches_distillation_or_the_vocabulary(
        tiny_bert, tmp_path, text_sources):
    assert languages.read_text("srcp") == [E3, "अनुवाद एक", "Some other line", A2, KEEP[5],
                                           KEEP[6]]
    sentences = _write(tmp_path / "distill.txt", [T3, KEEP[7], KEEP[8], KEEP[7]])
    vocab_file = _write(tmp_path / "vocab.txt", [A3, KEEP[9]])
    cfg, _ = compose([*tiny_overrides(tiny_bert, tmp_path, phase="distill"),
                      f"phase.distill.sentences_file={sentences}",
                      "phase.distill.max_sentences=null",
                      "+phase.distill.text={src: null, srcp: null}",
                      "vocab=corpus", "vocab.training_splits=false",
                      f"vocab.files=[{vocab_file}]", "vocab.text=[src, srcp]",
                      *_held_files(tmp_path)])
    assert cfg.eval.languages == []
    data = check(cfg).data  # plan, model files, then load_data
    assert [s.name for s in data.languages] == ["bt", "ag"]
    held = {*(s for pair in HELD_BITEXT for s in pair), *HELD_AGREEMENT}
    assert held_out(data.languages) == held

    # Distillation: the sentences file, then each source, each without the held sentences.
    assert not held & set(data.distill)
    assert data.distill == [KEEP[7], KEEP[8], KEEP[1], KEEP[2], KEEP[3], KEEP[4],
                            "अनुवाद एक", "Some other line", KEEP[5], KEEP[6]]
    # Vocabulary (no training splits: they would add SNLI): vocab.files, then the sources.
    assert not held & set(data.vocab_corpus)
    assert data.vocab_corpus == [KEEP[9], KEEP[1], KEEP[2], KEEP[3], KEEP[4],
                                 "अनुवाद एक", "Some other line", KEEP[5], KEEP[6]]
    # Distinct held sentences each text held: distill T3 | E1 T2 A1 | E3 A2; vocab A3 E1 T2 A1
    # E3 A2.
    assert data.held_out_removed == {"distill": 6, "vocab": 6}
    assert data.distill_mix == {"file": 2, "src": 4, "srcp": 4}  # the stated mix, as drawn


def _file_and_src(tiny_bert, tmp_path, count: int):
    """A distillation job on two sentences of a file plus `count` of the text source `src`."""
    sentences = _write(tmp_path / "distill.txt", [KEEP[7], KEEP[8]])
    return compose([*tiny_overrides(tiny_bert, tmp_path, phase="distill"),
                    f"phase.distill.sentences_file={sentences}",
                    "phase.distill.max_sentences=null", f"+phase.distill.text.src={count}",
                    *_held_files(tmp_path)])[0]


def test_a_sampled_text_source_never_samples_a_held_sentence(tiny_bert, tmp_path, text_sources):
    data = check(_file_and_src(tiny_bert, tmp_path, 4)).data
    # src holds 4 distinct sentences outside the sets: a sample of 4 is all of them.
    assert sorted(data.distill) == sorted([KEEP[7], KEEP[8], *KEEP[1:5]])
    assert data.held_out_removed == {"distill": 3}
    cfg = _file_and_src(tiny_bert, tmp_path, 5)
    with pytest.raises(ConfigError, match=r"^phase.distill.text.src=5 but text source 'src' "
                                          r"holds 4 distinct sentences"):
        check(cfg)


# ------------------------------------------------------------------ a tiny job


BITEXT = [("a man is playing the guitar", "the guitar a man is playing"),
          ("a woman is cutting an onion", "an onion a woman is cutting"),
          ("two dogs are running on the beach", "on the beach two dogs are running"),
          ("a girl is riding a horse", "a horse a girl is riding"),
          ("the children are eating in the street", "in the street the children are eating"),
          ("an old man is sitting outside", "outside an old man is sitting")]
AGREEMENT = ["a boy is playing the piano", "a cat is sitting on the car",
             "people are dancing and singing", "the plane is taking off",
             "a young woman is brushing her hair", "three men are walking in the field",
             "a black dog plays with a red ball", "a small child is cooking"]


def test_tiny_job_scores_its_language_sets(tiny_bert, tmp_path):
    bitext = _write(tmp_path / "pseudo.tsv", [f"{e}\t{t}" for e, t in BITEXT])
    agree = _write(tmp_path / "agree.txt", AGREEMENT)
    metrics = run_tiny_job([*tiny_overrides(tiny_bert, tmp_path, phase="none"),
                            "pruning=unpruned", "save_model=false", "eval.speed_rounds=0",
                            "eval.languages=[]", f"+eval.language_files.pseudo={bitext}",
                            f"+eval.language_files.agree={agree}"], tmp_path / "job")
    for key in ["base_model/bitext/pseudo/accuracy", "before/bitext/pseudo/accuracy",
                "bitext/pseudo/accuracy", "base_model/agreement/agree/spearman",
                "before/agreement/agree/spearman", "agreement/agree/spearman"]:
        assert key in metrics, key
    for key in ["base_model/bitext/pseudo/accuracy", "before/bitext/pseudo/accuracy"]:
        assert 0.0 <= metrics[key] <= 1.0
    # The teacher agrees with itself; the unpruned, untrained model is the teacher.
    # (Spearman of two equal arrays: 1 up to the rounding of its Pearson step.)
    assert metrics["base_model/agreement/agree/spearman"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["before/agreement/agree/spearman"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["before/bitext/pseudo/accuracy"] == pytest.approx(
        metrics["base_model/bitext/pseudo/accuracy"])
    assert not any(k.startswith("data/held_out_removed/") for k in metrics)  # no training text


def test_tiny_distill_job_logs_what_the_guard_removed(tiny_bert, tmp_path, text_sources,
                                                     monkeypatch):
    # Sets in the tiny tokenizer's words (Devanagari is all [UNK] to it: equal embeddings).
    bitext = _write(tmp_path / "pseudo.tsv", [f"{e}\t{t}" for e, t in BITEXT])
    agree = _write(tmp_path / "agree.txt", AGREEMENT)
    _write(text_sources / "jobsrc.txt", [BITEXT[0][0], AGREEMENT[1], BITEXT[2][1],
                                         "a dog is running in the water", "a woman is singing",
                                         "the men are riding bikes", "a girl plays the flute"])
    sentences = _write(tmp_path / "distill.txt", [BITEXT[1][1], "two women are talking outside",
                                                  "a man is cutting his hair", "a cat is eating",
                                                  "the boy is riding a bike outside"])
    monkeypatch.setitem(languages.TEXTS, "jobsrc", ("test_texts", "jobsrc.txt", False))
    metrics = run_tiny_job([*tiny_overrides(tiny_bert, tmp_path, phase="distill"),
                            "pruning.keep=3", "save_model=false", "eval.speed_rounds=0",
                            f"phase.distill.sentences_file={sentences}",
                            "phase.distill.max_sentences=null", "phase.distill.batch_size=4",
                            "+phase.distill.text.jobsrc=null", "eval.languages=[]",
                            f"+eval.language_files.pseudo={bitext}",
                            f"+eval.language_files.agree={agree}"], tmp_path / "job")
    assert metrics["data/held_out_removed/distill"] == 4.0  # 1 of the file, 3 of the source
    assert metrics["train_distill/pairs"] == 4 + 4  # the others of each
    assert (metrics["data/distill_sentences/file"], metrics["data/distill_sentences/jobsrc"]) \
        == (4.0, 4.0)
    assert metrics["base_model/agreement/agree/spearman"] == pytest.approx(1.0, abs=1e-12)
    for tag in ("before", "after_distill"):
        assert 0.0 <= metrics[f"{tag}/bitext/pseudo/accuracy"] <= 1.0
        assert -1.0 <= metrics[f"{tag}/agreement/agree/spearman"] <= 1.0
    assert metrics["agreement/agree/spearman"] == \
        metrics["after_distill/agreement/agree/spearman"]


def test_a_text_source_at_zero_gives_no_sentence(tiny_bert, tmp_path, text_sources):
    # How a sweep leaves a preset's source out: `~phase.distill.text.src` fails in a multirun.
    data = check(_file_and_src(tiny_bert, tmp_path, 0)).data
    assert data.distill == [KEEP[7], KEEP[8]] and data.distill_mix == {"file": 2}
