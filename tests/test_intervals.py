"""Bootstrap intervals: the statistics match scipy's, the intervals match theory where it has
an answer, the draws are seeded, and a paired comparison tells noise from a real difference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from sbert_exp.evaluation.intervals import (
    Difference,
    agreement_sample,
    bitext_sample,
    bounds,
    draw_indices,
    interval,
    logged_difference,
    paired,
    spearman_rows,
    sts_sample,
    versus,
)


def _correlated(n: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return x, rho * x + np.sqrt(1 - rho * rho) * rng.standard_normal(n)


def test_spearman_rows_is_scipy_s_spearman_ties_included():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=(5, 40)).astype(float)  # STS gold scores tie often
    b = rng.standard_normal((5, 40))
    expected = [spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(spearman_rows(a, b), expected, atol=1e-12)
    assert spearman_rows(np.ones((1, 5)), np.arange(5.0)[None])[0] == 0.0


def test_the_sts_interval_of_stsb_s_size_matches_fisher_s_z():
    """1,379 pairs at a Spearman near 0.84: Fisher's z gives about +-0.016 (for Pearson;
    Spearman's is a little wider)."""
    gold, cos = _correlated(1379, 0.85, seed=3)
    sample = sts_sample(gold, cos)
    low, high = interval(sample)
    rho = sample.value()
    assert rho == pytest.approx(spearmanr(gold, cos).statistic, abs=1e-12)
    z, se = np.arctanh(rho), 1.96 / np.sqrt(1379 - 3)
    fisher = np.tanh(z + se) - np.tanh(z - se)
    assert low < rho < high
    assert high - low == pytest.approx(fisher, rel=0.25)


def test_a_bitext_interval_of_148_pairs_is_as_wide_as_binomial_noise():
    """en-mr's size: 148 pairs, about 296 retrievals; one retrieval is 0.0034."""
    rng = np.random.default_rng(4)
    forward, backward = rng.random(148) < 0.9, rng.random(148) < 0.9
    sample = bitext_sample(forward, backward)
    assert sample.value() == pytest.approx((forward.mean() + backward.mean()) / 2)
    low, high = interval(sample)
    p = sample.value()
    binomial = 2 * 1.96 * np.sqrt(p * (1 - p) / 296)
    assert high - low == pytest.approx(binomial, rel=0.35)


def test_the_draws_are_seeded_and_depend_only_on_the_size():
    np.testing.assert_array_equal(draw_indices(50), draw_indices(50))
    assert not np.array_equal(draw_indices(50, seed=1), draw_indices(50))
    gold, cos = _correlated(200, 0.6, seed=5)
    assert interval(sts_sample(gold, cos)) == interval(sts_sample(gold, cos))
    with pytest.raises(ValueError, match="at least 2 items"):
        draw_indices(1)


def test_a_paired_comparison_tells_noise_from_a_real_difference():
    gold, cos = _correlated(1379, 0.85, seed=6)
    rng = np.random.default_rng(7)
    base = sts_sample(gold, cos)
    # The same model with a little noise on each cosine (an int8 form): within noise.
    jitter = sts_sample(gold, cos + 1e-3 * rng.standard_normal(len(cos)))
    same = paired(jitter, base)
    assert same.within_noise and abs(same.value) < 0.002
    # A model with much more noise: a real loss, even though the two unpaired intervals
    # overlap.
    worse = sts_sample(gold, cos + 0.25 * rng.standard_normal(len(cos)))
    lost = paired(worse, base)
    assert not lost.within_noise and lost.high < 0
    assert interval(worse)[1] > interval(base)[0]
    assert paired(base, base) == Difference(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="the same items: 1379 and 148"):
        paired(base, bitext_sample(np.ones(148), np.ones(148)))


def test_agreement_is_the_spearman_of_the_model_s_and_the_teacher_s_cosines():
    ours, teacher = _correlated(300, 0.7, seed=8)
    assert agreement_sample(ours, teacher).value() == pytest.approx(
        spearmanr(ours, teacher).statistic, abs=1e-12)


@pytest.mark.parametrize(("diff", "text"), [
    (Difference(-0.0032, -0.0061, -0.0004), "-0.0032 [-0.0061, -0.0004]"),
    (Difference(0.0009, -0.0012, 0.0031), "+0.0009 [-0.0012, +0.0031], within noise"),
])
def test_a_difference_reads_in_one_line(diff, text):
    assert diff.words() == text


def test_bounds_and_differences_are_named_after_their_metric_and_read_back():
    gold, cos = _correlated(500, 0.8, seed=9)
    rng = np.random.default_rng(10)
    ours = {"sts_test/spearman_cosine": sts_sample(gold, cos),
            "bitext/en-hi/accuracy": bitext_sample(rng.random(148) < 0.9, rng.random(148) < 0.9)}
    base = {"sts_test/spearman_cosine": sts_sample(gold, cos + 0.3 * rng.standard_normal(500)),
            "agreement/hi/spearman": agreement_sample(cos, gold)}
    found = bounds(ours)
    assert set(found) == {"ci_low/sts_test/spearman_cosine", "ci_high/sts_test/spearman_cosine",
                          "ci_low/bitext/en-hi/accuracy", "ci_high/bitext/en-hi/accuracy"}
    low, high = interval(ours["bitext/en-hi/accuracy"])
    assert (found["ci_low/bitext/en-hi/accuracy"], found["ci_high/bitext/en-hi/accuracy"]) == (
        low, high)
    # Only the metrics both score are compared.
    diff = versus(ours, base, "vs_base")
    name = "sts_test/spearman_cosine"
    assert set(diff) == {f"vs_base/{name}", f"vs_base/ci_low/{name}", f"vs_base/ci_high/{name}"}
    expected = paired(ours[name], base[name])
    assert logged_difference(diff, "vs_base", name) == expected
    assert not expected.within_noise and expected.low > 0  # the noisier base is really worse
    assert logged_difference(diff, "vs_model", name) is None
    assert logged_difference({**diff, f"vs_base/{name}": float("nan")}, "vs_base", name) is None
