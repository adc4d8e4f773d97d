"""Sweep report: one row per config from the sweep's MLflow runs, as CSV, Markdown and plots, and
the model to ship: the Pareto front of STSb, speed and size, the best within a budget."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sbert_exp.errors import UserError
from sbert_exp.pruning import pruning_label
from sbert_exp.references import ADVICE, REFERENCE_TAG
from sbert_exp.sweeper import SWEEP_FILE, read_sweep_file
from sbert_exp.tracking import (
    CONFIG_KEY_TAG,
    LOGGED_MODEL_TAG,
    MODEL_DIR_TAG,
    REUSED_TAG,
    child_runs,
    finished_runs_of,
    log_artifacts,
)

log = logging.getLogger(__name__)

COLUMNS = {  # report column -> MLflow metric
    "params_total": "model/params_total",
    "params_embeddings": "model/params_embeddings",
    "params_encoder": "model/params_encoder",
    "speedup": "speed/speedup_vs_unpruned",
    "sts_before": "before/sts_test/spearman_cosine",
    "sts_after_nli": "after_nli/sts_test/spearman_cosine",
    "sts_after_distill": "after_distill/sts_test/spearman_cosine",
    "sts_after_sts": "after_sts/sts_test/spearman_cosine",
    "sts_final": "sts_test/spearman_cosine",
    "nli_accuracy": "nli_test/accuracy",
    "base_sts": "base_model/sts_test/spearman_cosine",
    "base_disk_mb": "base_model/disk_mb",  # the folder the base model loads from, MiB
    "job_s": "time/total_s",
    "vocab_size": "model/vocab_size",
    "size_mb": "model/size_mb",  # the parameters and buffers as loaded (fp32), MiB
    "disk_mb": "model/disk_mb",  # the saved model folder, MiB
    "export_sts": "export/sts_test/spearman_cosine",
    "export_speedup": "export/speedup_vs_unpruned",
    "export_disk_mb": "export/disk_mb",
}
# The language sets' metrics (sbert_exp.languages) are columns of their own, named as logged:
# bitext/<set>/accuracy, agreement/<set>/spearman, with base_model/ and export/ variants.
LANGUAGE_PREFIXES = ("bitext/", "agreement/")
LANGUAGE_COLUMNS = tuple(f"{where}{p}" for where in ("", "base_model/", "export/")
                         for p in LANGUAGE_PREFIXES)
STS = "sts"  # --metric's default: STSb test Spearman
REGISTRY_ALIAS = "recommended"  # the registered version of the model to ship
# `layers`: explicit pruning.layers; `none`: every layer kept, whatever was asked.
STRATEGY_ORDER = {name: i for i, name in enumerate((
    "top", "middle", "bottom", "alternate", "block_influence", "angular", "greedy_dev", "layers",
    "none"))}
LINE_STRATEGIES = [s for s in STRATEGY_ORDER if s not in ("layers", "none")]


def latest_sweep(root: Path = Path("multirun")) -> Path:
    """The newest sweep under `root` with a FINISHED job run; newer ones without are skipped."""
    found = sorted(root.glob(f"*/*/{SWEEP_FILE}"), reverse=True)
    if not found:
        raise UserError(f"no sweep with a {SWEEP_FILE} under {root}/: run a sweep first "
                        "(make sweep), or pass --sweep DIR")
    reasons = []
    for path in found:
        reason = _nothing_to_report(path.parent)
        if reason is None:
            return path.parent
        log.info("skipping sweep %s: %s", path.parent, reason)
        reasons.append(reason)
    raise UserError(f"no sweep under {root}/ has a finished job run (the newest, "
                    f"{found[0].parent}: {reasons[0]}): run a sweep (make sweep), "
                    "or pass --sweep DIR")


def _nothing_to_report(sweep_dir: Path) -> str | None:
    """Why the sweep has no FINISHED job run to report on; None when it has one."""
    info = read_sweep_file(sweep_dir)
    if not info.get("parent_run_id"):
        return "no parent run (tracking was off)"
    try:
        runs = child_runs(info["tracking_uri"], info["parent_run_id"])
    except Exception as e:  # a store that is gone or unreachable: the sweep cannot be reported
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return f"its runs cannot be read from {info['tracking_uri']} ({type(e).__name__}: {first})"
    statuses = Counter(run["status"] for run in runs)
    if statuses["FINISHED"]:
        return None
    if not runs:
        return "no job run"
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    return f"no finished job run ({counts})"


# Params that decide a job's result, pruning aside: jobs that agree on these are comparable.
RESULT_PARAMS = ("base_model.", "phase.", "dataset.", "eval.", "seed")


def signature(params: Mapping[str, str]) -> str:
    """What a pruned job and its unpruned reference share: the result params but pruning, init."""
    return json.dumps(sorted((k, v) for k, v in params.items()
                             if k.startswith(RESULT_PARAMS) and k != "base_model.init"))


def is_unpruned_reference(params: Mapping[str, str]) -> bool:
    """Pretrained weights and every layer kept: what `% of unpruned` divides by."""
    kept = params["pruning.kept_layers"].split(",")
    return (params.get("base_model.init", "pretrained") == "pretrained"
            and len(kept) == int(params["base_model.num_layers"]))


def table(runs: Sequence[dict], others: Sequence[dict] = ()) -> pd.DataFrame:
    """One row per distinct config of the sweep's `runs` (jobs that reused a run collapse).

    `% of unpruned` divides by the unpruned pretrained run with the same signature: the sweep's
    own when it has one, else the earliest finished one among `others` (e.g. earlier sweeps).
    """
    rows: list[dict] = []
    references: dict[str, tuple[float | None, str]] = {}
    runs, others = ([r for r in group if REFERENCE_TAG not in r["tags"]]
                    for group in (runs, others))
    for own, group in ((False, others), (True, runs)):
        for run in group:
            if run["status"] == "FINISHED" and is_unpruned_reference(run["params"]):
                value = (run["metrics"].get(COLUMNS["sts_final"]),
                         run["tags"].get(REUSED_TAG, run["run_id"]))
                if own:
                    references[signature(run["params"])] = value
                else:  # the earliest of the others
                    references.setdefault(signature(run["params"]), value)
    for run in runs:
        if run["status"] != "FINISHED":
            continue
        p, m = run["params"], run["metrics"]
        depth, kept = int(p["base_model.num_layers"]), p["pruning.kept_layers"].split(",")
        explicit = p.get("pruning.layers", "null") != "null"
        # The label's first word: the strategy, or `layers` for explicit pruning.layers.
        label = pruning_label(len(kept), p["pruning.strategy"], kept if explicit else None)[0]
        score, reference = references.get(signature(p), (None, None))
        row = {
            "config_key": run["tags"].get(CONFIG_KEY_TAG, run["run_id"]),
            "base": p["base_model.name"], "init": p.get("base_model.init", "pretrained"),
            # Keeping every layer is the unpruned model, whatever the strategy says.
            "strategy": "none" if len(kept) == depth else label,
            "keep": len(kept), "kept_layers": " ".join(kept), "depth": depth,
            "phase": p.get("phase.name", "-"),
        }
        row.update({col: m.get(metric) for col, metric in COLUMNS.items()})
        row.update({k: v for k, v in m.items() if k.startswith(LANGUAGE_COLUMNS)})
        row.update(unpruned_sts=score, unpruned_run=reference)
        row.update(export=p.get("export", "none"), model_dir=run["tags"].get(MODEL_DIR_TAG),
                   logged_model=run["tags"].get(LOGGED_MODEL_TAG), run_id=run["run_id"])
        rows.append(row)
    if not rows:
        raise UserError("the sweep has no finished job runs to report on")
    df = pd.DataFrame(rows).drop_duplicates("config_key").drop(columns="config_key")
    # A metric no run logged is a column of None: numbers (NaN) for the arithmetic and plots.
    numeric = [*COLUMNS, *(c for c in df.columns if "/" in c)]
    df[numeric] = df[numeric].apply(pd.to_numeric)
    df["retained_pct"] = 100 * df.sts_final / df.unpruned_sts
    # Against the base model as it is (unpruned, pretrained, untrained): what a shipped model
    # replaces.
    df["base_pct"] = 100 * df.sts_final / pd.to_numeric(df.base_sts)
    order = df.strategy.map(STRATEGY_ORDER)
    # One config's phases sit next to each other, so they compare side by side.
    return (df.assign(_o=order)
            .sort_values(["base", "init", "keep", "_o", "kept_layers", "phase"])
            .drop(columns="_o"))


def language_metrics(df: pd.DataFrame) -> list[str]:
    """The language metrics some run of `df` logged (final values), sorted."""
    return sorted(c for c in df.columns if c.startswith(LANGUAGE_PREFIXES))


def short(metric: str) -> str:
    """`en-hi acc` for bitext/en-hi/accuracy, `hi agr` for agreement/hi/spearman."""
    kind, name, _ = metric.split("/")
    return f"{name} {'acc' if kind == 'bitext' else 'agr'}"


def references_outside(df: pd.DataFrame) -> dict[str, str]:
    """base -> run id of the unpruned references that are not runs of this sweep."""
    inside = df[(df.strategy == "none") & (df.init == "pretrained")]
    return {r.base: r.unpruned_run for r in df.itertuples()
            if isinstance(r.unpruned_run, str) and r.base not in set(inside.base)}


def markdown(df: pd.DataFrame) -> str:
    head = ["base", "init", "strategy", "keep", "kept layers", "phase",
            "params total / emb / enc (M)", "speedup", "STSb before", "after NLI",
            "after distill", "after STS", "NLI acc", "% of unpruned", "% of base", "job (s)"]
    langs = language_metrics(df)
    head += [short(m) for m in langs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None or pd.isna(x) else format(x, fmt)

    for r in df.itertuples():
        params = (f"{r.params_total / 1e6:.1f} / {r.params_embeddings / 1e6:.1f} / "
                  f"{r.params_encoder / 1e6:.1f}")
        cells = [r.base, r.init, r.strategy, str(r.keep), r.kept_layers, r.phase, params,
                 f(r.speedup, ".2f") + "x", f(r.sts_before, ".4f"), f(r.sts_after_nli, ".4f"),
                 f(r.sts_after_distill, ".4f"), f(r.sts_after_sts, ".4f"),
                 f(r.nli_accuracy, ".3f"), f(r.retained_pct, ".1f"), f(r.base_pct, ".1f"),
                 f(r.job_s, ".0f")]
        cells += [f(df.at[r.Index, m], ".4f") for m in langs]
        lines.append("| " + " | ".join(cells) + " |")
    for base, run_id in references_outside(df).items():
        score = df.unpruned_sts[df.base == base].iloc[0]
        lines.append(f"\n% of unpruned for {base}: against the unpruned run {run_id} "
                     f"(STSb {score:.4f}), which is not part of this sweep.")
    bases = df.dropna(subset=["base_sts"]).drop_duplicates("base")
    if len(bases):
        levels = ", ".join(f"{r.base} {r.base_sts:.4f}" for r in bases.itertuples())
        lines.append(f"\n% of unpruned: against the unpruned model with the same training; "
                     f"% of base: against the base model as it is, no training ({levels}).")
    for m in langs:
        base = f"base_model/{m}"
        if base in df.columns and df[base].notna().any():
            levels = ", ".join(f"{r.base} {r[base]:.4f}" for _, r in
                               df.dropna(subset=[base]).drop_duplicates("base").iterrows())
            lines.append(f"\n{short(m)}: {m}; the base model as it is: {levels}.")
    return "\n".join(lines) + "\n"


# Which model to ship: every config's saved model and, where the job exported it, the export are
# candidates, each with its own STSb, speed and size (an int8 export scores differently).
SHIP_COLUMNS = ["base", "init", "strategy", "keep", "kept_layers", "phase", "vocab_size",
                "base_sts", "run_id", "logged_model"]
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
                     **{k: v for k, v in m.items() if k.startswith(LANGUAGE_PREFIXES)}})
    return pd.DataFrame(rows).drop_duplicates(["base", "name"]) if rows else pd.DataFrame()


def candidates(df: pd.DataFrame, metric: str = STS,
               refs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The models a sweep's rows offer to ship, with STSb `sts`, encode speedup `speed`, size `mb`,
    each language metric, and `score`: the quality they are chosen by (`metric`: STSb, or a
    language metric such as bitext/en-hi/accuracy; `score_base`, the base model's).
    `reference`: True for what a user could ship instead, the base as it is and each of `refs`
    (`reference_runs`), whose `form` is the reference's name.

    Each row gives its saved model (`form` "model": `sts_final`, `speedup`, `disk_mb`, or the fp32
    parameter size `size_mb` where the job saved no model, `mb_from` "params") and, where the job
    exported it, the export right after it (`form` the backend: `export_sts`, `export_speedup`,
    `export_disk_mb`, the folder model_<backend> beside the model's).
    """
    df = df.reset_index(drop=True)

    def num(column: str) -> pd.Series:  # a metric that no run logged is a column of None
        return pd.to_numeric(df[column])

    disk, sizes = num("disk_mb"), num("size_mb")
    mb_from = pd.Series("params", index=df.index).where(disk.isna(), "disk").where(
        disk.notna() | sizes.notna(), None)
    saved = df[SHIP_COLUMNS].assign(
        form="model", sts=num("sts_final"), speed=num("speedup"), mb=disk.fillna(sizes),
        mb_from=mb_from, model_dir=df.model_dir, _o=2 * df.index)
    langs = language_metrics(df)
    if metric != STS and metric not in langs:
        raise UserError(f"--metric {metric}: no run of the sweep logged it: choose {STS}"
                        + "".join(f", {m}" for m in langs))
    # Each row's base model as it is, on the chosen quality: the level no pruning would give.
    nan = pd.Series(float("nan"), index=df.index)
    base = num("base_sts") if metric == STS else (
        num(f"base_model/{metric}") if f"base_model/{metric}" in df else nan)
    base_mb = num("base_disk_mb")
    saved = saved.assign(score_base=base, base_mb=base_mb, **{m: num(m) for m in langs})
    parts = [saved]
    exported = num("export_sts").notna() | num("export_disk_mb").notna()
    if exported.any():
        e = df[exported]
        folders = [str(Path(d).parent / f"model_{form}") if isinstance(d, str) else None
                   for d, form in zip(e.model_dir, e.export, strict=True)]
        parts.append(e[SHIP_COLUMNS].assign(
            form=e.export, sts=num("export_sts")[exported], speed=num("export_speedup")[exported],
            mb=num("export_disk_mb")[exported], mb_from="disk", model_dir=folders,
            _o=2 * e.index + 1, score_base=base[exported], base_mb=base_mb[exported],
            **{m: (num(f"export/{m}")[exported] if f"export/{m}" in df else float("nan"))
               for m in langs}))
    # The base model as it is, once per base: what a user has without pruning (speedup 1 by
    # definition; its size, the folder it loads from), on the same board.
    first = df[num("base_sts").notna()].drop_duplicates("base")
    if len(first):
        parts.append(first[SHIP_COLUMNS].assign(
            form=AS_IS, init="pretrained", strategy="none", keep=first.depth,
            kept_layers=[" ".join(map(str, range(d))) for d in first.depth], phase="none",
            vocab_size=float("nan"), run_id=None, logged_model=None,
            sts=num("base_sts")[first.index], speed=1.0, mb=base_mb[first.index],
            mb_from="disk", model_dir=None,
            _o=2 * len(df) + first.index, score_base=base[first.index],
            base_mb=base_mb[first.index],
            **{m: (num(f"base_model/{m}")[first.index] if f"base_model/{m}" in df
                   else float("nan")) for m in langs}))
    # What a user could ship instead (`references=[...]`), beside the base it replaces.
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
            "_o": 4 * len(df) + i, "score_base": base[j], "base_mb": base_mb[j],
            **{m: r.get(m, float("nan")) for m in langs}})
    if rows:
        parts.append(pd.DataFrame(rows))
    out = pd.concat(parts).sort_values("_o").drop(columns="_o").reset_index(drop=True)
    if "ref_form" not in out:
        out["ref_form"] = None
    for column in ("sts", "speed", "mb", "score_base", "base_mb", *langs):
        out[column] = pd.to_numeric(out[column])
    out["reference"] = out.form.eq(AS_IS) | out.ref_form.notna()
    out["base_pct"] = 100 * out.sts / pd.to_numeric(out.base_sts)
    out["score"] = out.sts if metric == STS else out[metric]
    out.attrs["metric"] = metric
    return out


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


def metric_label(df: pd.DataFrame) -> str:
    """What candidates are chosen by: `STSb`, or the language metric's name."""
    metric = df.attrs.get("metric", STS)
    return "STSb" if metric == STS else metric


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None or pd.isna(x) else format(x, fmt)


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


def figures(row: pd.Series) -> str:
    """`0.7100 STSb, 120.0 MB, 5.2x`: the three objectives of a candidate."""
    params = " (fp32 params)" if row.mb_from == "params" else ""
    speed = f"{row.speed:.1f}x" if pd.notna(row.speed) else "speed not timed"
    langs = "".join(f", {_f(row[m], '.4f')} {short(m)}" for m in row.index
                    if m.startswith(LANGUAGE_PREFIXES))
    return f"{_f(row.sts, '.4f')} STSb{langs}, {_f(row.mb, '.1f')} MB{params}, {speed}"


def recommendation_line(row: pd.Series, budget: Budget,
                        registered: tuple[str, str] | None = None, metric: str = "STSb") -> str:
    """One line: the chosen model, its figures, its folder and what the registry holds."""
    within = (f"within {budget.flags()}" + ("" if metric == "STSb" else f", the highest {metric}")
              if budget.flags() else f"no budget: the highest {metric}")
    pct = ""
    if pd.notna(row.score_base) and row.score_base:
        pct = f" ({_f(100 * row.score / row.score_base, '.1f')}% of base"
        pct += ")" if metric == "STSb" else f" on {metric})"
    folder = (f"model folder {row.model_dir}" if isinstance(row.model_dir, str)
              else "no model folder (the job saved no model)")
    if row.get("reference", row.form == AS_IS):
        form = AS_IS if row.form == AS_IS else row.ref_form
        advice = ADVICE[form].format(base=row.base, peer=row.form)
        folder = f"; model folder {row.model_dir}" if isinstance(row.model_dir, str) else ""
        return (f"recommended ({within}): {describe(row)}: {figures(row)}; no model the sweep "
                f"trained scores higher{' within the budget' if budget.flags() else ''}: "
                f"{advice}{folder}")
    if registered is not None:
        name, version = registered
        what = "the job's logged model (before export)" if row.form != "model" else "it"
        registry = f"registered {what} as {name} version {version}, alias {REGISTRY_ALIAS}"
    else:
        registry = "(no logged model: run with tracking.log_model=true to register it)"
    return f"recommended ({within}): {describe(row)}: {figures(row)}{pct}; {folder}; {registry}"


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
    head = ["base", "strategy", "keep", "phase", "form", "vocab size", "STSb", "% of base",
            *(short(m) for m in langs), "speedup", "disk MB", "model folder"]
    lines = ["## Which model to ship", "",
             "The Pareto front: the models that no other model of the sweep matches or beats "
             f"on {metric_label(df)} (higher), encode speedup (higher) and size (lower) while "
             "beating it on "
             "one. Each config offers its saved model and, where the job exported it, the "
             "export (form); speedup is against the unpruned model (an export's is timed on "
             "CPU); disk MB is the saved folder, or the fp32 parameters (params) where the job "
             "saved no model.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df[front].iterrows():
        strategy = r.strategy if r.init == "pretrained" else f"{r.strategy} ({r.init} init)"
        mb = _f(r.mb, ".1f") + (" (params)" if r.mb_from == "params" else "")
        form = f"{r.form} (reference)" if r.get("reference", r.form == AS_IS) else r.form
        cells = [r.base, strategy, str(r.keep), r.phase, form, _f(r.vocab_size, ".0f"),
                 _f(r.sts, ".4f"), _f(r.base_pct, ".1f"), *(_f(r[m], ".4f") for m in langs),
                 _f(r.speed, ".2f") + "x", mb, _folder(r.model_dir, sweep_dir)]
        lines.append("| " + " | ".join(cells) + " |")
    refs = df[is_reference(df)]
    if len(refs) > 1:  # more than the base as it is: every reference, on the front or not
        head = ["reference", "STSb", "% of base", *(short(m) for m in langs), "speedup",
                "disk MB", "on the front"]
        lines += ["", "What a user could ship instead, measured like the sweep's models "
                  "(references=[...]; speedup against the same unpruned fp32 model):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, r in refs.iterrows():
            cells = [describe(r), _f(r.sts, ".4f"), _f(r.base_pct, ".1f"),
                     *(_f(r[m], ".4f") for m in langs), _f(r.speed, ".2f") + "x",
                     _f(r.mb, ".1f"), "yes" if front[i] else "no"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", line]
    return "\n".join(lines) + "\n"


def _folder(model_dir: str | None, sweep_dir: Path | None) -> str:
    """A model folder, relative to the sweep folder when it is inside it."""
    if not isinstance(model_dir, str):
        return "-"
    if sweep_dir is not None:
        with contextlib.suppress(ValueError):
            return str(Path(model_dir).relative_to(Path(sweep_dir).resolve()))
    return model_dir


# Colour says which layers were kept, line style or fill says the init, marker the base; each
# phase has its own panel, side by side, on one STSb scale.
COLORS = {"top": "tab:blue", "middle": "tab:orange", "bottom": "tab:green",
          "alternate": "tab:red", "block_influence": "tab:brown", "angular": "tab:cyan",
          "greedy_dev": "tab:olive", "layers": "tab:purple", "none": "black"}
MARKERS = "osD^vP*X"
GREYS = ["dimgrey", "darkgrey", "black", "silver"]  # unpruned levels, one shade a base


def _panels(plt, df: pd.DataFrame):
    """A figure with one panel per phase (sharing the STSb axis), and the phases in order."""
    phases = sorted(set(df.phase))
    fig, axes = plt.subplots(1, len(phases), figsize=(3.2 + 4.8 * len(phases), 4.8),
                             sharey=True, squeeze=False)
    return fig, list(zip(phases, axes[0], strict=True))


def _removed(strategy: str) -> str:
    return {"none": "unpruned", "layers": "chosen layers"}.get(
        strategy, f"{strategy} removed" if strategy in ("top", "middle", "bottom", "alternate")
        else f"{strategy} choice")


def plot(df: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out / "spearman_vs_layers.png", out / "quality_vs_speedup.png"]
    marker = {base: MARKERS[i % len(MARKERS)] for i, base in enumerate(sorted(set(df.base)))}

    fig, panels = _panels(plt, df)
    for phase, ax in panels:
        def reference_line(base: str, score: float, text: str, style: str, ax=ax) -> None:
            ax.axhline(score, color=GREYS[sorted(marker).index(base) % len(GREYS)],
                       linestyle=style, linewidth=1.2, label=text)

        in_phase = df[df.phase == phase]
        for (base, init), group in in_phase.groupby(["base", "init"]):
            full = group[group.strategy == "none"]
            random = init == "random"
            for strategy in LINE_STRATEGIES:
                line = pd.concat([group[group.strategy == strategy], full]).sort_values("keep")
                if len(line[line.strategy == strategy]):
                    ax.plot(line.keep, line.sts_final, "--" if random else "-",
                            marker=marker[base], color=COLORS[strategy],
                            mfc="white" if random else COLORS[strategy],
                            label=f"{base}, {init}: {_removed(strategy)}")
            chosen = group[group.strategy == "layers"]
            if len(chosen):  # explicit layers follow no strategy: points, labelled with the layers
                ax.plot(chosen.keep, chosen.sts_final, linestyle="none", marker=marker[base],
                        markersize=8, color=COLORS["layers"],
                        mfc="white" if random else COLORS["layers"],
                        label=f"{base}, {init}: chosen layers")
                for r in chosen.itertuples():
                    ax.annotate(f"[{r.kept_layers}]", (r.keep, r.sts_final), fontsize=7,
                                xytext=(5, -10), textcoords="offset points")
            if len(full) and len(full) < len(group):  # the end of the lines above, as a level
                reference_line(base, full.sts_final.iloc[0], f"{base}, {init}: unpruned",
                               ":" if random else "-.")
            elif len(full):  # a model of its own depth only (a small baseline): a point
                ax.plot(full.keep, full.sts_final, linestyle="none", marker=marker[base],
                        markersize=8, color=COLORS["none"], mfc="white" if random else "black",
                        label=f"{base}, {init}: unpruned ({full.keep.iloc[0]} layers)")
        for base in references_outside(in_phase):
            reference_line(base, in_phase.unpruned_sts[in_phase.base == base].iloc[0],
                           f"{base}, pretrained: unpruned (earlier run)", "-.")
        for r in in_phase.dropna(subset=["base_sts"]).drop_duplicates("base").itertuples():
            reference_line(r.base, r.base_sts, f"{r.base}: base model, no training", (0, (1, 3)))
        ax.set_xticks(sorted(set(df.keep)))
        ax.set_title(f"phase={phase}", fontsize=10)
    _finish(fig, [ax for _, ax in panels], "kept layers",
            "STSb quality vs kept layers, by pruning strategy", paths[0])

    fig, panels = _panels(plt, df)
    for phase, ax in panels:
        groups = df[df.phase == phase].groupby(["base", "init", "strategy"])
        for base, init, strategy in sorted(groups.groups,
                                           key=lambda k: (k[0], k[1], STRATEGY_ORDER[k[2]])):
            group, random = groups.get_group((base, init, strategy)), init == "random"
            ax.scatter(group.speedup, group.sts_final, marker=marker[base], s=45,
                       edgecolors=COLORS[strategy],
                       facecolors="white" if random else COLORS[strategy],
                       label=f"{base}, {init}: {_removed(strategy)}")
            if not random:  # random-init points sit in a cluster; the legend tells them apart
                for r in group.itertuples():
                    if pd.isna(r.speedup) or pd.isna(r.sts_final):
                        continue  # not timed (eval.speed_rounds=0): no point to label
                    text = f"[{r.kept_layers}]" if strategy == "layers" else f"{r.keep}L"
                    ax.annotate(text, (r.speedup, r.sts_final), fontsize=8,
                                xytext=(5, 3), textcoords="offset points")
        ax.set_title(f"phase={phase}", fontsize=10)
    _finish(fig, [ax for _, ax in panels], "encode speedup vs the unpruned model (x)",
            "STSb quality vs encode speed (labels: kept layers; hollow: random init)", paths[1])
    return paths


def plot_pareto(df: pd.DataFrame, front: pd.Series, chosen: int, path: Path) -> Path:
    """STSb against speedup for every candidate, coloured by size; the front joined and ringed,
    the recommended model circled in red. Candidates without a speed timing are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    drawn = df[df.speed.notna() & df.score.notna()]
    on = drawn[front[drawn.index]].sort_values("speed")
    fig, ax = plt.subplots(figsize=(8, 5.2))
    sized = drawn.mb.notna().any()
    colour = {"c": drawn.mb, "cmap": plt.get_cmap("viridis").with_extremes(bad="lightgrey"),
              "norm": Normalize(drawn.mb.min(), drawn.mb.max())} if sized else {"c": "tab:blue"}
    ax.scatter(drawn.speed, drawn.score, s=35, alpha=0.45, edgecolors="none", label="all models",
               **colour)
    if sized:
        colour["c"] = on.mb
        fig.colorbar(ScalarMappable(colour["norm"], colour["cmap"]), ax=ax,
                     label="size (MB on disk, or fp32 params)")
    ax.plot(on.speed, on.score, ":", color="black", linewidth=1, zorder=1)
    ax.scatter(on.speed, on.score, s=70, edgecolors="black", linewidths=1.2, zorder=2,
               label="Pareto front", **colour)
    refs = drawn[is_reference(drawn)]
    ax.scatter(refs.speed, refs.score, s=120, marker="X", facecolors="none", edgecolors="black",
               linewidths=1, zorder=2, label="references (what you could ship instead)")
    for _, r in pd.concat([on, refs[~front[refs.index]]]).iterrows():
        # The base and phase only where the sweep has several.
        text = (describe(r).removesuffix(" (reference)").split(" (")[0] if r.form == AS_IS
                or r.get("reference", False) else
                " ".join([*([r.base] if df.base.nunique() > 1 else []),
                          f"{r.strategy} {r.keep}L",
                          *([r.phase] if df.phase.nunique() > 1 else []),
                          *([] if r.form == "model" else [r.form])]))
        ax.annotate(text, (r.speed, r.score), fontsize=7, xytext=(5, 3), textcoords="offset points")
    if chosen in drawn.index:
        ax.scatter(drawn.speed[chosen], drawn.score[chosen], s=380, facecolors="none",
                   edgecolors="red", linewidths=2, zorder=3, label="recommended")
    ax.set_xlabel("encode speedup vs the unpruned model (x)")
    label = metric_label(df)
    ax.set_ylabel("STSb test Spearman (cosine)" if label == "STSb" else label)
    left_out = len(df[front]) - len(on)
    ax.set_title(f"Which model to ship: {label}, speed and size" + (
        f" ({left_out} front model(s) without a speed timing not shown)" if left_out else ""),
        fontsize=11)
    ax.margins(x=0.15)  # room for the labels of the fastest and slowest points
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


SCORE_AXES = {  # strategy -> (x axis, y axis) of its layer-score chart
    "block_influence": ("layer", "block influence: 1 - mean cos(input, output)"),
    "angular": ("first layer of the removed block", "angular distance / pi"),
    "greedy_dev": ("layers removed", "STS dev Spearman"),
}


def plot_layer_scores(strategy: str, scores: Sequence[float], kept: Sequence[int],
                      path: Path) -> Path:
    """A job's layer scores as bars; for block_influence the kept layers' bars are filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xlabel, ylabel = SCORE_AXES[strategy]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    filled = [strategy != "block_influence" or i in kept for i in range(len(scores))]
    ax.bar(range(len(scores)), scores, color=["tab:blue" if f else "white" for f in filled],
           edgecolor="tab:blue")
    ax.set_xticks(range(len(scores)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(f"{strategy}: kept layers {' '.join(map(str, kept))}", fontsize=11)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finish(fig, axes, xlabel: str, title: str, path: Path) -> None:
    """Labels, one legend for every panel (each label once), the file."""
    import matplotlib.pyplot as plt

    legend: dict[str, object] = {}
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    axes[0].set_ylabel("STSb test Spearman (cosine)")
    fig.suptitle(title, fontsize=11)
    axes[-1].legend(legend.values(), legend.keys(), fontsize=8, loc="upper left",
                    bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def register(uri: str, model_uri: str, name: str) -> str:
    """Register a logged model (runs:/<run id>/<path> or models:/<model id>) as a version of
    `name`, once per source, and point the `recommended` alias at it; returns the version."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        source, run_id, model_id = _model_source(client, model_uri)
        try:
            client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        same = [v for v in (client.search_model_versions(f"run_id = '{run_id}'") if run_id
                            else []) if v.name == name and v.source == source]
        version = same[0].version if same else client.create_model_version(
            name, source, run_id=run_id, model_id=model_id).version
        client.set_registered_model_alias(name, REGISTRY_ALIAS, version)
    except MlflowException as e:
        first = str(e.message).strip().splitlines()[0][:300] if str(e.message).strip() else ""
        raise UserError(f"cannot register the logged model {model_uri} as {name!r} in {uri} "
                        f"({first}): pass --register NAME, or check the run's "
                        f"{LOGGED_MODEL_TAG} tag") from e
    return str(version)


def _model_source(client, model_uri: str) -> tuple[str, str | None, str | None]:
    """(artifact location, run id, logged model id) of a model URI, read with `client`.

    mlflow.register_model resolves these URIs itself, but through the process-wide tracking URI
    (MLflow 3.17: fluent._register_model, and the SQL registry store for models:/ sources), not a
    client's: the same resolution here, with the client of the sweep's store.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    if model_uri.startswith("models:/m-"):
        model = client.get_logged_model(model_uri[len("models:/"):].strip("/"))
        return model.artifact_location, model.source_run_id, model.model_id
    if RunsArtifactRepository.is_runs_uri(model_uri):
        run_id, path = RunsArtifactRepository.parse_runs_uri(model_uri)
        run = client.get_run(run_id)
        # MLflow 3 keeps a logged model's files with the model, not the run; a folder logged as
        # run artifacts (log_artifacts) is the other place a runs:/ URI can point to.
        logged = [m for m in client.search_logged_models([run.info.experiment_id],
                                                         filter_string=f"name = '{path}'")
                  if m.source_run_id == run_id]
        if logged:  # logged more than once under one name: the newest
            model = max(logged, key=lambda m: m.creation_timestamp)
            return model.artifact_location, run_id, model.model_id
        if client.list_artifacts(run_id, path):
            return f"{run.info.artifact_uri.rstrip('/')}/{path}", run_id, None
        raise MlflowException(f"run {run_id} has no logged model or artifacts named {path!r}")
    return model_uri, None, None


@dataclass(frozen=True)
class Written:
    paths: list[Path]  # in the sweep folder, and attached to its parent run under report/
    recommendation: str  # the recommendation line


def write_report(sweep_dir: Path, budget: Budget | None = None,
                 register_as: str | None = None, metric: str = STS) -> Written:
    """Write report.csv, report.md (with "Which model to ship"), three plots and
    recommendation.json into the sweep folder; attach them to its run.

    The model to ship is chosen, and registered when its run has a logged model, before any file
    is written: a budget that no model meets leaves the folder as it was.
    """
    budget = budget or Budget()
    info = read_sweep_file(sweep_dir)
    if not info.get("parent_run_id"):
        raise UserError(f"{sweep_dir} has no {SWEEP_FILE} with a parent run (tracking disabled, "
                        "or not a sweep folder): pass the folder of a tracked sweep")
    uri, parent = info["tracking_uri"], info["parent_run_id"]
    runs = child_runs(uri, parent)
    df = table(runs)
    refs = reference_runs(runs)
    lacking = sorted(set(df.base[df.unpruned_sts.isna()]))
    if lacking:  # look for the unpruned references in earlier runs of the experiment
        df = table(runs, finished_runs_of(uri, parent, lacking))
    models = candidates(df, metric, refs)
    front = pareto_front(models)
    chosen = recommend(models, front, budget)
    row = models.loc[chosen]
    registered = None
    if isinstance(row.logged_model, str) and row.logged_model:
        name = register_as or f"{info.get('experiment') or 'sbert_exp'}-{row.base}"
        registered = (name, register(uri, row.logged_model, name))
    line = recommendation_line(row, budget, registered, metric_label(models))

    csv, md = sweep_dir / "report.csv", sweep_dir / "report.md"
    chosen_json = sweep_dir / "recommendation.json"
    df.to_csv(csv, index=False)
    md.write_text(markdown(df) + "\n" + ship_markdown(models, front, line, sweep_dir))
    paths = [csv, md, *plot(df, sweep_dir),
             plot_pareto(models, front, chosen, sweep_dir / "pareto.png"), chosen_json]
    chosen_json.write_text(json.dumps(recommendation_record(row, budget, registered), indent=1))
    log_artifacts(info["tracking_uri"], info["parent_run_id"], paths, "report")
    return Written(paths, line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sbert_exp.report", description=__doc__)
    parser.add_argument("--sweep", type=Path, help="sweep folder (default: the latest)")
    budget = parser.add_argument_group(
        "budget", "the model recommended is the one with the highest STSb within these bounds "
        "(default: none)")
    budget.add_argument("--max-mb", type=float, metavar="MB",
                        help="size on disk at most MB (the fp32 parameters where no model was "
                             "saved)")
    budget.add_argument("--min-speedup", type=float, metavar="X",
                        help="encode speedup vs the unpruned model at least X")
    budget.add_argument("--min-sts", type=float, metavar="S", help="STSb Spearman at least S")
    parser.add_argument("--metric", default=STS, metavar="METRIC",
                        help="the quality the Pareto front and the recommendation use: sts (STSb "
                             "test, default) or a language metric the sweep logged, e.g. "
                             "bitext/en-hi/accuracy or agreement/hi/spearman")
    parser.add_argument("--register", metavar="NAME",
                        help="registered model name for the recommended run's logged model "
                             "(default: <experiment>-<base>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        limits = Budget(args.max_mb, args.min_speedup, args.min_sts)
        written = write_report(args.sweep or latest_sweep(), limits, args.register, args.metric)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written.paths:
        log.info("wrote %s", path)
    print(written.recommendation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
