"""Sweep report: one row per config from the sweep's MLflow runs, as CSV, Markdown and plots, and
the model to ship: the Pareto front of STSb, speed and size, the best within a budget."""

from __future__ import annotations

import argparse
import json
import logging
import os
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
from sbert_exp.tracking.queries import (
    child_runs,
    finished_runs_of,
    log_artifacts,
    metric_history,
    parent_run,
)
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
class Sweep:
    """Where a sweep's runs are, and where its report goes."""

    uri: str  # the tracking store
    parent_run_id: str
    experiment: str | None
    out: Path  # the report's folder
    sweep_dir: Path | None  # the sweep folder, as the parent run recorded it (model folders
    # in the report are named relative to it)

    @classmethod
    def from_folder(cls, sweep_dir: Path) -> Sweep:
        info = read_sweep_file(sweep_dir)
        if not info.get("parent_run_id"):
            raise UserError(f"{sweep_dir} has no {SWEEP_FILE} with a parent run (tracking "
                            "disabled, or not a sweep folder): pass the folder of a tracked sweep")
        return cls(info["tracking_uri"], info["parent_run_id"], info.get("experiment"),
                   Path(sweep_dir), Path(sweep_dir))

    @classmethod
    def from_run(cls, uri: str, run_id: str, out: Path) -> Sweep:
        """A sweep known by its parent run id only: everything is read from the store."""
        found = parent_run(uri, run_id)
        if found is None:
            raise UserError(f"{uri} has no sweep parent run {run_id}: pass the run id of a "
                            "sweep's parent (its MLflow page, or sweep.json's parent_run_id), "
                            "and --tracking-uri of the store that holds it")
        experiment, sweep_dir = found
        return cls(uri, run_id, experiment, out, Path(sweep_dir) if sweep_dir else None)


@dataclass(frozen=True)
class Written:
    paths: list[Path]  # in the sweep folder, and attached to its parent run under report/
    recommendation: str  # the recommendation line


def write_report(sweep: Path | Sweep, budget: Budget | None = None,
                 register_as: str | None = None, metric: str = STS) -> Written:
    """Write report.csv, report.md (with "Which model to ship"), three plots,
    recommendation.json and the scored strategies' layer-score charts (layer_scores/) into the
    sweep folder (or `Sweep.out` for a sweep known by its parent run id); attach them to its
    parent run.

    The model to ship is chosen, and registered when its run has a logged model, before any file
    is written: a budget that no model meets leaves the folder as it was.
    """
    budget = budget or Budget()
    sweep = sweep if isinstance(sweep, Sweep) else Sweep.from_folder(sweep)
    uri, parent, out = sweep.uri, sweep.parent_run_id, sweep.out
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
        name = register_as or f"{sweep.experiment or 'sbert_exp'}-{row.base}"
        registered = (name, register(uri, row.logged_model, name, version_tags(row)))
    line = recommendation_line(row, budget, registered, metric_label(models))

    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / "report.csv", out / "report.md"
    chosen_json = out / "recommendation.json"
    df.to_csv(csv, index=False)
    md.write_text(markdown(df) + "\n" + ship_markdown(models, front, line, sweep.sweep_dir))
    paths = [csv, md, *plot(df, out),
             plot_pareto(models, front, chosen, out / "pareto.png"), chosen_json]
    chosen_json.write_text(json.dumps(recommendation_record(row, budget, registered), indent=1))
    log_artifacts(uri, parent, paths, "report")
    charts = layer_charts(uri, runs, out / "layer_scores")
    log_artifacts(uri, parent, charts, "report/layer_scores")
    return Written(paths + charts, line)


def version_tags(row) -> dict[str, object]:
    """What the registered version is and scored, as the report measured it."""
    tags = {"form": row.form, "strategy": row.strategy, "keep": int(row.keep),
            "kept_layers": row.kept_layers, "phase": row.phase, "run_id": row.run_id,
            "sts": row.sts, "speedup": row.speed, "size_mb": row.mb}
    return {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in tags.items()
            if not (isinstance(v, float) and v != v)}


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
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--sweep", type=Path, help="sweep folder (default: the latest)")
    where.add_argument("--run", metavar="RUN_ID",
                       help="the sweep's parent run id instead of its folder: everything is read "
                            "from the tracking store (--tracking-uri), the report written to --out")
    parser.add_argument("--tracking-uri", metavar="URI",
                        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                        help="with --run: the store (default: $MLFLOW_TRACKING_URI, else "
                             "sqlite:///mlflow.db)")
    parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                        help="with --run: the report's folder (default: the current one)")
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
        sweep = (Sweep.from_run(args.tracking_uri, args.run, args.out) if args.run
                 else args.sweep or latest_sweep())
        written = write_report(sweep, limits, args.register, args.metric)
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
