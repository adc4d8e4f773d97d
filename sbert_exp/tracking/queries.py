"""Reading runs back: a sweep's job runs, finished runs of a base model, a reused run's results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbert_exp.tracking import uris
from sbert_exp.tracking.tags import PARENT_TAG, SWEEP_TAG


@dataclass(frozen=True)
class FinishedRun:
    run_id: str  # the run that trained (a reuse points to it)
    metrics: dict[str, float]
    model_dir: str | None = None  # where that run, or this reuse of it, keeps the saved model
    kept_layers: str | None = None  # its `pruning.kept_layers` param
    logged_model: str | None = None  # the URI of the model it logged (tracking.log_model=true)
    logged_export: str | None = None  # and of its export's logged model
    logged_bf16: str | None = None  # and of its bf16 form's


def child_runs(uri: str, parent_run_id: str) -> list[dict[str, Any]]:
    """Every job run under a sweep's parent: id, status, params, metrics and tags."""

    client = uris.client(uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10_000)
    return [_as_dict(r) for r in runs]


def parent_run(uri: str, run_id: str) -> tuple[str, str | None] | None:
    """(experiment name, sweep folder it recorded) of a sweep's parent run; None when the store
    has no such run, or the run is not a sweep's parent."""
    from mlflow.exceptions import MlflowException

    client = uris.client(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.data.tags.get(SWEEP_TAG) != "parent":
        return None
    return client.get_experiment(run.info.experiment_id).name, run.data.tags.get("sweep_dir")


def finished_runs_of(uri: str, parent_run_id: str, bases: Sequence[str]) -> list[dict[str, Any]]:
    """FINISHED job runs of these base models in the parent's experiment, outside its sweep."""

    client = uris.client(uri)
    experiment = client.get_run(parent_run_id).info.experiment_id
    found: list[dict[str, Any]] = []
    for base in bases:
        runs = client.search_runs(
            [experiment], filter_string=f"params.`base_model.name` = '{base}' "
                                        "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"], max_results=10_000)
        found += [_as_dict(r) for r in runs if r.data.tags.get(PARENT_TAG) != parent_run_id]
    return found


def _as_dict(run: Any) -> dict[str, Any]:
    return {"run_id": run.info.run_id, "status": run.info.status, "params": dict(run.data.params),
            "metrics": dict(run.data.metrics), "tags": dict(run.data.tags)}


def metric_history(uri: str, run_id: str, key: str) -> list[float]:
    """A run's values of one metric, in step order (empty when it never logged it)."""

    history = uris.client(uri).get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def log_artifacts(uri: str, run_id: str, paths: Sequence[Path], artifact_path: str) -> None:

    client = uris.client(uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)
