"""Measure a form: its scores (STS test, the language sets), its encode speed against the
unpruned fp32 base (same sentences, same process, alternating rounds) and its size on disk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sbert_exp.evaluation.intervals import Sample, bounds
from sbert_exp.evaluation.languages import language_evaluated
from sbert_exp.evaluation.sts import sts_evaluated
from sbert_exp.forms.timing import best_encode_seconds
from sbert_exp.model.modeling import disk_mb, layers_view
from sbert_exp.model.precision import in_precision

STS_SPEARMAN = "sts_test/spearman_cosine"  # the STS score with an interval


def evaluated(model, sts_pairs, language_sets: Sequence = (), teacher: Mapping | None = None,
              batch_size: int = 64) -> tuple[dict[str, float], dict[str, Sample]]:
    """`sts_test/spearman_cosine`, `sts_test/pearson_cosine` and each language set's metric;
    and the sample of each score that has an interval (the STSb Spearman and the sets'), by the
    same names (`sbert_exp.evaluation.intervals`)."""
    sts, sample = sts_evaluated(model, sts_pairs, batch_size)
    found = {f"sts_test/{k}": v for k, v in sts.items()}
    langs, samples = language_evaluated(model, language_sets, teacher or {}, batch_size)
    found.update(langs)
    return found, {STS_SPEARMAN: sample, **samples}


def scores(model, sts_pairs, language_sets: Sequence = (), teacher: Mapping | None = None,
           batch_size: int = 64) -> dict[str, float]:
    """`evaluated`'s scores."""
    return evaluated(model, sts_pairs, language_sets, teacher, batch_size)[0]


def view_evaluated(model, layers: Sequence[int], sts_pairs, batch_size: int = 64,
                   precision: str = "fp32") -> tuple[dict[str, float], Sample]:
    """`evaluated` on STS test of `model` with only `layers` (a view: the model is left whole),
    encoded in `precision` (fp32, or bf16: a copy of the weights in bf16): the scores and the
    Spearman's sample."""
    served = in_precision(model, precision)
    with layers_view(served, list(layers)):
        scores, sample = sts_evaluated(served, sts_pairs, batch_size)
    return {f"sts_test/{k}": v for k, v in scores.items()}, sample


def speed(model, unpruned, sentences: list[str], batch_size: int,
          rounds: int) -> dict[str, float]:
    """`speed/speedup_vs_unpruned` and `speed/sentences_per_s` of `model`, timed against the
    unpruned model on the same sentences in alternating rounds (none: {})."""
    if not rounds:
        return {}
    best = best_encode_seconds({"unpruned": unpruned, "form": model}, sentences, batch_size,
                               rounds)
    return {"speed/speedup_vs_unpruned": best["unpruned"] / best["form"],
            "speed/sentences_per_s": len(sentences) / best["form"]}


def measure(model, folder: Path, unpruned, sts_pairs, sentences: list[str], *,
            language_sets: Sequence = (), teacher: Mapping | None = None,
            batch_size: int = 64, rounds: int = 1) -> tuple[dict[str, float], dict[str, Sample]]:
    """Everything a form is judged by: `evaluated`'s scores and their intervals (`ci_low/...`,
    `ci_high/...`), `speed` and `model/disk_mb` (the folder it loads from); and the scores'
    samples, for paired comparisons."""
    found, samples = evaluated(model, sts_pairs, language_sets, teacher, batch_size)
    found.update(bounds(samples))
    found.update(speed(model, unpruned, sentences, batch_size, rounds))
    found["model/disk_mb"] = disk_mb(Path(folder))
    return found, samples
