"""Our metrics against sentence-transformers' own; the prefix saved with the model as a prompt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from conftest import compose, tiny_overrides
from sbert_exp import evaluation
from sbert_exp.config.schema import BaseModelConfig, Pooling, Source, StsLoss, StsStageConfig
from sbert_exp.data.inputs import load_data
from sbert_exp.data.readers import load_split
from sbert_exp.job.run import run_job
from sbert_exp.model import modeling
from sbert_exp.tracking.runs import flatten
from sbert_exp.training import stages as training

PREFIX = "query: "
SENTENCES = ["a man is playing a guitar .", "two dogs are running on the beach .", "a girl",
             "a woman is slicing an onion .", "the cat is sitting outside", "a boy rides a horse ."]
BATCH = 16
# The tiny random BERT's cosines on STSb crowd within a few hundredths of 1, with ties, so the 2e-7
# that padding to another batch's length adds to an embedding moves Spearman by up to 3e-4. One
# sentence per batch pads nothing: both sides then embed each sentence bit for bit alike.
UNPADDED = 1


def _base(path: Path, prefix: str = "") -> BaseModelConfig:
    return BaseModelConfig(name="tiny", source=Source.local, location=str(path), num_layers=12,
                           pooling=Pooling.mean, max_seq_length=64, prefix=prefix)


def _load(path: Path, prefix: str = ""):
    return modeling.load_base(_base(path, prefix), "cpu", str(path))


@pytest.fixture(autouse=True)
def one_thread():
    """Batches of one sentence through a hidden-32 model are too small to share among threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sts_test() -> Dataset:
    """The embedded STSb test split, the one every job is scored on."""
    cfg, _ = compose(["phase=none"])
    return load_split(cfg.dataset.sts_test, "sts", "dataset.sts_test")


@pytest.fixture(scope="module")
def nli_test() -> Dataset:
    """The first 90 pairs of the embedded SNLI test split."""
    cfg, _ = compose(["phase=nli"])
    d = cfg.dataset
    return load_split(d.nli_test, "nli", "dataset.nli_test", d.num_labels).select(range(90))


def _library_sts(model, pairs: Dataset, batch_size: int) -> dict[str, float]:
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
    )

    evaluator = EmbeddingSimilarityEvaluator(
        pairs["sentence1"], pairs["sentence2"], pairs["score"], batch_size=batch_size,
        similarity_fn_names=["cosine"], write_csv=False)
    return evaluator(model)


# 1. The prefix as a prompt: the very embeddings of the prefixed text, saved with the model.

def test_prompt_gives_exactly_the_embeddings_of_the_prefixed_text(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer

    by_hand = _load(tiny_bert).encode([PREFIX + s for s in SENTENCES], convert_to_numpy=True)
    model = _load(tiny_bert, PREFIX)
    assert np.array_equal(model.encode(SENTENCES, convert_to_numpy=True), by_hand)

    model.save(str(tmp_path / "model"))
    reloaded = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert reloaded.default_prompt_name == "query"
    assert reloaded.prompts["query"] == reloaded.prompts["document"] == PREFIX
    for encode in (reloaded.encode, reloaded.encode_query, reloaded.encode_document):
        assert np.array_equal(encode(SENTENCES, convert_to_numpy=True), by_hand)


def test_empty_prefix_sets_no_prompt(tiny_bert):
    model = _load(tiny_bert)
    assert model.default_prompt_name is None
    assert not any(model.prompts.values())


def test_training_sees_the_prefix_once(tiny_bert):
    """The trainer ignores the default prompt; ours hands it over, so training equals by-hand."""
    pairs = Dataset.from_dict({"sentence1": SENTENCES * 2, "sentence2": SENTENCES[::-1] * 2,
                               "score": [i / 11 for i in range(12)]})
    stage = StsStageConfig(max_pairs=None, batch_size=4, lr=1e-3)
    prompted = _load(tiny_bert, PREFIX)
    training.train_sts(prompted, pairs, stage, seed=0)
    by_hand = _load(tiny_bert)
    prefixed = pairs.map(lambda row: {"sentence1": PREFIX + row["sentence1"],
                                      "sentence2": PREFIX + row["sentence2"]})
    training.train_sts(by_hand, prefixed, stage, seed=0)
    untouched = modeling.hf_model(_load(tiny_bert)).state_dict()
    trained = modeling.hf_model(by_hand).state_dict()
    assert any(not torch.equal(v, untouched[k]) for k, v in trained.items())
    for key, value in modeling.hf_model(prompted).state_dict().items():
        assert torch.equal(value, trained[key]), key


@pytest.mark.parametrize(("loss", "name"), [("cosine", "CosineSimilarityLoss"),
                                             ("cosent", "CoSENTLoss")])
def test_sts_stage_trains_with_the_configured_loss(loss, name, tiny_bert, monkeypatch):
    used = []
    monkeypatch.setattr(training, "_train", lambda model, fn, *a, **k: used.append(fn))
    stage = StsStageConfig(max_pairs=None, loss=StsLoss(loss))
    training.train_sts(_load(tiny_bert), Dataset.from_dict({}), stage, seed=0)
    assert [type(fn).__name__ for fn in used] == [name]


# 2. Our evaluators against the library's.

@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_sts_scores_are_the_library_evaluator_and_plain_cosine_spearman(tiny_bert, sts_test,
                                                                        prefix):
    from scipy.stats import pearsonr, spearmanr

    pairs = sts_test.select(range(300))
    model = _load(tiny_bert, prefix)
    ours = evaluation.sts_scores(model, pairs, BATCH)
    assert ours == _library_sts(model, pairs, BATCH)
    # ... and what the scores mean, computed by hand (one sentence a batch: no padding).
    u, v = (model.encode(pairs[c], batch_size=UNPADDED, convert_to_tensor=True)
            for c in ("sentence1", "sentence2"))
    cosine = torch.nn.functional.cosine_similarity(u, v).numpy()
    unpadded = evaluation.sts_scores(model, pairs, UNPADDED)
    assert unpadded["spearman_cosine"] == pytest.approx(
        spearmanr(pairs["score"], cosine).statistic, abs=1e-6)
    assert unpadded["pearson_cosine"] == pytest.approx(
        pearsonr(pairs["score"], cosine).statistic, abs=1e-6)
    assert abs(ours["spearman_cosine"]) > 0.01  # a real correlation, not a degenerate 0 or nan


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_nli_accuracy_equals_argmax_of_softmax_loss(tiny_bert, nli_test, prefix):
    from sentence_transformers.sentence_transformer.losses import SoftmaxLoss

    model = _load(tiny_bert, prefix)
    torch.manual_seed(1)
    loss = SoftmaxLoss(model, embedding_dimension=model.get_embedding_dimension(), num_labels=3)
    prompt = modeling.default_prompt(model)
    model.eval()

    def library_logits() -> torch.Tensor:
        # One pair per forward, so that no padding separates these embeddings from ours.
        rows = []
        with torch.no_grad():
            for s1, s2 in zip(nli_test["sentence1"], nli_test["sentence2"], strict=True):
                features = [model.preprocess([s], prompt=prompt) for s in (s1, s2)]
                rows.append(loss(features, labels=None)[1])
        return torch.cat(rows)

    # Centre the random head on these pairs: (u, v, |u - v|) share one large direction, which
    # alone would make every pair the same class and the accuracy a mere label frequency.
    with torch.no_grad():
        before = library_logits()
        loss.classifier.bias -= before.mean(dim=0)
    predicted = library_logits().argmax(dim=1).numpy()
    assert len(set(predicted)) == 3
    expected = float((predicted == np.asarray(nli_test["label"])).mean())
    ours = evaluation.nli_accuracy(model, loss.classifier, nli_test, UNPADDED)
    assert ours["accuracy"] == expected


# 3. A job's saved model, reloaded by sentence-transformers alone, scores what the job logged.

def _reloaded_scores(overrides: list[str], tmp_path: Path) -> tuple[dict, dict, object]:
    from omegaconf import OmegaConf
    from sentence_transformers import SentenceTransformer

    cfg, dict_cfg = compose(overrides)
    out = tmp_path / "job"
    out.mkdir()
    metrics = run_job(cfg, out, flatten(OmegaConf.to_container(dict_cfg, resolve=True)))
    reloaded = SentenceTransformer(str(out / "model"), device="cpu")
    batch = cfg.eval.batch_size or 64
    return metrics, _library_sts(reloaded, load_data(cfg).sts_test, batch), reloaded


def test_saved_model_reproduces_the_logged_score_with_no_prefix_by_hand(tiny_bert, tmp_path):
    overrides = [o for o in tiny_overrides(tiny_bert, tmp_path) if o != "base_model.prefix="]
    overrides += [f"base_model.prefix='{PREFIX}'", "pruning.keep=3", "eval.every_stage=false",
                  f"eval.batch_size={BATCH}"]
    metrics, scores, reloaded = _reloaded_scores(overrides, tmp_path)
    assert reloaded.default_prompt_name == "query"
    assert reloaded.prompts["query"] == PREFIX
    assert scores["spearman_cosine"] == pytest.approx(metrics["sts_test/spearman_cosine"],
                                                      abs=1e-6)
    assert scores["pearson_cosine"] == pytest.approx(metrics["sts_test/pearson_cosine"], abs=1e-6)


@pytest.mark.slow
def test_saved_e5_reproduces_the_logged_score(tmp_path):
    """The real e5, pruned to 2 layers, saved with its `query: ` prompt, reloaded, scored on all
    of STSb test at the job's batch size."""
    metrics, scores, reloaded = _reloaded_scores(
        ["base_model=e5_small", "pruning.keep=2", "phase=none", "eval.speed_rounds=0",
         f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "tracking.experiment=tests"],
        tmp_path)
    assert modeling.default_prompt(reloaded) == "query: "
    assert scores["spearman_cosine"] == pytest.approx(metrics["sts_test/spearman_cosine"],
                                                      abs=1e-6)
    # top-removed keep 2 before training: 0.5119 in the README's Results table
    assert metrics["sts_test/spearman_cosine"] == pytest.approx(0.5119, abs=5e-4)


def _translation_evaluator(model, first: list[str], second: list[str], batch_size: int) -> float:
    from sentence_transformers.sentence_transformer.evaluation import TranslationEvaluator

    evaluator = TranslationEvaluator(first, second, batch_size=batch_size, write_csv=False)
    return float(evaluator(model)["mean_accuracy"])


def test_bitext_accuracy_is_sentence_transformers_translation_evaluator(tiny_bert, sts_test):
    """The bitext metric is TranslationEvaluator's mean accuracy (both directions, averaged), so
    anyone can reproduce it with sentence-transformers alone; here on 120 STSb pairs, one
    sentence a batch (nothing padded: both sides embed each sentence bit for bit alike)."""
    from sbert_exp.data.languages import Loaded

    first, second = sts_test["sentence1"][:120], sts_test["sentence2"][:120]
    model = _load(tiny_bert)
    ours = evaluation.language_scores(
        model, [Loaded("sts", "bitext", Path("-"), first, second)], {}, UNPADDED)
    assert ours["bitext/sts/accuracy"] == _translation_evaluator(model, first, second, UNPADDED)


@pytest.mark.slow
def test_the_en_hi_bitext_score_of_e5_is_translation_evaluators():
    """The same on a real set and model: the embedded en-hi set, e5_small with its prompt, at the
    batch size jobs use."""
    from sbert_exp.data import languages
    from sbert_exp.data.inputs import eval_batch_size

    cfg, _ = compose(["base_model=e5_small", "phase=none"])
    model = modeling.load_base(cfg.base_model, "cpu", modeling.locate(cfg.base_model))
    [en_hi] = languages.load(["en-hi"], {})
    batch = eval_batch_size(cfg.eval.batch_size, "cpu")
    ours = evaluation.language_scores(model, [en_hi], {}, batch)["bitext/en-hi/accuracy"]
    assert ours == pytest.approx(_translation_evaluator(model, en_hi.first, en_hi.second, batch),
                                 abs=1 / (2 * len(en_hi.first)))


# 3. Each score's sample: the per-item columns its interval is drawn from give the score itself.

def test_the_sts_sample_is_the_evaluator_s_own_cosines(tiny_bert, sts_test):
    """The sample's Spearman is the logged one (the evaluator's embeddings, its cosine), and
    its interval holds it."""
    from sbert_exp.evaluation import intervals

    pairs = sts_test.select(range(300))
    model = _load(tiny_bert, PREFIX)
    scores, sample = evaluation.sts_evaluated(model, pairs, BATCH)
    assert scores == _library_sts(model, pairs, BATCH)
    assert sample.items == 300
    assert sample.value() == pytest.approx(scores["spearman_cosine"], abs=1e-12)
    low, high = intervals.interval(sample)
    assert low < scores["spearman_cosine"] < high
    # 300 pairs: a Spearman's 95% interval is about +-0.11 wide (1.96 / sqrt(297) in Fisher's z).
    assert 0.12 < high - low < 0.35


def test_a_language_set_s_sample_gives_its_score(tiny_bert, sts_test):
    """Bitext: each pair retrieved or not, both ways; agreement: the model's and the teacher's
    cosines of each pair. Both samples' values are the sets' scores."""
    from sbert_exp.data.languages import Loaded

    first, second = sts_test["sentence1"][:60], sts_test["sentence2"][:60]
    model = _load(tiny_bert)
    bitext = Loaded("sts", "bitext", Path("-"), first, second)
    pairs = np.array([[i, (i * 7 + 3) % 60] for i in range(60)])
    teacher = dict(zip(first, np.random.default_rng(0).normal(size=(60, 32)), strict=True))
    agree = Loaded("sts", "agreement", Path("-"), first, pairs=pairs)
    scores, samples = evaluation.language_evaluated(model, [bitext, agree], teacher, BATCH)
    assert set(samples) == set(scores) == {"bitext/sts/accuracy", "agreement/sts/spearman"}
    assert samples["bitext/sts/accuracy"].items == 60
    assert samples["agreement/sts/spearman"].items == 60
    for name, sample in samples.items():
        assert sample.value() == pytest.approx(scores[name], abs=1e-12)
