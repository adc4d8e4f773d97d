"""The sweep's table: one row per job run, its columns, and the Markdown of it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pandas as pd

from sbert_exp.errors import UserError
from sbert_exp.evaluation import intervals
from sbert_exp.pruning.rules import pruning_label
from sbert_exp.pruning.strategies import STRATEGIES
from sbert_exp.references import REFERENCE_TAG
from sbert_exp.report import noise
from sbert_exp.report.style import LABELS
from sbert_exp.tracking.tags import (
    CONFIG_KEY_TAG,
    LOGGED_BF16_TAG,
    LOGGED_EXPORT_TAG,
    LOGGED_MODEL_TAG,
    MODEL_DIR_TAG,
    REUSED_TAG,
)

# The forms a job builds from its saved model (job.steps.derived_forms), by the prefix of their
# metrics, with the tag of their logged model; on the board each sits right after its saved
# model, in this order.
DERIVED = {"export": LOGGED_EXPORT_TAG, "bf16": LOGGED_BF16_TAG}


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
    # Each derived form's: export_sts, export_speedup, export_disk_mb, bf16_sts, ...
    **{f"{p}_{column}": f"{p}/{metric}" for p in DERIVED for column, metric in (
        ("sts", "sts_test/spearman_cosine"), ("speedup", "speedup_vs_unpruned"),
        ("disk_mb", "disk_mb"))},
}


# The language sets' metrics (sbert_exp.data.languages) are columns of their own, named as logged:
# bitext/<set>/accuracy, agreement/<set>/spearman, with base_model/ and derived forms' variants.
LANGUAGE_PREFIXES = ("bitext/", "agreement/")


LANGUAGE_COLUMNS = tuple(f"{where}{p}" for where in ("", "base_model/", *(f"{d}/" for d in DERIVED))
                         for p in LANGUAGE_PREFIXES)


# Each score's 95% interval and its paired difference from the base (a derived form's: from its
# fp32 model), as logged (sbert_exp.evaluation.intervals): ci_low/<metric>, vs_base/<metric>, ...
INTERVAL_COLUMNS = tuple(f"{where}{p}" for where in ("", "base_model/", *(f"{d}/" for d in DERIVED))
                         for p in intervals.PREFIXES)


STS = "sts"  # --metric's default: STSb test Spearman


# Rows in the order strategies are declared, then explicit layers and the unpruned model.
STRATEGY_ORDER = {name: i for i, name in enumerate(LABELS)}
LINE_STRATEGIES = [str(s) for s in STRATEGIES]


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
        row.update({k: v for k, v in m.items()
                    if k.startswith((*LANGUAGE_COLUMNS, *INTERVAL_COLUMNS))})
        row.update(unpruned_sts=score, unpruned_run=reference)
        row.update(export=p.get("export", "none"), model_dir=run["tags"].get(MODEL_DIR_TAG),
                   logged_model=run["tags"].get(LOGGED_MODEL_TAG),
                   **{f"logged_{p}": run["tags"].get(tag) for p, tag in DERIVED.items()},
                   run_id=run["run_id"])
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
            "after distill", "after STS", "NLI acc", "% of unpruned", "% of base",
            "STSb 95% interval", "STSb vs base", "job (s)"]
    langs = language_metrics(df)
    head += [short(m) for m in langs]
    sts = COLUMNS["sts_final"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None or pd.isna(x) else format(x, fmt)

    for r in df.itertuples():
        row = df.loc[r.Index]
        params = (f"{r.params_total / 1e6:.1f} / {r.params_embeddings / 1e6:.1f} / "
                  f"{r.params_encoder / 1e6:.1f}")
        cells = [r.base, r.init, r.strategy, str(r.keep), r.kept_layers, r.phase, params,
                 f(r.speedup, ".2f") + "x", f(r.sts_before, ".4f"), f(r.sts_after_nli, ".4f"),
                 f(r.sts_after_distill, ".4f"), f(r.sts_after_sts, ".4f"),
                 f(r.nli_accuracy, ".3f"), f(r.retained_pct, ".1f"), f(r.base_pct, ".1f"),
                 noise.interval_text(row, sts) or "-",
                 noise.words(intervals.logged_difference(row, intervals.VS_BASE, sts)),
                 f(r.job_s, ".0f")]
        cells += [noise.with_interval(row, m) for m in langs]
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
