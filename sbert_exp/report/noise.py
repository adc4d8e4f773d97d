"""Each score's noise on the board: its 95% interval and its paired difference from what it is
compared with (the base as it is, or the fp32 model a form was built from), as the jobs logged
them (`sbert_exp.evaluation.intervals`); the cells that show them, and the report's section of
the differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from sbert_exp.evaluation import intervals
from sbert_exp.evaluation.intervals import HIGH, LOW, Difference

STS_METRIC = "sts_test/spearman_cosine"  # the STSb score, as logged

# A candidate's columns: ci_low/<m>, ci_high/<m> (its interval), vs/<m>, vs/ci_low/<m>,
# vs/ci_high/<m> (its difference), and `against`, what the difference is from.
VS = "vs"
AGAINST = {intervals.VS_BASE: "the base", intervals.VS_MODEL: "its fp32 model"}


def columns(get: Callable[[str], object], where: str, against: str | None,
            metrics: Sequence[str]) -> dict[str, object]:
    """One kind of candidate's noise columns: `get(name)` reads a logged metric (a column, or a
    run's value; NaN where absent), `where` is the prefix of its metrics ("" for a job's model
    or a reference, "base_model/", "export/", ...), `against` the difference it logged
    (intervals.VS_BASE or VS_MODEL; None: none)."""
    found: dict[str, object] = {"against": AGAINST.get(against)}
    for m in metrics:
        found[f"{LOW}/{m}"], found[f"{HIGH}/{m}"] = get(f"{where}{LOW}/{m}"), get(
            f"{where}{HIGH}/{m}")
        for part in ("", f"{LOW}/", f"{HIGH}/"):
            found[f"{VS}/{part}{m}"] = (get(f"{where}{against}/{part}{m}") if against
                                        else float("nan"))
    return found


def difference(row: pd.Series, metric: str) -> Difference | None:
    """The candidate's difference on `metric` from what it is compared with (None: not
    logged)."""
    return intervals.logged_difference(row, VS, metric)


def interval_text(row: pd.Series, metric: str) -> str:
    """`[0.805, 0.836]`: the 95% interval logged for `metric` ("" where none was)."""
    low, high = row.get(f"{LOW}/{metric}"), row.get(f"{HIGH}/{metric}")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    return f"[{low:.3f}, {high:.3f}]"


def with_interval(row: pd.Series, metric: str, value: float | None = None) -> str:
    """`0.8207 [0.805, 0.836]`: the score (`value`, else the row's `metric`) and its 95%
    interval (the score alone where no interval was logged; "-" without a score)."""
    value = row.get(metric) if value is None else value
    if value is None or pd.isna(value):
        return "-"
    return f"{value:.4f} {interval_text(row, metric)}".strip()


def words(found: Difference | None) -> str:
    """`-0.0041 [-0.0070, -0.0012]`, with ", within noise" where the interval holds 0; "-"
    where no difference was logged."""
    return "-" if found is None else found.words()


def difference_cell(row: pd.Series, metric: str) -> str:
    """A candidate's `difference` in `words`."""
    return words(difference(row, metric))


def section(df: pd.DataFrame, metrics: Sequence[str], names: Sequence[str],
            describe: Callable[[pd.Series], str]) -> str:
    """The report's "Which differences are real" section: each candidate's paired difference
    from what it replaces, on every score (`metrics`, headed `names`), as a table."""
    logged = [f"{VS}/{m}" for m in metrics if f"{VS}/{m}" in df]
    rows = df[df[logged].notna().any(axis=1)] if logged else df.iloc[:0]
    if not len(rows):
        return ""
    head = ["candidate", "against", *names]
    lines = ["## Which differences are real", "",
             "Each score against what the candidate replaces, on the same pairs (or "
             "sentences): a trained model and a reference against the base as it is, a form "
             "against the fp32 model it was built from. The difference, then its 95% interval "
             f"from {intervals.RESAMPLES:,} seeded resamples of the set's items drawn for both "
             "together (a paired bootstrap); \"within noise\" where the interval holds 0: the "
             "set cannot tell the two apart.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in rows.iterrows():
        cells = [describe(r), r.against, *(difference_cell(r, m) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
