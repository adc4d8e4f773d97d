"""Sweep report: one row per config from the sweep's MLflow runs, as CSV, Markdown and plots."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from sbert_exp.errors import UserError
from sbert_exp.pruning import pruning_label
from sbert_exp.sweeper import SWEEP_FILE, read_sweep_file
from sbert_exp.tracking import (
    CONFIG_KEY_TAG,
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
    "job_s": "time/total_s",
}
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
            "keep": len(kept), "kept_layers": " ".join(kept),
            "phase": p.get("phase.name", "-"),
        }
        row.update({col: m.get(metric) for col, metric in COLUMNS.items()})
        row.update(unpruned_sts=score, unpruned_run=reference)
        rows.append(row)
    if not rows:
        raise UserError("the sweep has no finished job runs to report on")
    df = pd.DataFrame(rows).drop_duplicates("config_key").drop(columns="config_key")
    df["retained_pct"] = 100 * df.sts_final / df.unpruned_sts
    # Against the base model as it is (unpruned, pretrained, untrained): what a shipped model
    # replaces.
    df["base_pct"] = 100 * df.sts_final / pd.to_numeric(df.base_sts)
    order = df.strategy.map(STRATEGY_ORDER)
    # One config's phases sit next to each other, so they compare side by side.
    return (df.assign(_o=order)
            .sort_values(["base", "init", "keep", "_o", "kept_layers", "phase"])
            .drop(columns="_o"))


def references_outside(df: pd.DataFrame) -> dict[str, str]:
    """base -> run id of the unpruned references that are not runs of this sweep."""
    inside = df[(df.strategy == "none") & (df.init == "pretrained")]
    return {r.base: r.unpruned_run for r in df.itertuples()
            if isinstance(r.unpruned_run, str) and r.base not in set(inside.base)}


def markdown(df: pd.DataFrame) -> str:
    head = ["base", "init", "strategy", "keep", "kept layers", "phase",
            "params total / emb / enc (M)", "speedup", "STSb before", "after NLI",
            "after distill", "after STS", "NLI acc", "% of unpruned", "% of base", "job (s)"]
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
    return "\n".join(lines) + "\n"


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
                    text = f"[{r.kept_layers}]" if strategy == "layers" else f"{r.keep}L"
                    ax.annotate(text, (r.speedup, r.sts_final), fontsize=8,
                                xytext=(5, 3), textcoords="offset points")
        ax.set_title(f"phase={phase}", fontsize=10)
    _finish(fig, [ax for _, ax in panels], "encode speedup vs the unpruned model (x)",
            "STSb quality vs encode speed (labels: kept layers; hollow: random init)", paths[1])
    return paths


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


def write_report(sweep_dir: Path) -> list[Path]:
    """Write report.csv, report.md and two plots into the sweep folder; attach them to its run."""
    info = read_sweep_file(sweep_dir)
    if not info.get("parent_run_id"):
        raise UserError(f"{sweep_dir} has no {SWEEP_FILE} with a parent run (tracking disabled, "
                        "or not a sweep folder): pass the folder of a tracked sweep")
    uri, parent = info["tracking_uri"], info["parent_run_id"]
    runs = child_runs(uri, parent)
    df = table(runs)
    lacking = sorted(set(df.base[df.unpruned_sts.isna()]))
    if lacking:  # look for the unpruned references in earlier runs of the experiment
        df = table(runs, finished_runs_of(uri, parent, lacking))
    csv, md = sweep_dir / "report.csv", sweep_dir / "report.md"
    df.to_csv(csv, index=False)
    md.write_text(markdown(df))
    paths = [csv, md, *plot(df, sweep_dir)]
    log_artifacts(info["tracking_uri"], info["parent_run_id"], paths, "report")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sbert_exp.report", description=__doc__)
    parser.add_argument("--sweep", type=Path, help="sweep folder (default: the latest)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for path in write_report(args.sweep or latest_sweep()):
            log.info("wrote %s", path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
