"""The distillation objectives: the layer mapping, hidden-state and in-batch similarity matching
on the tiny BERT (trimmed vocabulary included), the stage with each objective, its config
errors and its card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose, run_tiny_job, tiny_overrides
from sbert_exp.config.schema import BaseModelConfig, DistillConfig, Source
from sbert_exp.errors import UserError
from sbert_exp.model import modeling
from sbert_exp.training import objectives, teacher
from sbert_exp.training import stages as training
from sbert_exp.training.objectives import (
    DistillLoss,
    hidden_state_loss,
    similarity_loss,
    teacher_ids,
    teacher_layers,
)

SENTENCES = ["a man is playing a guitar", "a woman is slicing an onion",
             "two dogs are running on the beach", "a child is riding a horse",
             "the cat is sitting on the red car", "people are dancing outside"]


def _base(tiny_bert: Path) -> BaseModelConfig:
    return BaseModelConfig(name="tiny_bert", source=Source.local, location=str(tiny_bert),
                           num_layers=12)


def _load(tiny_bert: Path, kept: list[int] | None = None):
    model = modeling.load_base(_base(tiny_bert), "cpu", str(tiny_bert))
    if kept is not None:
        modeling.prune(model, kept)
    return model


def _stage(**weights: float) -> DistillConfig:
    return DistillConfig(max_sentences=None, **{"mse": 0.0, **weights})


def _terms(loss: DistillLoss, model, sentences: list[str], targets: torch.Tensor,
           pad: int = 0) -> dict[str, float]:
    """The loss's weighted terms on one batch of `sentences`, with `pad` more padding columns."""
    features = model.preprocess(sentences)
    if pad:
        ids, mask = features["input_ids"], features["attention_mask"]
        features["input_ids"] = torch.cat(
            [ids, torch.full((len(ids), pad), model.tokenizer.pad_token_id)], dim=1)
        features["attention_mask"] = torch.cat([mask, torch.zeros(len(ids), pad, dtype=mask.dtype)],
                                               dim=1)
        features["token_type_ids"] = torch.zeros_like(features["input_ids"])
    with torch.no_grad():
        return {k: float(v) for k, v in loss([features], targets).items()}


# ------------------------------------------------------------------ the layer mapping


@pytest.mark.parametrize(("kept", "layers", "expected"), [
    (2, 12, [5, 11]),
    (6, 12, [1, 3, 5, 7, 9, 11]),
    (1, 12, [11]),
    (12, 12, list(range(12))),
    (3, 12, [3, 7, 11]),
    (4, 6, [0, 2, 3, 5]),
    (5, 24, [3, 8, 13, 18, 23]),
])
def test_each_student_layer_matches_a_teacher_layer_the_last_the_last(kept, layers, expected):
    assert teacher_layers(kept, layers) == expected


@pytest.mark.parametrize(("kept", "layers"), [(0, 12), (13, 12)])
def test_a_student_deeper_than_its_teacher_has_no_mapping(kept, layers):
    with pytest.raises(ValueError, match=f"a student of {kept} layers cannot match"):
        teacher_layers(kept, layers)


# ------------------------------------------------------------------ hidden states


def test_hidden_states_match_exactly_when_the_student_is_the_teacher(tiny_bert):
    student, full = _load(tiny_bert).eval(), _load(tiny_bert).eval()
    targets = torch.as_tensor(full.encode(SENTENCES))
    loss = DistillLoss(student, _stage(hidden=1.0), full)
    assert loss.layers == list(range(12)) and loss.ids is None  # same vocabulary
    assert _terms(loss, student, SENTENCES, targets) == {"hidden": 0.0}
    # The student's states come from its forward, which leaves its config as it found it.
    assert modeling.hf_model(student).config.output_hidden_states is False

    with torch.no_grad():
        modeling.layers(student)[7].output.dense.weight.add_(0.05)
    perturbed = _terms(loss, student, SENTENCES, targets)["hidden"]
    assert perturbed > 0
    # Padding never counts: more padding columns, the same loss.
    padded = _terms(loss, student, SENTENCES, targets, pad=5)["hidden"]
    assert padded == pytest.approx(perturbed, rel=1e-5)


def test_hidden_state_loss_is_relative_to_the_teacher_states_on_real_tokens_only():
    torch.manual_seed(0)
    teacher_states = [torch.randn(2, 4, 8), 3 * torch.randn(2, 4, 8)]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    student = [t + 0.1 * torch.randn_like(t) for t in teacher_states]
    loss = hidden_state_loss(student, teacher_states, mask)
    # Garbage on the padding changes nothing; scaling both sides changes nothing.
    noisy = [s + 100 * torch.randn_like(s) * (1 - mask)[..., None] for s in student]
    assert float(hidden_state_loss(noisy, teacher_states, mask)) == pytest.approx(float(loss))
    scaled = hidden_state_loss([10 * s for s in student], [10 * t for t in teacher_states], mask)
    assert float(scaled) == pytest.approx(float(loss), rel=1e-5)
    assert float(hidden_state_loss(teacher_states, teacher_states, mask)) == 0.0


def test_a_trimmed_student_feeds_the_teacher_the_same_tokens_in_its_ids(tiny_bert):
    """vocab=corpus renumbers the student's tokens: they are mapped back to the teacher's ids,
    so a trimmed student with every layer still matches the teacher exactly."""
    from sbert_exp import forms

    student, full = _load(tiny_bert).eval(), _load(tiny_bert).eval()
    keep = forms.vocab.used_token_ids(student.tokenizer, SENTENCES)
    forms.shape(student, None, forms.Trim(SENTENCES))
    assert len(student.tokenizer) < len(full.tokenizer)
    ids = teacher_ids(student.tokenizer, full.tokenizer)
    assert ids.tolist() == keep
    trimmed = student.preprocess(SENTENCES)["input_ids"]
    assert torch.equal(ids[trimmed], full.preprocess(SENTENCES)["input_ids"])

    targets = torch.as_tensor(full.encode(SENTENCES))
    loss = DistillLoss(student, _stage(hidden=1.0), full)
    assert _terms(loss, student, SENTENCES, targets) == {"hidden": 0.0}
    loss.ids = None  # the student's own ids name other tokens in the teacher's vocabulary
    assert _terms(loss, student, SENTENCES, targets)["hidden"] > 0


def test_a_vocabulary_that_is_not_a_trim_of_the_teachers_is_refused(tiny_bert):
    class Tokens:
        def __init__(self, tokens):
            self.tokens = tokens

        def __len__(self):
            return len(self.tokens)

        def convert_ids_to_tokens(self, ids):
            return [self.tokens[i] for i in ids]

        def get_vocab(self):
            return {t: i for i, t in enumerate(self.tokens)}

    full = Tokens(["[PAD]", "a", "b", "c"])
    assert teacher_ids(Tokens(["[PAD]", "a", "b", "c"]), full) is None
    assert teacher_ids(Tokens(["[PAD]", "c"]), full).tolist() == [0, 3]
    for other in (["[PAD]", "x"], ["[PAD]", "c", "a"]):
        with pytest.raises(ValueError, match="not a trim of the teacher's"):
            teacher_ids(Tokens(other), full)


@pytest.mark.slow
def test_real_e5_trimmed_tokens_map_back_to_their_ids():
    from transformers import AutoTokenizer

    from sbert_exp.data.assets import cache_dir
    from sbert_exp.forms.vocab import trim_tokenizer, used_token_ids

    path = cache_dir() / "e5_small"
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"e5_small is not prepared in {path}: run `make assets`")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    corpus = [f"query: {s}" for s in [*SENTENCES, "लड़का फुटबॉल खेल रहा है।"]]
    keep = used_token_ids(tokenizer, corpus, single_chars=True)
    ids = teacher_ids(trim_tokenizer(tokenizer, keep), tokenizer)
    assert ids.tolist() == keep


# ------------------------------------------------------------------ in-batch similarity


def test_similarity_loss_is_zero_on_the_targets_and_blind_to_norms():
    torch.manual_seed(0)
    targets = torch.randn(5, 16)
    assert float(similarity_loss(targets, targets)) == pytest.approx(0.0, abs=1e-6)
    student = targets + 0.5 * torch.randn(5, 16)
    loss = float(similarity_loss(student, targets))
    assert loss > 0
    scales = torch.tensor([[3.0], [0.1], [1.0], [7.0], [0.5]])
    assert float(similarity_loss(student * scales, targets)) == pytest.approx(loss, rel=1e-5)
    assert float(similarity_loss(student, targets * scales)) == pytest.approx(loss, rel=1e-5)


def test_similarity_loss_is_one_for_a_collapsed_student_and_zero_for_one_sentence():
    torch.manual_seed(0)
    targets = torch.randn(4, 8)
    collapsed = torch.ones(4, 8)
    assert float(similarity_loss(collapsed, targets)) == pytest.approx(1.0, rel=1e-5)
    student = torch.randn(1, 4, requires_grad=True)
    loss = similarity_loss(student, torch.randn(1, 4))
    assert loss.item() == 0.0
    loss.backward()  # a term of the sum: it must not break the backward pass


def test_the_added_terms_are_in_the_mse_units():
    """Each added term is a relative error times the targets' mean square: embeddings c times
    larger give every term, the MSE's included, c**2 times larger."""
    torch.manual_seed(0)
    targets = torch.randn(6, 8)
    student = targets + 0.3 * torch.randn(6, 8)

    def terms(c: float) -> dict[str, float]:
        loss = DistillLoss(lambda features: {"sentence_embedding": c * student},
                           _stage(mse=1.0, similarity=2.0))
        return {k: float(v) for k, v in loss([{}], c * targets).items()}

    one, ten = terms(1.0), terms(10.0)
    assert ten == pytest.approx({k: 100 * v for k, v in one.items()}, rel=1e-4)
    assert one["similarity"] == pytest.approx(
        2 * float((targets ** 2).mean() * similarity_loss(student, targets)), rel=1e-5)


# ------------------------------------------------------------------ the stage


@pytest.mark.parametrize("weights", [{"hidden": 1.0}, {"similarity": 1.0},
                                     {"mse": 1.0, "hidden": 1.0, "similarity": 1.0}],
                         ids=["hidden", "similarity", "all"])
def test_the_stage_trains_with_each_objective_and_lowers_it(weights, tiny_bert):
    sentences = [f"{a} {b}" for a in SENTENCES for b in SENTENCES[:4]]
    full = _load(tiny_bert).eval()
    targets = full.encode(sentences)
    # The random tiny BERT's layers change its states little, less than dropout does: the
    # student starts from fresh weights and trains without dropout, so that it has a way to go
    # and the loss it trains on is the one measured.
    student = _load(tiny_bert, [0, 1, 2])
    modeling.reinitialize(student, seed=1)
    for module in student.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    modeling.freeze_embeddings(student)
    frozen = modeling.hf_model(student).embeddings.word_embeddings.weight.clone()
    stage = DistillConfig(max_sentences=None, batch_size=8, lr=1e-3, epochs=2,
                          **{"mse": 0.0, **weights})

    def measured() -> dict[str, float]:
        student.eval()
        with teacher.live(_base(tiny_bert), "cpu") as loaded:
            loss = DistillLoss(student, stage, loaded)
            return _terms(loss, student, sentences, torch.as_tensor(targets))

    before = measured()
    result = training.train_distill(student, sentences, targets, stage, seed=0,
                                    base=_base(tiny_bert))
    after = measured()
    assert np.isfinite(result.loss) and result.steps == 6
    assert set(result.terms) == set(weights)
    assert result.loss == pytest.approx(sum(result.terms.values()), rel=1e-4)
    assert set(result.metrics("distill")) >= {f"train_distill/loss_{k}" for k in weights}
    assert sum(after.values()) < sum(before.values()), (before, after)
    # The frozen embeddings stayed frozen.
    assert torch.equal(modeling.hf_model(student).embeddings.word_embeddings.weight, frozen)


def test_each_term_is_logged_while_the_stage_trains(tiny_bert):
    """Every 50 optimizer steps, each term's running value beside the running loss."""
    sentences = [f"{a} {b}" for a in SENTENCES for b in SENTENCES][:25] * 8
    targets = _load(tiny_bert).encode(sentences)
    logged = []
    stage = DistillConfig(max_sentences=None, batch_size=4, similarity=0.5)
    training.train_distill(_load(tiny_bert, [0, 1]), sentences, targets, stage, 0,
                           lambda m, step: logged.append((step, m)))
    [(step, metrics)] = logged
    assert step == 50
    assert set(metrics) == {"train_distill/step_loss", "train_distill/step_examples_per_s",
                            "train_distill/step_loss_mse", "train_distill/step_loss_similarity"}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_job_distills_a_trimmed_student_with_every_term_and_says_so(tiny_bert, tmp_path,
                                                                      precision):
    """vocab=corpus on the distillation sentences: the student's ids differ from the teacher's.
    In bf16 too (the trainer's autocast, the teacher's forward inside it)."""
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(f"{a} {b}" for a in SENTENCES for b in SENTENCES[:4]) + "\n")
    out = tmp_path / "job"
    metrics = run_tiny_job([*tiny_overrides(tiny_bert, tmp_path, phase="distill"),
                            f"phase.distill.sentences_file={text}",
                            "phase.distill.max_sentences=null", "phase.distill.batch_size=8",
                            "phase.distill.hidden=1", "phase.distill.similarity=0.5",
                            "pruning.keep=2", "vocab=corpus", "vocab.training_splits=false",
                            f"vocab.files=[{text}]", "eval.speed_rounds=0",
                            f"precision={precision}"], out)
    terms = {f"train_distill/loss_{k}" for k in ("mse", "hidden", "similarity")}
    assert terms <= set(metrics) and all(np.isfinite(metrics[k]) for k in terms)
    assert metrics["model/vocab_size"] < len((tiny_bert / "vocab.txt").read_text().split())
    readme = (out / "model" / "README.md").read_text()
    assert ("- **Recovery:** distillation from the base (all sentences, 1 epoch; MSE + hidden "
            "states + in-batch similarity)") in readme


@pytest.mark.parametrize(("weights", "label"), [
    ({}, ""),
    ({"mse": 2.0}, ""),
    ({"hidden": 1.0}, "; MSE + hidden states"),
    ({"mse": 0.0, "similarity": 1.0}, "; in-batch similarity"),
    ({"hidden": 1.0, "similarity": 1.0}, "; MSE + hidden states + in-batch similarity"),
])
def test_the_card_names_the_objective_unless_it_is_the_mse_alone(weights, label):
    stage = DistillConfig(max_sentences=None, **weights)
    assert objectives.label(stage) == label
    assert objectives.plain_mse(stage) is (weights == {})


# ------------------------------------------------------------------ config


def test_the_weights_compose_with_their_defaults():
    d = compose(["phase=distill_sts"])[0].phase.distill
    assert (d.mse, d.hidden, d.similarity) == (1.0, 0.0, 0.0)
    d = compose(["phase=distill", "phase.distill.hidden=1", "phase.distill.similarity=2"])[0]
    assert (d.phase.distill.hidden, d.phase.distill.similarity) == (1.0, 2.0)


@pytest.mark.parametrize(("overrides", "message"), [
    (["phase.distill.hidden=-1"], "phase.distill.hidden=-1.0 is invalid: it must be at least 0"),
    (["phase.distill.mse=-0.5"], "phase.distill.mse=-0.5 is invalid: it must be at least 0"),
    (["phase.distill.similarity=nan"],
     "phase.distill.similarity=nan is invalid: it must be at least 0"),
    (["phase.distill.mse=0"],
     "phase.distill.mse, phase.distill.hidden, phase.distill.similarity are all 0: the loss is "
     "their weighted sum, so give at least one a positive weight"),
], ids=["negative_hidden", "negative_mse", "nan", "all_zero"])
def test_bad_weights_end_in_one_line_before_any_model_loads(overrides, message, tiny_bert,
                                                            tmp_path, monkeypatch):
    from sbert_exp.job.checks import plan

    def no_load(*args, **kwargs):
        pytest.fail("a model was loaded before the weights were checked")

    monkeypatch.setattr(modeling, "load_base", no_load)
    cfg, _ = compose([*tiny_overrides(tiny_bert, tmp_path, phase="distill"), *overrides])
    with pytest.raises(UserError) as caught:
        plan(cfg)
    assert str(caught.value) == message
