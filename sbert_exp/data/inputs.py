"""What a job reads: its data splits, sentence samples, the vocabulary corpus, batch sizes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from sbert_exp.config.schema import (
    DatasetConfig,
    TrainConfig,
    VocabKind,
)
from sbert_exp.data import languages
from sbert_exp.data.readers import (
    load_split,
    read_sentences,
    sample_sentences,
    subsample,
)
from sbert_exp.errors import ConfigError
from sbert_exp.pruning.strategies import SCORED, Evidence, evidence

EVAL_BATCH = {"cpu": 64, "cuda": 256}  # eval.batch_size=null: sentences per encode batch


def eval_batch_size(configured: int | None, device: str) -> int:
    """The configured batch, else one that suits the device (a GPU takes far larger ones)."""
    if configured is not None:
        return configured
    return EVAL_BATCH["cuda" if device.startswith("cuda") else "cpu"]


@dataclass
class JobData:
    sts_test: Dataset
    nli_train: Dataset | None
    nli_test: Dataset | None
    sts_train: Dataset | None
    calibration: list[str] | None = None  # scored strategies: sentences the layers are scored on
    sts_dev: Dataset | None = None  # greedy_dev: the STS dev pairs it scores removals on
    distill: list[str] | None = None  # the distillation stage's sentences
    vocab_corpus: list[str] | None = None  # vocab=corpus: the texts whose tokens are kept
    # The language sets it evaluates, and how many sentences of them each training text held
    # (left out: `languages.exclude`).
    languages: list[languages.Loaded] = dataclasses.field(default_factory=list)
    held_out_removed: dict[str, int] = dataclasses.field(default_factory=dict)
    # The distillation sentences' mix: source ("training", "file" or a text source) -> count.
    distill_mix: dict[str, int] = dataclasses.field(default_factory=dict)


def load_data(cfg: TrainConfig) -> JobData:
    """Read and check every split the job needs, before any model loads."""
    d, phase, seed = cfg.dataset, cfg.phase, cfg.seed
    nli_train = nli_test = sts_train = None
    if phase.nli is not None:
        nli_train = subsample(load_split(d.nli_train, "nli", "dataset.nli_train", d.num_labels),
                              phase.nli.max_pairs, seed)
        if d.nli_test is not None:
            nli_test = subsample(load_split(d.nli_test, "nli", "dataset.nli_test", d.num_labels),
                                 cfg.eval.nli_test_max_pairs, seed)
    if phase.sts is not None:
        sts_train = subsample(load_split(d.sts_train, "sts", "dataset.sts_train"),
                              phase.sts.max_pairs, seed)
    sts_test = load_split(d.sts_test, "sts", "dataset.sts_test")
    data = JobData(sts_test=sts_test, nli_train=nli_train, nli_test=nli_test,
                   sts_train=sts_train)
    data.languages = languages.load(languages.job_sets(cfg), cfg.eval.language_files)
    held = languages.held_out(data.languages)
    if phase.distill is not None:
        data.distill = _distill_sentences(cfg, sts_test, held, data)
    if cfg.vocab.name is VocabKind.corpus:
        data.vocab_corpus = vocab_corpus(cfg, held, data.held_out_removed)
    p = cfg.pruning
    scored = p.layers is None and p.keep is not None and p.strategy in SCORED
    if scored and p.keep < cfg.base_model.num_layers:
        c = p.calibration
        if evidence(p.strategy) is Evidence.sts_dev:
            dev = load_split(d.sts_dev, "sts", "dataset.sts_dev")
            if c.dev_pairs > len(dev):
                raise ConfigError(f"pruning.calibration.dev_pairs={c.dev_pairs} but "
                                  f"dataset.sts_dev has {len(dev)} pairs: set it to at most "
                                  f"{len(dev)}")
            data.sts_dev = subsample(dev, c.dev_pairs, seed)
        else:
            name = c.split.value
            pairs = load_split(getattr(d, name), "nli" if name.startswith("nli") else "sts",
                               f"dataset.{name}", d.num_labels)
            data.calibration = sample_sentences(
                [*pairs["sentence1"], *pairs["sentence2"]], c.max_sentences, seed, (),
                "pruning.calibration.max_sentences", f"dataset.{name} has")
    return data


def _training_sentences(d: DatasetConfig) -> list[str]:
    """Both sentences of every pair of the training splits (nli_train, sts_train), in order."""
    sentences: list[str] = []
    for name, kind in (("nli_train", "nli"), ("sts_train", "sts")):
        split = getattr(d, name)
        if split is not None:
            pairs = load_split(split, kind, f"dataset.{name}", d.num_labels)
            sentences += [*pairs["sentence1"], *pairs["sentence2"]]
    return sentences


def distinct_sentences(pairs: Dataset) -> list[str]:
    """The distinct sentences of a split of pairs, in order of first appearance."""
    return list(dict.fromkeys([*pairs["sentence1"], *pairs["sentence2"]]))


def _distill_sentences(cfg: TrainConfig, sts_test: Dataset, held: set[str],
                       data: JobData) -> list[str]:
    """A seeded sample of the distinct sentences of `phase.distill.sentences_file`, else of the
    training splits (nli_train, sts_train: never a test split), then of each text source of
    `phase.distill.text`; sentences that are also STS test sentences or sentences of an evaluated
    language set (`held`) are left out, so the student never learns targets of what it is scored
    on. `data` gets how many distinct sentences the language sets held, and the mix."""
    stage, d = cfg.phase.distill, cfg.dataset
    if stage.sentences_file is not None:
        path = Path(stage.sentences_file).expanduser()
        sentences = read_sentences(path, "phase.distill.sentences_file")
        held_by = f"{path} holds"
    else:
        sentences = _training_sentences(d)
        held_by = "the training splits hold"
    test = {*sts_test["sentence1"], *sts_test["sentence2"]}
    origin = "file" if stage.sentences_file is not None else "training"
    sources = [(origin, sentences, stage.max_sentences, "phase.distill.max_sentences", held_by)
               ] if sentences or not stage.files else []  # files alone: no training splits
    sources += [(name, languages.read_text(name), count, f"phase.distill.text.{name}",
                 f"text source '{name}' holds") for name, count in stage.text.items()
                if count != 0]  # 0: a preset's source left out (~key cannot delete it in a sweep)
    for i, file in enumerate(stage.files):
        path = Path(file).expanduser()
        sources.append((f"files.{i}", read_sentences(path, f"phase.distill.files[{i}]"), None,
                        f"phase.distill.files[{i}]", f"{path} holds"))
    chosen: dict[str, None] = {}
    data.held_out_removed["distill"] = 0
    for name, texts, count, setting, source in sources:
        texts, held_count = languages.exclude(texts, held)
        data.held_out_removed["distill"] += held_count
        sample = [t for t in sample_sentences(texts, count, cfg.seed, test, setting, source)
                  if t not in chosen]  # a sentence two sources share counts once, for the first
        data.distill_mix[name] = len(sample)
        chosen.update(dict.fromkeys(sample))
    return list(chosen)


def vocab_corpus(cfg: TrainConfig, held: set[str], removed: dict[str, int]) -> list[str]:
    """The distinct texts of the vocabulary corpus, with the model's prefix (the tokens of
    what the model will tokenize): every sentence of the training splits, of the distillation
    sentences file, of `vocab.files` and of the text sources of `vocab.text`. Test splits and
    the sentences of evaluated language sets (`held`; `removed` gets their count) never are."""
    v, d = cfg.vocab, cfg.dataset
    texts: list[str] = []
    if v.training_splits:
        texts += _training_sentences(d)
        distill = cfg.phase.distill
        if distill is not None and distill.sentences_file is not None:
            texts += read_sentences(Path(distill.sentences_file).expanduser(),
                                    "phase.distill.sentences_file")
        for i, file in enumerate(distill.files if distill is not None else []):
            texts += read_sentences(Path(file).expanduser(), f"phase.distill.files[{i}]")
    for i, file in enumerate(v.files):
        texts += read_sentences(Path(file).expanduser(), f"vocab.files[{i}]")
    for name in v.text:
        texts += languages.read_text(name)
    texts, removed["vocab"] = languages.exclude(texts, held)
    prefix = cfg.base_model.prefix
    return [prefix + t for t in texts]
