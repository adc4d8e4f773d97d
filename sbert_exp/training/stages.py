"""The `phase` group's stages: NLI (softmax head), distillation (to a teacher), STS (cosine)."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from sbert_exp.config.schema import (
    BaseModelConfig,
    DistillConfig,
    StageConfig,
    StsLoss,
    StsStageConfig,
)
from sbert_exp.model.modeling import default_prompt
from sbert_exp.training import objectives, teacher


@dataclass(frozen=True)
class StageResult:
    loss: float
    seconds: float
    pairs: int  # training examples times epochs: pairs, or sentences for distillation
    steps: int
    # The loss's weighted terms (distillation with more than the MSE), each averaged as the loss
    terms: dict[str, float] = field(default_factory=dict)

    def metrics(self, stage: str) -> dict[str, float]:
        return {
            f"train_{stage}/loss": self.loss,
            f"train_{stage}/seconds": self.seconds,
            f"train_{stage}/pairs": float(self.pairs),
            f"train_{stage}/pairs_per_s": self.pairs / self.seconds if self.seconds else 0.0,
            **{f"train_{stage}/loss_{name}": value for name, value in self.terms.items()},
        }


def _column_prompts(model) -> dict[str, str] | None:
    """The model's default prompt for each sentence column of the training data (the pairs'
    sentence1 and sentence2, the distillation sentences' sentence).

    The trainer tokenizes the training data with the prompts of its arguments only (its collator
    never reads `model.default_prompt_name`, sentence-transformers 6.2), so the prompt that
    `encode` applies is handed to it here: every sentence is trained with the prefix once, as it is
    evaluated. A mapping rather than one string, which the arguments would try to parse as JSON.
    """
    prompt = default_prompt(model)
    return dict.fromkeys(("sentence1", "sentence2", "sentence"), prompt) if prompt else None


objective_label = objectives.label  # the distillation objective, as a model card names it

OnLog = Callable[[dict[str, float], int], None]  # metrics, optimizer step


def _progress(name: str, on_log: OnLog, batch_size: int):
    """A trainer callback that hands the running loss and the examples per second of each
    logging interval to `on_log`, as `train_<name>/step_loss` and
    `train_<name>/step_examples_per_s` at the optimizer step: MLflow shows their history while
    the stage runs. A loss of several terms adds each one's, `train_<name>/step_loss_<term>`."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self):
            self.last = (0, time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            step, now = state.global_step, time.perf_counter()
            rate = (step - self.last[0]) * batch_size / max(now - self.last[1], 1e-9)
            self.last = (step, now)
            terms = {f"train_{name}/step_loss_{term}": float(logs[term])
                     for term in objectives.TERMS if term in logs}
            on_log({f"train_{name}/step_loss": float(logs["loss"]),
                    f"train_{name}/step_examples_per_s": rate, **terms}, step)

    return Progress()


def _train(model, loss: nn.Module, pairs: Dataset, stage: StageConfig | DistillConfig,
           seed: int, name: str = "", on_log: OnLog | None = None,
           precision: str = "fp32") -> StageResult:
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    on_cuda = str(model.device).startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="sbert_exp-trainer-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=stage.epochs,
            per_device_train_batch_size=stage.batch_size,
            learning_rate=stage.lr,
            warmup_steps=stage.warmup_ratio,  # transformers 5: a float < 1 is a ratio
            seed=seed,
            data_seed=seed,
            prompts=_column_prompts(model),
            # Metrics go through sbert_exp.tracking; checkpoints are not wanted.
            report_to="none",
            save_strategy="no",
            logging_strategy="steps",
            logging_steps=50,
            dataloader_pin_memory=on_cuda,
            # Mixed precision (model.precision): autocast, with the weights and the
            # optimizer's state in fp32; fp16 (GPUs without bf16) with loss scaling.
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=not on_cuda,
        )
        callbacks = [] if on_log is None else [_progress(name, on_log, stage.batch_size)]
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs, loss=loss,
                                             callbacks=callbacks)
        start = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - start
    return StageResult(loss=float(output.training_loss), seconds=seconds,
                       pairs=len(pairs) * stage.epochs, steps=int(output.global_step))


def train_nli(model, pairs: Dataset, stage: StageConfig, num_labels: int,
              seed: int, on_log: OnLog | None = None,
              precision: str = "fp32") -> tuple[nn.Linear, StageResult]:
    """SoftmaxLoss over (u, v, |u - v|), as in SBERT; returns the trained classifier head."""
    from sentence_transformers.sentence_transformer.losses import SoftmaxLoss

    torch.manual_seed(seed)  # the classifier head is initialised here
    loss = SoftmaxLoss(model, embedding_dimension=model.get_embedding_dimension(),
                       num_labels=num_labels)
    result = _train(model, loss, pairs, stage, seed, "nli", on_log, precision)
    return loss.classifier, result


def train_sts(model, pairs: Dataset, stage: StsStageConfig, seed: int,
              on_log: OnLog | None = None, precision: str = "fp32") -> StageResult:
    """The stage's loss on gold scores already scaled to 0..1: CosineSimilarityLoss (SBERT's
    regression of the cosine onto the score) or CoSENTLoss (only the order of the pairs'
    cosines counts, which leaves a sentence-tuned model's cosine scale alone)."""
    from sentence_transformers.sentence_transformer.losses import (
        CoSENTLoss,
        CosineSimilarityLoss,
    )

    loss = CoSENTLoss(model) if stage.loss is StsLoss.cosent else CosineSimilarityLoss(model)
    return _train(model, loss, pairs, stage, seed, "sts", on_log, precision)


def train_distill(model, sentences: Sequence[str], targets: np.ndarray, stage: DistillConfig,
                  seed: int, on_log: OnLog | None = None, precision: str = "fp32",
                  base: BaseModelConfig | None = None) -> StageResult:
    """The student learns `targets`, the teacher's embeddings of `sentences`: by default with
    MSELoss (sentence-transformers' layer-reduction distillation); with other weights, through
    `objectives.DistillLoss`. Hidden-state matching runs the teacher, loaded from `base`."""
    from sentence_transformers.sentence_transformer.losses import MSELoss

    if len(sentences) != len(targets):
        raise ValueError(f"{len(sentences)} sentences but {len(targets)} teacher embeddings")
    # From the array itself: a list of Python floats would hold 150,000 x 384 objects.
    data = Dataset.from_dict({"sentence": list(sentences),
                              "label": np.asarray(targets, dtype=np.float32)})
    if objectives.plain_mse(stage):
        return _train(model, MSELoss(model), data, stage, seed, "distill", on_log, precision)
    if stage.hidden > 0 and base is None:
        raise ValueError("hidden-state matching needs the base model config, to load the teacher")
    live = (teacher.live(base, str(model.device)) if stage.hidden > 0
            else contextlib.nullcontext())
    with live as loaded:
        loss = objectives.DistillLoss(model, stage, loaded)
        result = _train(model, loss, data, stage, seed, "distill", on_log, precision)
        terms = loss.means()
        del loss, loaded  # the teacher is freed as the block ends
    return dataclasses.replace(result, terms=terms)
