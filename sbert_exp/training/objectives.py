"""The distillation stage's objective: a weighted sum of the MSE to the teacher's sentence
embeddings, hidden-state matching to chosen teacher layers, and in-batch similarity matching.

Every term is in the MSE's units, so that equal weights give terms of comparable size whatever
the base model's scale: each added term is a relative error (the error divided by the size of
the teacher's own quantity on the same batch, held constant; 1 for a student that outputs
zeros or one embedding for every sentence), multiplied by the mean square of the teacher's
embeddings, which is the MSE of a student that outputs zeros. No constant is tuned to a model;
docs/configuration.md (Phases and budgets) gives the sizes measured on e5_small.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sbert_exp.config.schema import DistillConfig
from sbert_exp.model import modeling

# The weight of each term, as phase.distill names it, and as the card names the term.
TERMS = {"mse": "MSE", "hidden": "hidden states", "similarity": "in-batch similarity"}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the teacher's encoder reads


def weights(stage: DistillConfig) -> dict[str, float]:
    """The weight of each term of `stage`'s loss, zeros included."""
    return {name: float(getattr(stage, name)) for name in TERMS}


def plain_mse(stage: DistillConfig) -> bool:
    """The objective is sentence-transformers' MSELoss alone, as before the other terms."""
    return weights(stage) == {"mse": 1.0, "hidden": 0.0, "similarity": 0.0}


def label(stage: DistillConfig) -> str:
    """The objective in words for the model card: '' for the MSE alone, else its terms
    ('; MSE + hidden states')."""
    terms = [TERMS[name] for name, weight in weights(stage).items() if weight > 0]
    return "" if terms == [TERMS["mse"]] else "; " + " + ".join(terms)


def teacher_layers(kept: int, teacher: int) -> list[int]:
    """The teacher layer that each of the student's `kept` layers is matched to: layer
    (j + 1) * teacher // kept - 1 for the j-th, spread evenly, the last to the last."""
    if not 1 <= kept <= teacher:
        raise ValueError(f"a student of {kept} layers cannot match a teacher of {teacher}")
    return [(j + 1) * teacher // kept - 1 for j in range(kept)]


def hidden_state_loss(student: Sequence[Tensor], teacher: Sequence[Tensor],
                      mask: Tensor) -> Tensor:
    """The mean over matched layer pairs of the relative squared error of the token states:
    the squared error averaged over the hidden dimension and the real tokens (`mask`, [batch,
    tokens]: padding never counts), divided by the teacher's mean square over the same tokens.
    Each pair: [batch, tokens, hidden] states of the student and of its teacher layer."""
    real = mask.to(torch.float32).unsqueeze(-1)
    count = real.sum() * student[0].shape[-1]
    losses = []
    for s, t in zip(student, teacher, strict=True):
        s, t = s.float(), t.float().detach()
        scale = ((t ** 2) * real).sum().detach() / count
        losses.append((((s - t) ** 2) * real).sum() / count / scale.clamp_min(1e-12))
    return torch.stack(losses).mean()


def similarity_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """The squared error between the student's and the teacher's cosine similarities of every
    pair of distinct sentences in the batch ([batch, dim] embeddings), relative to the teacher's
    squared cosine distances (1 - cosine) of the same pairs: 1 is an error as large as those
    distances, as a student that gives every sentence the same embedding makes."""
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float().detach(), dim=-1)
    pairs = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    student_sims, teacher_sims = (s @ s.T)[pairs], (t @ t.T)[pairs]
    distances = ((1 - teacher_sims) ** 2).sum().clamp_min(1e-12)
    return ((student_sims - teacher_sims) ** 2).sum() / distances  # 0 for a batch of one


def teacher_ids(student, teacher) -> Tensor | None:
    """Student token id -> the teacher's id of the same token, as a lookup tensor; None when
    both tokenizers have the same vocabulary.

    A trimmed vocabulary (`vocab=corpus`) keeps some of the base's tokens, renumbered in their
    old order, with their strings: each maps back through its string. Anything else (a token
    the teacher lacks, another order) is not a trim of the teacher's vocabulary: refused.
    """
    size = len(student)
    tokens = student.convert_ids_to_tokens(list(range(size)))
    if size == len(teacher) and tokens == teacher.convert_ids_to_tokens(list(range(size))):
        return None
    vocab = teacher.get_vocab()
    ids = [vocab.get(token, -1) for token in tokens]
    ordered = all(a < b for a, b in zip(ids, ids[1:], strict=False))
    if min(ids, default=0) < 0 or not ordered:
        raise ValueError("hidden-state matching: the student's vocabulary is not a trim of the "
                         "teacher's, so their token ids cannot be matched")
    return torch.tensor(ids, dtype=torch.long)


class DistillLoss(nn.Module):
    """The weighted sum of the terms whose weight is positive (module docstring), handed to the
    trainer as a dict of the weighted terms: the trainer sums them and logs each one.

    `teacher`: the unpruned pretrained base, needed by hidden-state matching only. It runs in
    no_grad on the student's tokens (mapped to its own ids after a vocabulary trim), and it is
    kept out of the module's children so that the trainer never trains, moves or unfreezes it.
    """

    def __init__(self, model, stage: DistillConfig, teacher=None):
        super().__init__()
        self.model = model
        self.weights = {name: w for name, w in weights(stage).items() if w > 0}
        self.sums = dict.fromkeys(self.weights, torch.zeros(()))
        self.calls = 0
        self._teacher = [teacher] if teacher is not None else []
        if "hidden" in self.weights:
            if teacher is None:
                raise ValueError("hidden-state matching needs the teacher model")
            self.layers = teacher_layers(modeling.num_layers(model), modeling.num_layers(teacher))
            ids = teacher_ids(model.tokenizer, teacher.tokenizer)
            self.register_buffer("ids", ids, persistent=False)

    def forward(self, sentence_features: Sequence[dict[str, Tensor]],
                labels: Tensor) -> dict[str, Tensor]:
        [features] = sentence_features
        inputs = {k: features[k] for k in INPUTS if k in features}
        hidden = "hidden" in self.weights
        with modeling.all_layer_states(self.model) if hidden else contextlib.nullcontext():
            out = self.model(features)
        embeddings = out["sentence_embedding"].float()
        targets = labels.detach().to(embeddings.device, torch.float32)
        scale = (targets ** 2).mean()  # the MSE of a zero embedding: the MSE's units
        terms = {}
        if "mse" in self.weights:
            terms["mse"] = F.mse_loss(embeddings, targets)
        if hidden:
            student = out["all_layer_embeddings"][1:]
            if len(student) != len(self.layers):  # transformers hooks the layers it first ran
                raise RuntimeError(f"the student gave the states of {len(student)} layers, not "
                                   f"of its {len(self.layers)}")
            teacher = self._teacher_states(inputs)
            terms["hidden"] = scale * hidden_state_loss(
                student, [teacher[i + 1] for i in self.layers], inputs["attention_mask"])
        if "similarity" in self.weights:
            terms["similarity"] = scale * similarity_loss(embeddings, targets)
        weighted = {name: self.weights[name] * term for name, term in terms.items()}
        self.calls += 1
        for name, term in weighted.items():  # kept on the device: no sync a step
            self.sums[name] = self.sums[name].to(term.device) + term.detach()
        return weighted

    def _teacher_states(self, inputs: dict[str, Tensor]) -> tuple[Tensor, ...]:
        [teacher] = self._teacher
        if self.ids is not None:
            inputs = {**inputs, "input_ids": self.ids[inputs["input_ids"]]}
        with torch.no_grad():
            return modeling.hf_model(teacher)(**inputs, output_hidden_states=True).hidden_states

    def means(self) -> dict[str, float]:
        """Each weighted term averaged over the calls so far (they add up to the loss)."""
        return {name: float(total) / max(self.calls, 1) for name, total in self.sums.items()}

    def get_config_dict(self) -> dict[str, float]:
        return dict(self.weights)

