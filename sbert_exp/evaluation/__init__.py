"""Evaluation, side by side: STS (Spearman of cosines), NLI (the softmax head's accuracy),
bitext retrieval and agreement with the teacher (the language sets). Pure functions over
embeddings, plus the evaluators that encode with a model."""

from sbert_exp.evaluation.languages import bitext_accuracy, language_scores
from sbert_exp.evaluation.nli import nli_accuracy
from sbert_exp.evaluation.sts import encode_unique, sts_from_embeddings, sts_scores

__all__ = ["bitext_accuracy", "encode_unique", "language_scores", "nli_accuracy",
           "sts_from_embeddings", "sts_scores"]
