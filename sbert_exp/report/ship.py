"""The model to ship in words: its description, the recommendation line and record, and the
Markdown of the front and the references."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from sbert_exp.references import ADVICE
from sbert_exp.report import noise
from sbert_exp.report.board import (
    AS_IS,
    Budget,
    describe,
    figures,
    fmt,
    is_reference,
    metric_label,
    served_in,
)
from sbert_exp.report.table import language_metrics, short
from sbert_exp.tracking.registry import REGISTRY_ALIAS


def recommendation_line(row: pd.Series, budget: Budget,
                        registered: tuple[str, str] | None = None, metric: str = "STSb") -> str:
    """One line: the chosen model, its figures, its folder and what the registry holds."""
    within = (f"within {budget.flags()}" + ("" if metric == "STSb" else f", the highest {metric}")
              if budget.flags() else f"no budget: the highest {metric}")
    notes = []
    if pd.notna(row.score_base) and row.score_base:
        notes.append(f"{fmt(100 * row.score / row.score_base, '.1f')}% of base"
                     + ("" if metric == "STSb" else f" on {metric}"))
    notes += _noise(row, noise.STS_METRIC if metric == "STSb" else metric)
    pct = f" ({'; '.join(notes)})" if notes else ""
    folder = (f"model folder {row.model_dir}" if isinstance(row.model_dir, str)
              else "no model folder (the job saved no model)")
    if row.get("reference", row.form == AS_IS):
        form = AS_IS if row.form == AS_IS else row.ref_form
        advice = ADVICE[form].format(base=row.base, peer=row.form)
        folder = f"; model folder {row.model_dir}" if isinstance(row.model_dir, str) else ""
        return (f"recommended ({within}): {describe(row)}, served in {served_in(row)}: "
                f"{figures(row)}; no model the sweep "
                f"trained scores higher{' within the budget' if budget.flags() else ''}: "
                f"{advice}{folder}")
    if registered is not None:
        name, version = registered
        registry = f"registered it as {name} version {version}, alias {REGISTRY_ALIAS}"
    else:
        registry = "(no logged model: run with tracking.log_model=true to register it)"
    return (f"recommended ({within}): {describe(row)}, served in {served_in(row)}: "
            f"{figures(row)}{pct}; {folder}; {registry}")


def recommendation_record(row: pd.Series, budget: Budget,
                          registered: tuple[str, str] | None = None) -> dict:
    """recommendation.json: the chosen candidate's fields, the budget, the registered version."""
    def plain(value: object) -> object:
        if not isinstance(value, str) and pd.isna(value):
            return None
        return value.item() if hasattr(value, "item") else value

    return {**{key: plain(value) for key, value in row.items()},
            "budget": {"max_mb": budget.max_mb, "min_speedup": budget.min_speedup,
                       "min_sts": budget.min_sts},
            "registered": None if registered is None else {
                "name": registered[0], "version": registered[1], "alias": REGISTRY_ALIAS}}


def ship_markdown(df: pd.DataFrame, front: pd.Series, line: str,
                  sweep_dir: Path | None = None) -> str:
    """The "Which model to ship" section: the Pareto front as a table, the recommendation."""
    langs = language_metrics(df)
    head = ["base", "strategy", "keep", "phase", "form", "vocab size", "STSb [95%]", "% of base",
            "STSb difference", *(short(m) for m in langs), "speedup", "disk MB", "model folder"]
    lines = ["## Which model to ship", "",
             "The Pareto front: the models that no other model of the sweep matches or beats "
             f"on {metric_label(df)} (higher), encode speedup (higher) and size (lower) while "
             "beating it on one. Each config offers its saved model and the forms the job "
             "built from it: its export, and its bf16 form where the CPU computes in bf16 "
             "(form); speedup is against the unpruned fp32 model (a form's is timed on CPU); "
             "disk MB is the saved folder, or the fp32 parameters (params) where the job saved "
             "no model. Each score carries its 95% interval, and STSb difference is the paired "
             "difference from what the candidate replaces (see \"Which differences are "
             "real\").", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df[front].iterrows():
        strategy = r.strategy if r.init == "pretrained" else f"{r.strategy} ({r.init} init)"
        mb = fmt(r.mb, ".1f") + (" (params)" if r.mb_from == "params" else "")
        form = f"{r.form} (reference)" if r.get("reference", r.form == AS_IS) else r.form
        cells = [r.base, strategy, str(r.keep), r.phase, form, fmt(r.vocab_size, ".0f"),
                 noise.with_interval(r, noise.STS_METRIC, r.sts), fmt(r.base_pct, ".1f"),
                 _versus(r), *(noise.with_interval(r, m) for m in langs),
                 fmt(r.speed, ".2f") + "x", mb, _folder(r.model_dir, sweep_dir)]
        lines.append("| " + " | ".join(cells) + " |")
    refs = df[is_reference(df)]
    if len(refs) > 1:  # more than the base as it is: every reference, on the front or not
        head = ["reference", "STSb [95%]", "% of base", "STSb difference",
                *(short(m) for m in langs), "speedup", "disk MB", "on the front"]
        lines += ["", "What a user could ship instead, measured like the sweep's models "
                  "(references=[...]; speedup against the same unpruned fp32 model):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, r in refs.iterrows():
            cells = [describe(r), noise.with_interval(r, noise.STS_METRIC, r.sts),
                     fmt(r.base_pct, ".1f"), _versus(r),
                     *(noise.with_interval(r, m) for m in langs), fmt(r.speed, ".2f") + "x",
                     fmt(r.mb, ".1f"), "yes" if front[i] else "no"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", line]
    real = noise.section(df, [noise.STS_METRIC, *langs], ["STSb", *(short(m) for m in langs)],
                         describe)
    return "\n".join(lines) + "\n" + ("\n" + real if real else "")


def _noise(row: pd.Series, metric: str) -> list[str]:
    """The chosen score's 95% interval and its difference from what it replaces, in words."""
    found = [f"95% interval {text}" for text in [noise.interval_text(row, metric)] if text]
    difference = noise.difference(row, metric)
    if difference is not None:
        found.append(f"{difference.words()} vs {row.against}")
    return found


def _versus(row: pd.Series) -> str:
    """The candidate's STSb difference and what it is from, e.g. `-0.0041 [-0.0070, -0.0012]
    vs its fp32 model`."""
    found = noise.difference(row, noise.STS_METRIC)
    return "-" if found is None else f"{found.words()} vs {row.against}"


def _folder(model_dir: str | None, sweep_dir: Path | None) -> str:
    """A model folder, relative to the sweep folder when it is inside it."""
    if not isinstance(model_dir, str):
        return "-"
    if sweep_dir is not None:
        with contextlib.suppress(ValueError):
            return str(Path(model_dir).relative_to(Path(sweep_dir).resolve()))
    return model_dir
