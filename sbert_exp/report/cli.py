"""Sweep report: one row per config from the sweep's MLflow runs, as CSV, Markdown and plots, and
the model to ship: the Pareto front of STSb, speed and size, the best within a budget."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sbert_exp.errors import UserError
from sbert_exp.job.sweeper import SWEEP_FILE, read_sweep_file
from sbert_exp.pruning.strategies import SCORED
from sbert_exp.report.board import (
    Budget,
    candidates,
    metric_label,
    pareto_front,
    recommend,
    reference_runs,
)
from sbert_exp.report.plots import plot, plot_layer_scores, plot_pareto
from sbert_exp.report.ship import recommendation_line, recommendation_record, ship_markdown
from sbert_exp.report.table import STS, markdown, table
from sbert_exp.selection import METRICS
from sbert_exp.tracking.queries import child_runs, finished_runs_of, log_artifacts, metric_history
from sbert_exp.tracking.registry import register
from sbert_exp.tracking.tags import REUSED_TAG

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Written:
    paths: list[Path]  # in the sweep folder, and attached to its parent run under report/
    recommendation: str  # the recommendation line


def write_report(sweep_dir: Path, budget: Budget | None = None,
                 register_as: str | None = None, metric: str = STS) -> Written:
    """Write report.csv, report.md (with "Which model to ship"), three plots,
    recommendation.json and the scored strategies' layer-score charts (layer_scores/) into the
    sweep folder; attach them to its run.

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
    log_artifacts(uri, parent, paths, "report")
    charts = layer_charts(uri, runs, sweep_dir / "layer_scores")
    log_artifacts(uri, parent, charts, "report/layer_scores")
    return Written(paths + charts, line)


def layer_charts(uri: str, runs: list[dict], out: Path) -> list[Path]:
    """One bar chart per finished job whose layers a scored strategy chose: the scores it logged
    (`sbert_exp.selection.METRICS`, read from the run that computed them when it was reused),
    named by base, init, strategy and keep (the same for every phase)."""
    drawn: dict[Path, Path] = {}
    for run in runs:
        p = run["params"]
        strategy, kept = p.get("pruning.strategy"), p.get("pruning.kept_layers", "").split(",")
        if (run["status"] != "FINISHED" or strategy not in SCORED
                or len(kept) == int(p["base_model.num_layers"])):
            continue
        path = out / (f"{p['base_model.name']}-{p.get('base_model.init', 'pretrained')}-"
                      f"{strategy}-keep{len(kept)}.png")
        if path in drawn:
            continue
        scores = metric_history(uri, run["tags"].get(REUSED_TAG, run["run_id"]),
                                METRICS[strategy])
        if scores:
            drawn[path] = plot_layer_scores(strategy, scores, [int(k) for k in kept], path)
    return list(drawn.values())


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


def cli() -> None:
    """The `sbert-exp-report` command."""
    sys.exit(main())
