"""Shared fixtures: offline settings, a tiny BERT built in a temp dir, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

# Offline and quiet before anything imports transformers or datasets.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///should-not-be-used.db")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY_LAYERS = 12
SMALL_STS_TEST, SMALL_STS_PAIRS = "sts-test-small.tsv", 200  # beside the tiny BERT
# Words of the STSb/SNLI sentences the tests use, so the tiny tokenizer sees real tokens.
WORDS = (
    "a the an is are was were of in on at to and with for by man woman men women girl boy "
    "child children dog cat playing plays play riding rides ride guitar piano flute horse bike "
    "car street water beach field ball sitting standing walking running eating cooking "
    "hair brushing styling dancing singing talking people person two three group young old "
    "black white red blue green small large big his her their it this that there outside "
    "inside not no . , ' ! ? - plane taking off air hat hard wearing cutting onion slicing"
).split()


@pytest.fixture(autouse=True)
def _teacher_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Teacher embeddings and reference models of the tests' models go to the session's temp
    dir, not the user's cache (every job encodes the STS test reference through it)."""
    from sbert_exp import references
    from sbert_exp.training import teacher

    root = tmp_path_factory.getbasetemp()
    monkeypatch.setattr(teacher, "STORES", teacher.STORES.moved(root))
    monkeypatch.setattr(references, "REFERENCES", references.REFERENCES.moved(root))


@pytest.fixture(scope="session")
def _store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store, created and migrated once per session the way a job does."""
    from sbert_exp.tracking import runs as tracking

    path = tmp_path_factory.mktemp("store_template") / "mlflow.db"
    tracking.create_sqlite_store(f"sqlite:///{path}")
    return path


@pytest.fixture(autouse=True)
def _new_stores_from_a_template(request: pytest.FixtureRequest, _store_template: Path,
                                monkeypatch) -> None:
    """A new SQLite store in a test starts as a copy of the session's template: MLflow's
    migrations take seconds a store, and most tests make one. Tests marked
    `real_store_creation` create theirs as a job does; so do subprocesses."""
    if request.node.get_closest_marker("real_store_creation"):
        return
    import shutil

    from sbert_exp.tracking import runs as tracking

    create = tracking.create_sqlite_store

    def copy_template(uri: str) -> None:
        path = tracking.sqlite_path(uri)
        if path is None or path.exists():
            return create(uri)
        shutil.copyfile(_store_template, path)

    monkeypatch.setattr(tracking, "create_sqlite_store", copy_template)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 12-layer BERT (hidden 32) with a WordPiece vocab, saved to disk."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = list(dict.fromkeys(specials + WORDS + letters + [f"##{c}" for c in letters]))
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=TINY_LAYERS,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    # The tiny jobs score on the first STSb test pairs: every one of them evaluates several
    # times, and the whole split (2,552 sentences) would cost them about a second each time.
    from sbert_exp.data import assets

    lines = assets.split_file("stsb", "test").read_text(encoding="utf-8").splitlines()
    (out / SMALL_STS_TEST).write_text("\n".join(lines[:SMALL_STS_PAIRS]) + "\n", encoding="utf-8")
    return out


def tiny_overrides(tiny_bert: Path, tmp_path: Path, phase: str = "nli_sts") -> list[str]:
    """Overrides that point a job at the tiny BERT, small budgets and a temp MLflow store."""
    budgets = {"nli": ["phase.nli.max_pairs=48", "phase.nli.batch_size=16"],
               "sts": ["phase.sts.max_pairs=32", "phase.sts.batch_size=16"]}
    return [
        f"phase={phase}",
        *[o for stage, opts in budgets.items() if stage in phase for o in opts],
        "base_model.name=tiny_bert",
        "base_model.source=local",
        f"base_model.location={tiny_bert}",
        f"base_model.num_layers={TINY_LAYERS}",
        "base_model.prefix=",
        "base_model.languages=[]",  # the default base's language sets are not the tiny model's
        "eval.nli_test_max_pairs=64",
        "dataset.sts_test.source=local",
        f"dataset.sts_test.location={tiny_bert / SMALL_STS_TEST}",
        "eval.speed_sentences=32",
        "eval.speed_rounds=1",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment=tests",
        "precision=fp32",  # the same arithmetic on every machine; bf16 is tested on its own
    ]


def compose(overrides: list[str]):
    """The typed TrainConfig that `python -m sbert_exp.train OVERRIDES` would run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import sbert_exp.train  # noqa: F401  (registers the schema)
    from sbert_exp.config.schema import to_train_config

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides)
    return to_train_config(cfg), cfg


def run_tiny_job(overrides: list[str], out: Path) -> dict[str, float]:
    """One job, in this process, as `python -m sbert_exp.train OVERRIDES` runs it, into `out`."""
    from omegaconf import OmegaConf

    from sbert_exp.job.run import run_job
    from sbert_exp.tracking.runs import flatten

    cfg, dict_cfg = compose(overrides)
    out.mkdir(parents=True, exist_ok=True)
    return run_job(cfg, out, flatten(OmegaConf.to_container(dict_cfg, resolve=True)))


def mlflow_runs(tmp_path: Path, newest_first: bool = False) -> tuple:
    """(client, runs) of the tests' MLflow experiment in tmp_path/mlflow.db, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tests")
    order = "DESC" if newest_first else "ASC"
    return client, client.search_runs([exp.experiment_id],
                                      order_by=[f"attributes.start_time {order}"])
