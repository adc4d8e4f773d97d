"""The board a model to ship is chosen from: the jobs and the references, their Pareto front
of score, speed and size, and the best within a budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sbert_exp.errors import UserError
from sbert_exp.evaluation import intervals
from sbert_exp.references import REFERENCE_TAG
from sbert_exp.report import noise
from sbert_exp.report.table import (
    COLUMNS,
    DERIVED,
    LANGUAGE_PREFIXES,
    STS,
    language_metrics,
    short,
)
from sbert_exp.tracking.tags import MODEL_DIR_TAG, REUSED_TAG

AS_IS = "as_is"  # the form of the reference candidate: the base model as it is, no pruning


NO_GAIN = (1.05, 0.95)  # a speedup below 1.05x and a size above 95% of the base's: no gain


# candidate column -> 1: higher is better, -1: lower
OBJECTIVES = {"score": 1, "speed": 1, "mb": -1}


def reference_runs(runs: Sequence[dict]) -> pd.DataFrame:
    """One row per reference run of the sweep (`references=[...]`; see sbert_exp.references):
    its base model, name, form and final metrics (STSb `sts`, `speed`, `mb`, language ones)."""
    rows = []
    for run in runs:
        if run["status"] != "FINISHED" or REFERENCE_TAG not in run["tags"]:
            continue
        p, m = run["params"], run["metrics"]
        rows.append({"base": p["base_model.name"], "name": p["reference.name"],
                     "ref_form": p["reference.form"], "label": p["reference.label"],
                     "sts": m.get(COLUMNS["sts_final"]), "speed": m.get(COLUMNS["speedup"]),
                     "mb": m.get(COLUMNS["disk_mb"]), "model_dir": run["tags"].get(MODEL_DIR_TAG),
                     "run_id": run["tags"].get(REUSED_TAG, run["run_id"]),
                     **{k: v for k, v in m.items()
                        if k.startswith((*LANGUAGE_PREFIXES, *intervals.PREFIXES))}})
    return pd.DataFrame(rows).drop_duplicates(["base", "name"]) if rows else pd.DataFrame()


def candidates(df: pd.DataFrame, metric: str = STS,
               refs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The models a sweep's rows offer to ship, with STSb `sts`, encode speedup `speed`, size `mb`,
    each language metric, and `score`: the quality they are chosen by (`metric`: STSb, or a
    language metric such as bitext/en-hi/accuracy; `score_base`, the base model's).
    `reference`: True for what a user could ship instead, the base as it is and each of `refs`
    (`reference_runs`), whose `form` is the reference's name.

    Each row gives its saved model (`form` "model": `sts_final`, `speedup`, `disk_mb`, or the fp32
    parameter size `size_mb` where the job saved no model, `mb_from` "params") and, right after
    it, each form the job built from it (`DERIVED`): its export (`form` the backend:
    `export_sts`, `export_speedup`, `export_disk_mb`, the folder model_<backend> beside the
    model's) and its bf16 form (`bf16_sts`, ..., the folder model_bf16).
    """
    df = df.reset_index(drop=True)
    langs = language_metrics(df)
    if metric != STS and metric not in langs:
        raise UserError(f"--metric {metric}: no run of the sweep logged it: choose {STS}"
                        + "".join(f", {m}" for m in langs))
    disk, sizes = _num(df, "disk_mb"), _num(df, "size_mb")
    mb_from = pd.Series("params", index=df.index).where(disk.isna(), "disk").where(
        disk.notna() | sizes.notna(), None)
    scored = [noise.STS_METRIC, *langs]  # the scores with an interval
    saved = df[SHIP_COLUMNS].assign(
        form="model", sts=_num(df, "sts_final"), speed=_num(df, "speedup"),
        mb=disk.fillna(sizes), mb_from=mb_from, model_dir=df.model_dir, _o=SLOTS * df.index,
        **noise.columns(lambda k: _metric(df, k), "", intervals.VS_BASE, scored))
    # Each row's base model as it is, on the chosen quality: the level no pruning would give.
    nan = pd.Series(float("nan"), index=df.index)
    base = _num(df, "base_sts") if metric == STS else (
        _num(df, f"base_model/{metric}") if f"base_model/{metric}" in df else nan)
    levels = {"score_base": base, "base_mb": _num(df, "base_disk_mb")}
    parts = [saved.assign(**levels, **{m: _num(df, m) for m in langs})]
    parts += _derived(df, levels, langs)
    # The base model as it is, once per base: what a user has without pruning (speedup 1 by
    # definition; its size, the folder it loads from), on the same board.
    first = df[_num(df, "base_sts").notna()].drop_duplicates("base")
    if len(first):
        parts.append(_as_is(df, first, levels, langs))
    # What a user could ship instead (`references=[...]`), beside the base it replaces.
    rows = _reference_rows(refs, first, len(df), levels, langs)
    if rows:
        parts.append(pd.DataFrame(rows))
    out = pd.concat(parts).sort_values("_o").drop(columns="_o").reset_index(drop=True)
    if "ref_form" not in out:
        out["ref_form"] = None
    for column in ("sts", "speed", "mb", "score_base", "base_mb", *langs,
                   *(c for c in out.columns if c.startswith(NOISE_COLUMNS))):
        out[column] = pd.to_numeric(out[column])
    out["reference"] = out.form.eq(AS_IS) | out.ref_form.notna()
    out["base_pct"] = 100 * out.sts / pd.to_numeric(out.base_sts)
    out["score"] = out.sts if metric == STS else out[metric]
    out.attrs["metric"] = metric
    return out


def _num(df: pd.DataFrame, column: str) -> pd.Series:
    """A metric column as numbers (a metric that no run logged is a column of None)."""
    return pd.to_numeric(df[column])


def _metric(df: pd.DataFrame, column: str) -> pd.Series:
    """`_num`, or NaN where no run of `df` logged the metric."""
    return _num(df, column) if column in df else pd.Series(float("nan"), index=df.index)


NOISE_COLUMNS = (f"{intervals.LOW}/", f"{intervals.HIGH}/", f"{noise.VS}/")


SLOTS = 1 + len(DERIVED)  # board rows a job can give: its saved model and its derived forms


def _derived(df: pd.DataFrame, levels: dict[str, pd.Series], langs: list[str]
             ) -> list[pd.DataFrame]:
    """The forms built from the rows' saved models, each right after its saved model."""
    parts = []
    for slot, prefix in enumerate(DERIVED, start=1):
        built = _num(df, f"{prefix}_sts").notna() | _num(df, f"{prefix}_disk_mb").notna()
        if not built.any():
            continue
        e = df[built]
        names = e.export if prefix == "export" else pd.Series(prefix, index=e.index)
        folders = [str(Path(d).parent / f"model_{form}") if isinstance(d, str) else None
                   for d, form in zip(e.model_dir, names, strict=True)]
        logged = f"logged_{prefix}"
        parts.append(e[SHIP_COLUMNS].assign(
            form=names, sts=_num(df, f"{prefix}_sts")[built],
            speed=_num(df, f"{prefix}_speedup")[built], mb=_num(df, f"{prefix}_disk_mb")[built],
            mb_from="disk", model_dir=folders, _o=SLOTS * e.index + slot,
            logged_model=e[logged] if logged in e else None,
            **{k: v[built] for k, v in levels.items()},
            **{m: (_num(df, f"{prefix}/{m}")[built] if f"{prefix}/{m}" in df else float("nan"))
               for m in langs},
            **noise.columns(lambda k, b=built: _metric(df, k)[b], f"{prefix}/", intervals.VS_MODEL,
                            [noise.STS_METRIC, *langs])))
    return parts


def _as_is(df: pd.DataFrame, first: pd.DataFrame, levels: dict[str, pd.Series],
           langs: list[str]) -> pd.DataFrame:
    """The base model as it is: one row per base (`first`, each base's first row)."""
    at = first.index
    return first[SHIP_COLUMNS].assign(
        form=AS_IS, init="pretrained", strategy="none", keep=first.depth,
        kept_layers=[" ".join(map(str, range(d))) for d in first.depth], phase="none",
        vocab_size=float("nan"), run_id=None, logged_model=None,
        sts=_num(df, "base_sts")[at], speed=1.0, mb=levels["base_mb"][at], mb_from="disk",
        model_dir=None, _o=SLOTS * len(df) + at, **{k: v[at] for k, v in levels.items()},
        **{m: (_num(df, f"base_model/{m}")[at] if f"base_model/{m}" in df else float("nan"))
           for m in langs},
        **noise.columns(lambda k: _metric(df, k)[at], "base_model/", None,
                        [noise.STS_METRIC, *langs]))


def _reference_rows(refs: pd.DataFrame | None, first: pd.DataFrame, jobs: int,
                    levels: dict[str, pd.Series], langs: list[str]) -> list[dict]:
    """A row per reference run whose base has a job in the sweep."""
    rows = []
    for i, (_, r) in enumerate((refs if refs is not None else pd.DataFrame()).iterrows()):
        at = first.index[first.base == r.base]
        if not len(at):
            continue  # no job of the sweep on that base
        j = at[0]
        rows.append({
            "base": r.base, "init": "pretrained", "strategy": "none", "keep": first.depth[j],
            "kept_layers": "", "phase": "none", "vocab_size": float("nan"),
            "base_sts": first.base_sts[j], "run_id": r.run_id, "logged_model": None,
            "form": r["name"], "ref_form": r.ref_form, "label": r.label, "sts": r.sts,
            "speed": r.speed, "mb": r.mb, "mb_from": "disk", "model_dir": r.model_dir,
            "_o": 2 * SLOTS * jobs + i, **{k: v[j] for k, v in levels.items()},
            **{m: r.get(m, float("nan")) for m in langs},
            **noise.columns(lambda k, r=r: r.get(k, float("nan")), "", intervals.VS_BASE,
                            [noise.STS_METRIC, *langs])})
    return rows


def is_reference(df: pd.DataFrame) -> pd.Series:
    """The candidates a user could ship instead of a trained one (the base as it is, and the
    `references=[...]` runs)."""
    return df["reference"] if "reference" in df else df.form.eq(AS_IS)


def no_gain(df: pd.DataFrame) -> pd.Series:
    """Trained candidates that score below their base model as it is and gain nothing over it:
    a speedup under 1.05x and a size of at least 95% of the base's (or the base's size unknown).
    They are never recommended: the base as it is would be better."""
    speed, size = NO_GAIN
    return (~is_reference(df) & (df.score < df.score_base) & (df.speed.fillna(1.0) < speed)
            & (df.base_mb.isna() | (df.mb >= size * df.base_mb)))


def pareto_front(df: pd.DataFrame) -> pd.Series:
    """True for the rows that no other row dominates: at least as good on `sts` (higher),
    `speed` (higher) and `mb` (lower), and better on one. Rows equal on all three are all on the
    front. A row without `sts` is never on the front; a missing speed or size counts as the worst.
    """
    import numpy as np

    values = np.column_stack([sign * pd.to_numeric(df[column]).to_numpy(dtype=float)
                              for column, sign in OBJECTIVES.items()]).reshape(len(df), -1)
    values[np.isnan(values)] = -np.inf
    # [i, j]: row j is at least as good as row i on every objective, and better on one.
    at_least = (values[None, :, :] >= values[:, None, :]).all(axis=2)
    better = (values[None, :, :] > values[:, None, :]).any(axis=2)
    dominated = (at_least & better).any(axis=1)
    return pd.Series(~dominated & pd.to_numeric(df.score).notna().to_numpy(), index=df.index)


@dataclass(frozen=True)
class Budget:
    """What a shipped model must meet; None: no bound."""

    max_mb: float | None = None  # size, as `mb`
    min_speedup: float | None = None
    min_sts: float | None = None

    def __post_init__(self) -> None:
        for flag, value in self.bounds():
            if value is not None and not value > 0:
                raise UserError(f"{flag} must be positive")
        if self.min_sts is not None and self.min_sts > 1:
            raise UserError("--min-sts must be at most 1 (STSb is a Spearman correlation)")

    def bounds(self) -> list[tuple[str, float | None]]:
        return [("--max-mb", self.max_mb), ("--min-speedup", self.min_speedup),
                ("--min-sts", self.min_sts)]

    def flags(self) -> str:
        """The budget as the command line gave it ("" when there is none)."""
        return " ".join(f"{flag} {value:g}" for flag, value in self.bounds() if value is not None)

    def meets(self, df: pd.DataFrame) -> pd.Series:
        """Whether each candidate meets every bound (a missing value meets none)."""
        ok = pd.Series(True, index=df.index)
        if self.max_mb is not None:
            ok &= df.mb <= self.max_mb
        if self.min_speedup is not None:
            ok &= df.speed >= self.min_speedup
        if self.min_sts is not None:
            ok &= df.sts >= self.min_sts
        return ok

    def shortfall(self, df: pd.DataFrame) -> pd.Series:
        """How far each candidate misses the budget: the sum of its misses relative to each
        bound (0: within it; a missing value: inf)."""
        misses = []
        if self.max_mb is not None:
            misses.append(df.mb / self.max_mb - 1)
        if self.min_speedup is not None:
            misses.append(1 - df.speed / self.min_speedup)
        if self.min_sts is not None:
            misses.append(1 - df.sts / self.min_sts)
        total = pd.Series(0.0, index=df.index)
        for miss in misses:
            total += pd.to_numeric(miss).clip(lower=0).fillna(float("inf"))
        return total


def recommend(df: pd.DataFrame, front: pd.Series, budget: Budget | None = None) -> int:
    """The index of the front's candidate with the highest `score` (STSb, or the metric
    `candidates` was asked for) among those that meet `budget`
    (ties: the faster, then the smaller). The best candidate that meets a budget is always on the
    front, or tied with one that is. A UserError naming the closest candidate when none meets it.
    """
    budget = budget or Budget()
    on_front = df[front & ~no_gain(df)]
    if not len(on_front):
        raise UserError(f"no run of the sweep has a {metric_label(df)} score to choose a model "
                        "by")
    fits = on_front[budget.meets(on_front)]
    if not len(fits):
        closest = df.loc[on_front.assign(_gap=budget.shortfall(on_front))
                         .sort_values(["_gap", "score"], ascending=[True, False]).index[0]]
        raise UserError(f"no run of the sweep meets {budget.flags()} (closest: "
                        f"{describe(closest)}: {figures(closest)}): loosen the budget")
    return fits.sort_values(["score", "speed", "mb"], ascending=[False, False, True],
                            na_position="last", kind="stable").index[0]


SHIP_COLUMNS = ["base", "init", "strategy", "keep", "kept_layers", "phase", "vocab_size",
                "base_sts", "run_id", "logged_model"]


def metric_label(df: pd.DataFrame) -> str:
    """What candidates are chosen by: `STSb`, or the language metric's name."""
    metric = df.attrs.get("metric", STS)
    return "STSb" if metric == STS else metric


def fmt(x: float | None, spec: str) -> str:
    """`x` formatted by `spec`, or "-" when it is missing."""
    return "-" if x is None or pd.isna(x) else format(x, spec)


def describe(row: pd.Series) -> str:
    """`base strategy keep k phase`, with the init when random and the export's backend."""
    if row.form == AS_IS:
        return f"{row.base} as it is (the base model: no pruning, no training)"
    if row.get("reference", False):
        return row.label
    text = f"{row.base} {row.strategy} keep {row.keep} {row.phase}"
    if row.init != "pretrained":
        text += f" ({row.init} init)"
    return text if row.form == "model" else f"{text} as {row.form}"


# The arithmetic each form encodes in: a job's form, or a reference's (`ref_form`).
SERVED_IN = {"model": "fp32", AS_IS: "fp32", "onnx": "fp32", "onnx_int8": "int8",
             "torch_int8": "int8", "bf16": "bf16", "int8": "int8", "trimmed": "fp32",
             "trimmed_int8": "int8", "static": "fp32", "peer": "fp32"}


def served_in(row: pd.Series) -> str:
    """fp32, bf16 or int8: the precision a candidate is served in, as it was measured."""
    form = row.ref_form if isinstance(row.get("ref_form"), str) else row.form
    return SERVED_IN.get(form, "fp32")


def figures(row: pd.Series) -> str:
    """`0.7100 STSb, 120.0 MB, 5.2x`: the three objectives of a candidate."""
    params = " (fp32 params)" if row.mb_from == "params" else ""
    speed = f"{row.speed:.1f}x" if pd.notna(row.speed) else "speed not timed"
    langs = "".join(f", {fmt(row[m], '.4f')} {short(m)}" for m in row.index
                    if m.startswith(LANGUAGE_PREFIXES))
    return f"{fmt(row.sts, '.4f')} STSb{langs}, {fmt(row.mb, '.1f')} MB{params}, {speed}"
