"""Sweep report: one row per config from the sweep's MLflow runs, as CSV, Markdown and plots."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from sbert_exp.errors import UserError
from sbert_exp.sweeper import SWEEP_FILE, read_sweep_file
from sbert_exp.tracking import CONFIG_KEY_TAG, child_runs, log_artifacts

log = logging.getLogger(__name__)

COLUMNS = {  # report column -> MLflow metric
    "params_total": "model/params_total",
    "params_embeddings": "model/params_embeddings",
    "params_encoder": "model/params_encoder",
    "speedup": "speed/speedup_vs_unpruned",
    "sts_before": "before/sts_test/spearman_cosine",
    "sts_after_nli": "after_nli/sts_test/spearman_cosine",
    "sts_after_sts": "after_sts/sts_test/spearman_cosine",
    "sts_final": "sts_test/spearman_cosine",
    "nli_accuracy": "nli_test/accuracy",
}
STRATEGY_ORDER = {"top": 0, "middle": 1, "bottom": 2, "none": 3}


def latest_sweep(root: Path = Path("multirun")) -> Path:
    found = sorted(root.glob(f"*/*/{SWEEP_FILE}"))
    if not found:
        raise UserError(f"no sweep with a {SWEEP_FILE} under {root}/: run a sweep first "
                        "(make sweep), or pass --sweep DIR")
    return found[-1].parent


def table(runs: list[dict]) -> pd.DataFrame:
    """One row per distinct config (jobs that reused a run collapse into it)."""
    rows = []
    for run in runs:
        if run["status"] != "FINISHED":
            continue
        p, m = run["params"], run["metrics"]
        depth, kept = int(p["base_model.num_layers"]), p["pruning.kept_layers"].split(",")
        row = {
            "config_key": run["tags"].get(CONFIG_KEY_TAG, run["run_id"]),
            "base": p["base_model.name"], "init": p.get("base_model.init", "pretrained"),
            # Keeping every layer is the unpruned model, whatever the strategy says.
            "strategy": "none" if len(kept) == depth else p["pruning.strategy"],
            "keep": len(kept), "kept_layers": " ".join(kept),
        }
        row.update({col: m.get(metric) for col, metric in COLUMNS.items()})
        rows.append(row)
    if not rows:
        raise UserError("the sweep has no finished job runs to report on")
    df = pd.DataFrame(rows).drop_duplicates("config_key").drop(columns="config_key")
    unpruned = df[(df.strategy == "none") & (df.init == "pretrained")].set_index("base")
    df["retained_pct"] = [
        100 * r.sts_final / unpruned.sts_final[r.base] if r.base in unpruned.index else None
        for r in df.itertuples()]
    order = df.strategy.map(STRATEGY_ORDER)
    return df.assign(_o=order).sort_values(["base", "init", "keep", "_o"]).drop(columns="_o")


def markdown(df: pd.DataFrame) -> str:
    head = ["base", "init", "strategy", "keep", "kept layers", "params total / emb / enc (M)",
            "speedup", "STSb before", "after NLI", "after STS", "NLI acc", "% of unpruned"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None or pd.isna(x) else format(x, fmt)

    for r in df.itertuples():
        params = (f"{r.params_total / 1e6:.1f} / {r.params_embeddings / 1e6:.1f} / "
                  f"{r.params_encoder / 1e6:.1f}")
        cells = [r.base, r.init, r.strategy, str(r.keep), r.kept_layers, params,
                 f(r.speedup, ".2f") + "x", f(r.sts_before, ".4f"), f(r.sts_after_nli, ".4f"),
                 f(r.sts_after_sts, ".4f"), f(r.nli_accuracy, ".3f"), f(r.retained_pct, ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out / "spearman_vs_layers.png", out / "quality_vs_speedup.png"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (base, init), group in df.groupby(["base", "init"]):
        full = group[group.strategy == "none"]
        for strategy in ("top", "middle", "bottom"):
            line = pd.concat([group[group.strategy == strategy], full]).sort_values("keep")
            if len(line[line.strategy == strategy]):
                style = "--" if init == "random" else "-"
                ax.plot(line.keep, line.sts_final, style, marker="o",
                        label=f"{base} ({init}): {strategy} removed")
        if len(full) and init == "pretrained":
            ax.axhline(full.sts_final.iloc[0], color="grey", linestyle=":",
                       label=f"{base}: unpruned")
    _finish(fig, ax, "kept layers", "Quality vs depth, by pruning strategy", paths[0])

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (base, strategy), group in df.groupby(["base", "strategy"]):
        ax.scatter(group.speedup, group.sts_final, label=f"{base}: {strategy}")
        for r in group.itertuples():
            ax.annotate(f"{r.keep}L{' rnd' if r.init == 'random' else ''}",
                        (r.speedup, r.sts_final), fontsize=8, xytext=(4, 2),
                        textcoords="offset points")
    _finish(fig, ax, "encode speedup vs unpruned (x)", "Quality vs speed (labels: kept layers)",
            paths[1])
    return paths


def _finish(fig, ax, xlabel: str, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("STSb test Spearman (cosine)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(sweep_dir: Path) -> list[Path]:
    """Write report.csv, report.md and two plots into the sweep folder; attach them to its run."""
    info = read_sweep_file(sweep_dir)
    if not info.get("parent_run_id"):
        raise UserError(f"{sweep_dir} has no {SWEEP_FILE} with a parent run (tracking disabled, "
                        "or not a sweep folder): pass the folder of a tracked sweep")
    df = table(child_runs(info["tracking_uri"], info["parent_run_id"]))
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
