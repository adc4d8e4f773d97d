"""Sentence-pair splits: the embedded STSb/SNLI, local files in every format, and the errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from conftest import CONF
from sbert_exp.config.schema import DatasetConfig, FileFormat, Source, SplitConfig
from sbert_exp.data.readers import load_split, subsample
from sbert_exp.errors import DataError, UserError

NLI_MAP = {"entailment": 0, "neutral": 1, "contradiction": 2}


def pattern(*parts: str) -> str:
    """A regex matching the literal `parts` in this order on one line."""
    return ".*".join(re.escape(p) for p in parts)


def rows(ds: Dataset) -> list[tuple[Any, ...]]:
    return list(zip(*(ds[c] for c in ds.column_names), strict=True))


@pytest.fixture(scope="module")
def snli_stsb() -> DatasetConfig:
    """conf/dataset/snli_stsb.yaml, typed exactly as a job sees it."""
    node = OmegaConf.load(CONF / "dataset" / "snli_stsb.yaml")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DatasetConfig), node))


# ------------------------------------------------------------------ embedded STSb and SNLI


def test_config_reads_stsb_as_headerless_tsv(snli_stsb: DatasetConfig):
    for split in (snli_stsb.sts_train, snli_stsb.sts_test):
        assert split.source is Source.embedded
        assert split.format is FileFormat.tsv and split.header is False
        assert (split.sentence1, split.sentence2, split.label) == ("5", "6", "4")
        assert split.score_max == 5.0
    assert snli_stsb.sts_test.location == "stsb/test"


@pytest.mark.parametrize(("split", "count", "first"), [
    ("train", 5749, ("A plane is taking off.", "An air plane is taking off.", 1.0)),
    ("dev", 1500, ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.",
                   1.0)),
    ("test", 1379, ("A girl is styling her hair.", "A girl is brushing her hair.", 0.5)),
])
def test_embedded_stsb(snli_stsb: DatasetConfig, split, count, first):
    cfg = dataclasses.replace(snli_stsb.sts_test, location=f"stsb/{split}")
    ds = load_split(cfg, "sts", "dataset.sts_test")
    assert ds.column_names == ["sentence1", "sentence2", "score"]
    assert len(ds) == count
    assert rows(ds)[0] == first
    scores = ds["score"]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert min(scores) == 0.0 and max(scores) == 1.0


def test_embedded_snli_test(snli_stsb: DatasetConfig):
    ds = load_split(snli_stsb.nli_test, "nli", "dataset.nli_test")
    assert ds.column_names == ["sentence1", "sentence2", "label"]
    assert len(ds) == 9824  # 10,000 lines less 176 without a gold label ("-")
    assert Counter(ds["label"]) == {0: 3368, 1: 3219, 2: 3237}
    assert rows(ds)[0] == (
        "This church choir sings to the masses as they sing joyous songs from the book at "
        "a church.", "The church has cracks in the ceiling.", 1)


@pytest.mark.slow
def test_embedded_snli_train_subset(snli_stsb: DatasetConfig):
    ds = load_split(snli_stsb.nli_train, "nli", "dataset.nli_train")
    assert len(ds) == 99890  # 100,000 lines less 110 without a gold label
    assert Counter(ds["label"]) == {0: 33385, 1: 33194, 2: 33311}
    assert rows(ds)[0] == ("A person on a horse jumps over a broken down airplane.",
                           "A person is training his horse for a competition.", 1)


# ------------------------------------------------------------------ local files, every format

# Quotes and commas: csv must honour its quoting, tsv must take quotes literally.
STS_PAIRS = [
    ('A man says "hello, world" to the dog.', "A man greets the dog, loudly.", 5.0),
    ('"Quoted at the start", then a comma.', 'A comma, then "a quote at the end"', 2.5),
    ("It's a 5\" screen, isn't it?", "The screen is 5 inches.", 3.75),
    ('She said "yes" and "no".', 'He said "', 0.0),
    ("Plain, plain, plain.", "Plain.", 1.25),
]
EXPECTED_STS = {
    "sentence1": [p[0] for p in STS_PAIRS],
    "sentence2": [p[1] for p in STS_PAIRS],
    "score": [1.0, 0.5, 0.75, 0.0, 0.25],
}


def _csv_header(path: Path) -> SplitConfig:
    path = path.with_suffix(".csv")
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows([s1, s2, f"{score:g}"] for s1, s2, score in STS_PAIRS)
    text = path.read_text()
    assert '"A man says ""hello, world"" to the dog."' in text  # quoting really used
    return SplitConfig(location=str(path), label="score")


def _tsv_header(path: Path) -> SplitConfig:
    path = path.with_suffix(".tsv")
    lines = ["score\ttext_a\ttext_b"] + [f"{sc}\t{s1}\t{s2}" for s1, s2, sc in STS_PAIRS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return SplitConfig(location=str(path), sentence1="text_a", sentence2="text_b",
                       label="score")


def _tsv_stsb_layout(path: Path) -> SplitConfig:
    # The STSb layout (genre file year id score s1 s2) plus two trailing columns.
    path = path.with_suffix(".tsv")
    lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{sc:.3f}\t{s1}\t{s2}\tsource\textra, x"
             for i, (s1, s2, sc) in enumerate(STS_PAIRS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return SplitConfig(location=str(path), format=FileFormat.tsv, header=False,
                       sentence1="5", sentence2="6", label="4")


def _tsv_unknown_suffix(path: Path) -> SplitConfig:
    # Same as above but named .txt: the format comes from the config.
    cfg = _tsv_stsb_layout(path)
    txt = path.with_suffix(".txt")
    Path(cfg.location).rename(txt)
    cfg.location = str(txt)
    return cfg


def _jsonl(path: Path) -> SplitConfig:
    path = path.with_suffix(".jsonl")
    records = [{"sentence1": s1, "sentence2": s2, "score": sc, "meta": {"i": i}}
               for i, (s1, s2, sc) in enumerate(STS_PAIRS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return SplitConfig(location=str(path), label="score")


def _parquet(path: Path) -> SplitConfig:
    path = path.with_suffix(".parquet")
    frame = pd.DataFrame(STS_PAIRS, columns=["sentence1", "sentence2", "score"])
    frame["genre"] = "captions"
    frame.to_parquet(path)
    return SplitConfig(location=str(path), label="score")


@pytest.mark.parametrize("write", [_csv_header, _tsv_header, _tsv_stsb_layout,
                                   _tsv_unknown_suffix, _jsonl, _parquet],
                         ids=["csv", "tsv", "tsv-no-header", "tsv-as-txt", "jsonl", "parquet"])
def test_every_format_loads_the_same_pairs(tmp_path: Path, write):
    cfg = write(tmp_path / "sts")
    ds = load_split(cfg, "sts", "dataset.sts_test")
    assert ds.to_dict() == EXPECTED_STS


def test_tsv_with_csv_format_would_differ(tmp_path: Path):
    # Guards the test above: the fixtures do hold text that a quoting reader changes.
    cfg = _tsv_header(tmp_path / "sts")
    with open(cfg.location, encoding="utf-8", newline="") as f:
        quoted = list(csv.reader(f, delimiter="\t"))
    assert [r[1] for r in quoted[1:]] != EXPECTED_STS["sentence1"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_nli_class_indices_in_every_format(tmp_path: Path, fmt):
    pairs = [("A dog runs.", "An animal moves.", 0), ("A dog runs.", "A cat sleeps.", 2),
             ('A "big" dog, running.', "A dog is outside.", 1)]
    frame = pd.DataFrame(pairs, columns=["premise", "hypothesis", "gold"])
    path = tmp_path / f"nli.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    cfg = SplitConfig(location=str(path), sentence1="premise", sentence2="hypothesis",
                      label="gold")
    ds = load_split(cfg, "nli", "dataset.nli_train")
    assert ds.column_names == ["sentence1", "sentence2", "label"]
    assert rows(ds) == pairs


# ------------------------------------------------------------------ Marathi and Hindi

# Made-up STS pairs in Devanagari. The Hindi "ड़" is written decomposed (ड + nukta U+093C)
# and one Marathi sentence holds a zero-width joiner: neither may be normalised away.
INDIC_PAIRS = [
    ("mr", "एक मुलगी तिचे केस विंचरत आहे.", "एक मुलगी तिचे केस सजवत आहे.", "2.500"),
    ("mr", "एक माणूस गिटार वाजवत आहे.", "एक माणूस बासरी वाजवत आहे.", "1.250"),
    ("mr", "दर्\u200dयावर एक होडी आहे, आणि \"ती\" लाल आहे.", "समुद्रावर एक लाल होडी आहे.", "3.750"),
    ("hi", "एक लड\u093cकी अपने बाल सँवार रही है।", "एक लड\u093cकी अपने बालों में कंघी कर रही है।",
     "2.500"),
    ("hi", "एक आदमी गिटार बजा रहा है।", "एक आदमी बाँसुरी बजा रहा है।", "1.250"),
    ("hi", "बच्चे पार्क में खेल रहे हैं, और \"ख़ुश\" हैं।", "बच्चे बाहर खेल रहे हैं।", "5.000"),
]
INDIC_HEADER = "genre\tfile\tyear\tid\tscore\tsentence1\tsentence2"


@pytest.mark.parametrize("lang", ["mr", "hi"])
@pytest.mark.parametrize("header", [True, False])
def test_devanagari_pairs_round_trip(tmp_path: Path, lang, header):
    pairs = [p for p in INDIC_PAIRS if p[0] == lang]
    lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{sc}\t{s1}\t{s2}"
             for i, (_, s1, s2, sc) in enumerate(pairs)]
    path = tmp_path / f"sts-test-{lang}.tsv"
    path.write_text("\n".join(([INDIC_HEADER] if header else []) + lines) + "\n",
                    encoding="utf-8")
    if header:
        cfg = SplitConfig(location=str(path), label="score")
    else:
        cfg = SplitConfig(location=str(path), header=False, sentence1="5", sentence2="6",
                          label="4")
    ds = load_split(cfg, "sts", "dataset.sts_test")
    assert ds["sentence1"] == [p[1] for p in pairs]
    assert ds["sentence2"] == [p[2] for p in pairs]
    assert ds["score"] == [float(p[3]) / 5 for p in pairs]
    text = "".join(ds["sentence1"])
    marker = "\u200d" if lang == "mr" else "\u0921\u093c"
    assert marker in text


def test_devanagari_jsonl_with_escaped_and_raw_unicode(tmp_path: Path):
    pairs = [(s1, s2) for _, s1, s2, _ in INDIC_PAIRS]
    path = tmp_path / "indic.jsonl"
    lines = [json.dumps({"sentence1": s1, "sentence2": s2, "label": "neutral"},
                        ensure_ascii=i % 2 == 0) for i, (s1, s2) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert "\\u0915" in path.read_text()  # some lines really use \u escapes
    ds = load_split(SplitConfig(location=str(path), label_map=NLI_MAP), "nli",
                    "dataset.nli_test")
    assert list(zip(ds["sentence1"], ds["sentence2"], strict=True)) == pairs
    assert ds["label"] == [1] * len(pairs)


# ------------------------------------------------------------------ labels and skipping


def _write_jsonl(path: Path, records: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records), encoding="utf-8")
    return path


def test_skip_labels_drop_rows(tmp_path: Path):
    labels = ["entailment", "-", "neutral", "-", "contradiction", "-"]
    path = _write_jsonl(tmp_path / "nli.jsonl", [
        {"sentence1": f"premise {i}", "sentence2": f"hypothesis {i}", "gold_label": lab}
        for i, lab in enumerate(labels)])
    cfg = SplitConfig(location=str(path), label="gold_label", label_map=NLI_MAP,
                      skip_labels=["-"])
    ds = load_split(cfg, "nli", "dataset.nli_train")
    assert rows(ds) == [("premise 0", "hypothesis 0", 0), ("premise 2", "hypothesis 2", 1),
                        ("premise 4", "hypothesis 4", 2)]
    # Without skip_labels the same file stops at the first "-", on line 2.
    cfg.skip_labels = []
    with pytest.raises(DataError, match=pattern(f"{path} line 2: label '-'", "label_map")):
        load_split(cfg, "nli", "dataset.nli_train")


def test_skip_labels_for_sts_scores(tmp_path: Path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,score\na,b,NA\nc,d,4\n", encoding="utf-8")
    cfg = SplitConfig(location=str(path), label="score", skip_labels=["NA"])
    assert load_split(cfg, "sts", "dataset.sts_train").to_dict() == {
        "sentence1": ["c"], "sentence2": ["d"], "score": [0.8]}


def test_unknown_nli_label(tmp_path: Path):
    path = _write_jsonl(tmp_path / "nli.jsonl", [
        {"sentence1": "a", "sentence2": "b", "label": "entailment"},
        "",
        {"sentence1": "c", "sentence2": "d", "label": "maybe"},
    ])
    cfg = SplitConfig(location=str(path), label_map=NLI_MAP)
    with pytest.raises(DataError, match=pattern(
            f"{path} line 3: label 'maybe' is not one of entailment, neutral, contradiction",
            "extend the split's label_map")):
        load_split(cfg, "nli", "dataset.nli_train")


def test_nli_index_outside_num_labels(tmp_path: Path):
    path = tmp_path / "nli.csv"
    path.write_text("sentence1,sentence2,label\na,b,0\nc,d,3\n", encoding="utf-8")
    cfg = SplitConfig(location=str(path))
    with pytest.raises(DataError, match=pattern(f"{path} line 3: label 3 is outside 0..2",
                                                "dataset.num_labels")):
        load_split(cfg, "nli", "dataset.nli_train")
    assert load_split(cfg, "nli", "dataset.nli_train", num_labels=4)["label"] == [0, 3]


def test_nli_text_label_without_label_map(tmp_path: Path):
    path = tmp_path / "nli.csv"
    path.write_text("sentence1,sentence2,label\na,b,neutral\n", encoding="utf-8")
    with pytest.raises(DataError, match=pattern(f"{path} line 2: label 'neutral' is not a "
                                                "class index", "set the split's label_map")):
        load_split(SplitConfig(location=str(path)), "nli", "dataset.nli_train")


def test_non_numeric_score(tmp_path: Path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,score\na,b,1.5\nc,d,high\n", encoding="utf-8")
    with pytest.raises(DataError, match=pattern(f"{path} line 3: score 'high' is not a number",
                                                "label column")):
        load_split(SplitConfig(location=str(path), label="score"), "sts", "dataset.sts_test")


def test_score_above_score_max(tmp_path: Path):
    path = tmp_path / "sts.tsv"
    path.write_text("g\tf\ty\t1\t4.0\ta\tb\ng\tf\ty\t2\t7\tc\td\n", encoding="utf-8")
    cfg = SplitConfig(location=str(path), header=False, sentence1="5", sentence2="6",
                      label="4")
    with pytest.raises(DataError, match=pattern(f"{path} line 2: score 7 lies outside 0..5",
                                                "set the split's score_max")):
        load_split(cfg, "sts", "dataset.sts_test")
    cfg.score_max = 10.0
    assert load_split(cfg, "sts", "dataset.sts_test")["score"] == [0.4, 0.7]


# ------------------------------------------------------------------ malformed files


def test_missing_column_names_the_key_to_set(tmp_path: Path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,similarity\na,b,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=pattern(
            f"{path} line 2 has no column 'label' (has: sentence1, sentence2, similarity)",
            "set dataset.sts_test.label to the right column")):
        load_split(SplitConfig(location=str(path)), "sts", "dataset.sts_test")


def test_missing_index_column_in_short_headerless_row(tmp_path: Path):
    path = tmp_path / "sts.tsv"
    path.write_text("g\tf\ty\t1\t4.0\ta\tb\ng\tf\ty\t2\t3.0\tc\n", encoding="utf-8")
    cfg = SplitConfig(location=str(path), header=False, sentence1="5", sentence2="6",
                      label="4")
    with pytest.raises(DataError, match=pattern(
            f"{path} line 2 has no column '6' (has: 0, 1, 2, 3, 4, 5)",
            "set dataset.sts_train.sentence2")):
        load_split(cfg, "sts", "dataset.sts_train")


def test_empty_sentence(tmp_path: Path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,label\na,b,1\nc,  ,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=pattern(f"{path} line 3: sentence2 is empty",
                                                "dataset.sts_test.sentence2")):
        load_split(SplitConfig(location=str(path)), "sts", "dataset.sts_test")


def test_malformed_json_line(tmp_path: Path):
    path = _write_jsonl(tmp_path / "nli.jsonl", [
        {"sentence1": "a", "sentence2": "b", "label": 0}, '{"sentence1": "c",'])
    with pytest.raises(DataError, match=pattern(f"{path} line 2 is not valid JSON",
                                                "fix the file")):
        load_split(SplitConfig(location=str(path)), "nli", "dataset.nli_train")


def test_json_line_that_is_not_an_object(tmp_path: Path):
    path = _write_jsonl(tmp_path / "nli.jsonl", ['["a", "b", 0]'])
    with pytest.raises(DataError, match=pattern(f"{path} line 1 is not a JSON object")):
        load_split(SplitConfig(location=str(path)), "nli", "dataset.nli_train")


def test_nonexistent_file(tmp_path: Path):
    path = tmp_path / "no" / "such.tsv"
    with pytest.raises(DataError, match=pattern(
            f"dataset.sts_test.location: file {path} does not exist: fix the path")):
        load_split(SplitConfig(location=str(path)), "sts", "dataset.sts_test")


def test_unknown_suffix_without_format(tmp_path: Path):
    path = tmp_path / "pairs.txt"
    path.write_text("sentence1\tsentence2\tlabel\na\tb\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=pattern(
            "dataset.sts_test: cannot tell the format of pairs.txt from its suffix",
            "set dataset.sts_test.format to one of csv, tsv, jsonl, parquet")):
        load_split(SplitConfig(location=str(path)), "sts", "dataset.sts_test")
    cfg = SplitConfig(location=str(path), format=FileFormat.tsv)
    assert load_split(cfg, "sts", "dataset.sts_test")["score"] == [0.2]


def test_unreadable_parquet(tmp_path: Path):
    path = tmp_path / "pairs.parquet"
    path.write_text("sentence1,sentence2,label\n", encoding="utf-8")
    with pytest.raises(DataError, match=pattern(f"{path} is not a readable parquet file")):
        load_split(SplitConfig(location=str(path)), "sts", "dataset.sts_test")


@pytest.mark.parametrize(("name", "content", "skip"), [
    ("empty.csv", "", []),
    ("blank.jsonl", "\n\n", []),
    ("header-only.tsv", "sentence1\tsentence2\tlabel\n", []),
    ("all-skipped.csv", "sentence1,sentence2,label\na,b,-\nc,d,-\n", ["-"]),
])
def test_file_without_usable_pairs(tmp_path: Path, name, content, skip):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=pattern(f"{path} holds no usable pairs for "
                                                "dataset.sts_test")):
        load_split(SplitConfig(location=str(path), skip_labels=skip), "sts", "dataset.sts_test")


# ------------------------------------------------------------------ encodings and scales


def test_csv_with_byte_order_mark(tmp_path: Path):
    path = tmp_path / "excel.csv"
    path.write_bytes("sentence1,sentence2,label\nA dog.,A cat.,2.5\n".encode("utf-8-sig"))
    ds = load_split(SplitConfig(location=str(path)), "sts", "dataset.sts_test")
    assert ds.to_dict() == {"sentence1": ["A dog."], "sentence2": ["A cat."], "score": [0.5]}


def test_file_that_is_not_utf8(tmp_path: Path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("sentence1\tsentence2\tlabel\ncafé\tthé\t1\n".encode("latin-1"))
    with pytest.raises(DataError, match=pattern(str(path), "UTF-8")):
        load_split(SplitConfig(location=str(path)), "sts", "dataset.sts_test")


def test_zero_score_max(tmp_path: Path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,label\na,b,1\n", encoding="utf-8")
    with pytest.raises(UserError, match="score_max"):
        load_split(SplitConfig(location=str(path), score_max=0.0), "sts", "dataset.sts_test")


# ------------------------------------------------------------------ subsample


@pytest.fixture
def hundred() -> Dataset:
    return Dataset.from_dict({"sentence1": [f"s{i}" for i in range(100)],
                              "sentence2": [f"t{i}" for i in range(100)],
                              "label": [i % 3 for i in range(100)]})


def test_subsample_is_seeded(hundred: Dataset):
    first = subsample(hundred, 10, seed=42)
    again = subsample(hundred, 10, seed=42)
    assert len(first) == 10
    assert first.to_dict() == again.to_dict()
    assert len(set(first["sentence1"])) == 10
    assert set(rows(first)) <= set(rows(hundred))
    assert first["sentence1"] != hundred["sentence1"][:10]  # a random pick, not the head
    assert subsample(hundred, 10, seed=7)["sentence1"] != first["sentence1"]


@pytest.mark.parametrize("max_pairs", [None, 100, 101, 10_000])
def test_subsample_keeps_everything(hundred: Dataset, max_pairs):
    out = subsample(hundred, max_pairs, seed=42)
    assert len(out) == 100
    assert out.to_dict() == hundred.to_dict()  # all of it, in file order


# ------------------------------------------------------------------ the Hub, offline


def test_hub_dataset_offline_fails_fast(monkeypatch: pytest.MonkeyPatch):
    """Offline, a Hub split fails at once with the fix: no lookup, no connection, no retry."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tried: list[object] = []

    def no_network(*args: object, **kwargs: object) -> None:
        tried.append(args)
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    cfg = SplitConfig(source=Source.hub, location="no-such-user/no-such-dataset")
    with pytest.raises(DataError, match=pattern(
            "dataset.sts_test: could not load Hub dataset 'no-such-user/no-such-dataset'",
            "save it to a file and set dataset.sts_test.source=local "
            "dataset.sts_test.location=FILE")):
        load_split(cfg, "sts", "dataset.sts_test")
    assert tried == []


def test_parquet_rows_are_counted_as_rows_and_nulls_named(tmp_path: Path):
    path = tmp_path / "sts.parquet"
    pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", None],
                  "label": [1.0, 2.0]}).to_parquet(path)
    with pytest.raises(DataError, match=pattern(f"{path} row 2: column 'sentence2' "
                                                "(sentence2) is empty")):
        load_split(SplitConfig(location=str(path)), "sts", "dataset.sts_test")


def test_a_file_is_parsed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    from sbert_exp.config.schema import SplitConfig
    from sbert_exp.data import readers as data

    path = tmp_path / "sts.tsv"
    path.write_text("sentence1\tsentence2\tscore\na\tb\t5\nc\td\t0\n")
    split = SplitConfig(location=str(path), label="score")
    parsed = []
    real = data._parse_split
    monkeypatch.setattr(data, "_parse_split", lambda *a: parsed.append(1) or real(*a))
    first = data.load_split(split, "sts", "dataset.sts_test")
    assert data.load_split(split, "sts", "dataset.sts_train") is first
    assert len(parsed) == 1
    other = SplitConfig(location=str(path), label="score", score_max=10.0)
    assert data.load_split(other, "sts", "dataset.sts_test")["score"] == [0.5, 0.0]
    path.write_text("sentence1\tsentence2\tscore\na\tb\t4\n")
    assert data.load_split(split, "sts", "dataset.sts_test")["score"] == [0.8]
    assert len(parsed) == 3
