"""Evaluation, side by side: STS (Spearman of cosines), NLI (the softmax head's accuracy),
bitext retrieval and agreement with the teacher (the language sets), each score with the sample
it was computed from, for its interval (`intervals`). Pure functions over embeddings, plus the
evaluators that encode with a model."""

from sbert_exp.evaluation.languages import bitext_accuracy, language_evaluated, language_scores
from sbert_exp.evaluation.nli import nli_accuracy
from sbert_exp.evaluation.sts import (
    encode_unique,
    sample_from_embeddings,
    sts_evaluated,
    sts_from_embeddings,
    sts_scores,
)

__all__ = ["bitext_accuracy", "encode_unique", "language_evaluated", "language_scores",
           "nli_accuracy", "sample_from_embeddings", "sts_evaluated", "sts_from_embeddings",
           "sts_scores"]
