"""Sentence-pair splits (NLI and STS) from embedded assets, local files or the Hub, and plain
sentence lists (one a line) with their seeded samples."""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Collection, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset

from sbert_exp.config.schema import FileFormat, Source, SplitConfig
from sbert_exp.data import assets
from sbert_exp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Kind = Literal["nli", "sts"]
SUFFIX_FORMATS = {
    ".csv": FileFormat.csv,
    ".tsv": FileFormat.tsv,
    ".jsonl": FileFormat.jsonl,
    ".json": FileFormat.jsonl,
    ".parquet": FileFormat.parquet,
}

# A row as read: its line number (or row number) for messages, and its fields.
Row = tuple[int, dict[str, Any]]


def _read_delimited(path: Path, delimiter: str, header: bool) -> Iterator[Row]:
    """Rows of a csv/tsv file; tsv is split on tabs only, with no quoting (STSb has bare quotes)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        if delimiter == "\t":
            lines = (line.rstrip("\r\n").split("\t") for line in f)
        else:
            lines = csv.reader(f)
        names: list[str] | None = None
        for lineno, fields in enumerate(lines, start=1):
            if not fields or fields == [""]:
                continue
            if header and names is None:
                names = [n.strip() for n in fields]
                continue
            if names is None:
                yield lineno, {str(i): v for i, v in enumerate(fields)}
            else:
                yield lineno, dict(zip(names, fields, strict=False))


def _read_jsonl(path: Path) -> Iterator[Row]:
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno} is not valid JSON ({e.msg}): "
                                "fix the file or set the split's format") from None
            if not isinstance(record, dict):
                raise DataError(f"{path} line {lineno} is not a JSON object: "
                                "each line must hold one pair as an object")
            yield lineno, record


def _read_parquet(path: Path) -> Iterator[Row]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several unrelated types
        raise DataError(f"{path} is not a readable parquet file ({type(e).__name__}): "
                        "fix the file or set the split's format") from None
    frame = frame.astype(object).where(frame.notna(), None)  # missing values are None, not NaN
    for i, record in enumerate(frame.to_dict(orient="records"), start=1):
        yield i, {str(k): v for k, v in record.items()}


def _file_rows(path: Path, split: SplitConfig, where: str) -> tuple[Iterator[Row], FileFormat]:
    if not path.is_file():
        raise DataError(f"{where}.location: file {path} does not exist: fix the path")
    fmt = split.format or SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{where}: cannot tell the format of {path.name} from its suffix: "
                        f"set {where}.format to one of {', '.join(f.value for f in FileFormat)}")
    fmt = FileFormat(fmt)
    if fmt is FileFormat.tsv:
        return _read_delimited(path, "\t", split.header), fmt
    if fmt is FileFormat.csv:
        return _read_delimited(path, ",", split.header), fmt
    if fmt is FileFormat.jsonl:
        return _read_jsonl(path), fmt
    return _read_parquet(path), fmt


def _hub_rows(split: SplitConfig, where: str) -> Iterator[Row]:
    import datasets

    try:
        ds = datasets.load_dataset(split.location, split.hub_name, split=split.hub_split or "train")
    except Exception as e:  # offline, unknown name, missing split: all end the same way
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DataError(f"{where}: could not load Hub dataset '{split.location}' ({reason}): "
                        f"go online once, or save it to a file and set {where}.source=local "
                        f"{where}.location=FILE") from None
    for i, record in enumerate(ds, start=1):
        yield i, {str(k): v for k, v in record.items()}


def resolve_path(split: SplitConfig, where: str) -> Path:
    """The file a local or embedded split reads."""
    if split.source is Source.embedded:
        name, _, part = split.location.partition("/")
        return assets.split_file(name, part)
    return Path(split.location).expanduser()


def _label(value: Any, split: SplitConfig, kind: Kind, num_labels: int, at: str) -> float | None:
    """The training label of one row, or None when the row is to be skipped."""
    text = str(value).strip()
    if text in split.skip_labels:
        return None
    if kind == "sts":
        try:
            score = float(text) / split.score_max
        except ValueError:
            raise DataError(f"{at}: score {text!r} is not a number: "
                            "check the split's label column") from None
        if not -1e-6 <= score <= 1 + 1e-6:
            raise DataError(f"{at}: score {text} lies outside 0..{split.score_max:g}: "
                            "set the split's score_max to the top of its scale")
        return min(max(score, 0.0), 1.0)
    if split.label_map is not None:
        if text not in split.label_map:
            raise DataError(f"{at}: label {text!r} is not one of "
                            f"{', '.join(split.label_map)}: extend the split's label_map "
                            "or add it to skip_labels")
        return split.label_map[text]
    try:
        label = int(text)
    except ValueError:
        raise DataError(f"{at}: label {text!r} is not a class index: "
                        "set the split's label_map") from None
    if not 0 <= label < num_labels:
        raise DataError(f"{at}: label {label} is outside 0..{num_labels - 1}: "
                        "add it to the split's skip_labels or fix dataset.num_labels")
    return label


# Parsed files, so that the jobs of a sweep that run in one process (Hydra's basic launcher)
# read and check each file once: (settings, path, size, mtime) -> Dataset (immutable).
_PARSED: dict[tuple, Dataset] = {}
_PARSED_MAX = 16


def load_split(split: SplitConfig, kind: Kind, where: str, num_labels: int = 3) -> Dataset:
    """Read one split into a Dataset with columns sentence1, sentence2 and label (or score).

    NLI labels become class indices; STS scores are scaled to 0..1. Any malformed row
    raises DataError naming the file, the line and the setting that fixes it. A file already
    read in this process with the same settings, unchanged since, is not read again.
    """
    if split.source is Source.hub:
        return _parse_split(split, kind, where, num_labels, None)
    path = resolve_path(split, where)
    try:
        stat = path.stat()
    except OSError:
        return _parse_split(split, kind, where, num_labels, path)  # reports the missing file
    key = (json.dumps(asdict(split), sort_keys=True, default=str), kind, num_labels,
           str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _PARSED:
        log.info("%s: %d pairs from %s (read earlier in this process)", where,
                 len(_PARSED[key]), path)
        return _PARSED[key]
    dataset = _parse_split(split, kind, where, num_labels, path)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[key] = dataset
    return dataset


def _parse_split(split: SplitConfig, kind: Kind, where: str, num_labels: int,
                 path: Path | None) -> Dataset:
    """Read the Hub split (path None) or the file at `path` (from `resolve_path`)."""
    if path is None:
        origin, unit = f"Hub dataset {split.location}", "row"
        rows = _hub_rows(split, where)
    else:
        rows, fmt = _file_rows(path, split, where)
        origin = str(path)
        unit = "row" if fmt is FileFormat.parquet else "line"  # text files count lines
    if kind == "sts" and split.score_max <= 0:
        raise DataError(f"{where}.score_max={split.score_max:g} must be positive: "
                        "set it to the top of the split's score scale")
    columns = {"sentence1": split.sentence1, "sentence2": split.sentence2, "label": split.label}
    out: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "label": []}
    skipped = 0
    try:
        for lineno, record in rows:
            at = f"{origin} {unit} {lineno}"
            values = {}
            for role, column in columns.items():
                if column not in record:
                    have = ", ".join(record) if len(record) <= 12 else f"{len(record)} columns"
                    raise DataError(f"{at} has no column {column!r} (has: {have}): "
                                    f"set {where}.{role} to the right column")
                if record[column] is None:
                    raise DataError(f"{at}: column {column!r} ({role}) is empty: "
                                    "fill it or drop the row")
                values[role] = record[column]
            label = _label(values["label"], split, kind, num_labels, at)
            if label is None:
                skipped += 1
                continue
            for role in ("sentence1", "sentence2"):
                text = str(values[role]).strip()
                if not text:
                    raise DataError(f"{at}: {role} is empty: "
                                    f"fix the row or the {where}.{role} column")
                out[role].append(text)
            out["label"].append(label)
    except UnicodeDecodeError as e:
        raise DataError(f"{origin} is not UTF-8 text (byte {e.start} of a line cannot be "
                        "decoded): re-save it as UTF-8") from None
    if not out["label"]:
        raise DataError(f"{origin} holds no usable pairs for {where}: check the file and columns")
    log.info("%s: %d pairs from %s (%d skipped)", where, len(out["label"]), origin, skipped)
    target = "label" if kind == "nli" else "score"
    return Dataset.from_dict({"sentence1": out["sentence1"], "sentence2": out["sentence2"],
                              target: out["label"]})


def subsample(ds: Dataset, max_pairs: int | None, seed: int) -> Dataset:
    """A seeded random subset of at most `max_pairs` pairs (all of them when null)."""
    if max_pairs is None or max_pairs >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(max_pairs))


def read_lines(path: Path, where: str) -> list[str]:
    """The lines of a UTF-8 text file (ends stripped, blank lines skipped); `where` names the
    setting in the errors."""
    if not path.is_file():
        raise DataError(f"{where}: file {path} does not exist: fix the path")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: {path} is not UTF-8 text (byte {e.start} cannot be "
                        "decoded): re-save it as UTF-8") from None
    return [s for s in (line.strip() for line in text.split("\n")) if s]


def read_sentences(path: Path, where: str) -> list[str]:
    """The sentences of a UTF-8 text file, one a line (ends stripped, blank lines skipped)."""
    sentences = read_lines(path, where)
    if not sentences:
        raise DataError(f"{where}: {path} holds no sentences: write one sentence per line")
    return sentences


def sample_sentences(sentences: Iterable[str], max_sentences: int | None, seed: int,
                     exclude: Collection[str], setting: str, held_by: str) -> list[str]:
    """A seeded sample of `max_sentences` distinct `sentences` that are not in `exclude` (the STS
    test sentences, or nothing; all of them, in order, when null). Errors name the budget
    `setting` and where the sentences come from, with its verb (`held_by`: "the training splits
    hold", "dataset.sts_train has")."""
    distinct = [s for s in dict.fromkeys(sentences) if s not in exclude]
    if not distinct:
        raise DataError(f"{held_by} no sentences outside the STS test split: "
                        "give the stage other sentences")
    if max_sentences is None:
        return distinct
    if max_sentences > len(distinct):
        left_out = " (STS test sentences left out)" if exclude else ""
        raise ConfigError(f"{setting}={max_sentences} but {held_by} {len(distinct)} distinct "
                          f"sentences{left_out}: set it to at most {len(distinct)}")
    return random.Random(seed).sample(distinct, max_sentences)
