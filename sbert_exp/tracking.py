"""All MLflow access: one run per job, params from the resolved config, namespaced metrics."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sbert_exp.schema import TrackingConfig

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "sbert_exp.sweep"
CONFIG_KEY_TAG = "sbert_exp.config_key"
REUSED_TAG = "sbert_exp.reused_from"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"dotted.key": "value"}; lists stay one value, None is "null"."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        elif value is None:
            flat[name] = "null"
        elif isinstance(value, Enum):
            flat[name] = str(value.value)
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


def artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a SQLite store instead of in whatever directory a job runs from."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    db = Path(uri[len(prefix):]).expanduser().resolve()
    return (db.parent / "mlartifacts").as_uri()


class Run:
    """One MLflow run; a no-op when tracking is disabled."""

    def __init__(self, client: Any, run_id: str | None) -> None:
        self._client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, str]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self._client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if self.run_id is None:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            if self.run_id is not None:
                self._client.set_tag(self.run_id, key, value)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run_id is None or not path.exists():
            return
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)


class Tracker:
    def __init__(self, cfg: TrackingConfig) -> None:
        self.cfg = cfg

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        # An explicit client: no process-wide active run or URI to leak between sweep jobs.
        return MlflowClient(tracking_uri=self.cfg.uri)

    def _store_exists(self) -> bool:
        """False for a SQLite store not created yet: a lookup must not create it."""
        prefix = "sqlite:///"
        if self.cfg.uri.startswith(prefix):
            return Path(self.cfg.uri[len(prefix):]).expanduser().is_file()
        return True

    def _experiment_id(self, client: Any) -> str:
        found = client.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            return found.experiment_id
        # Parallel jobs may all find no experiment; one creates it, the others wait and reuse.
        with _experiment_lock(self.cfg.uri, self.cfg.experiment):
            found = client.get_experiment_by_name(self.cfg.experiment)
            if found is not None:
                return found.experiment_id
            try:
                return client.create_experiment(self.cfg.experiment,
                                                artifact_location=artifact_root(self.cfg.uri))
            except Exception:
                # Jobs on other machines do not share our lock: one of them won the race.
                found = client.get_experiment_by_name(self.cfg.experiment)
                if found is None:
                    raise
                return found.experiment_id

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str] | None = None,
            parent_run_id: str | None = None) -> Iterator[Run]:
        """A run that ends FINISHED, or FAILED with the error as a tag when the block raises."""
        if not self.cfg.enabled:
            yield Run(None, None)
            return
        client = self._client()
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id  # how MLflow nests a child under its parent
        created = client.create_run(self._experiment_id(client), run_name=name, tags=all_tags)
        run = Run(client, created.info.run_id)
        log.info("MLflow run %s (%s) in %s", name, run.run_id, self.cfg.uri)
        try:
            yield run
        except BaseException as e:
            # Marking the run may itself fail (Ctrl-C can leave the store's connection broken
            # mid-call); the job's own error is what must propagate.
            with contextlib.suppress(Exception):
                run.set_tags({"error": f"{type(e).__name__}: {e}"[:5000]})
                client.set_terminated(run.run_id, status="FAILED")
            raise
        client.set_terminated(run.run_id, status="FINISHED")

    def start_parent(self, name: str, tags: Mapping[str, str]) -> str | None:
        """Open the parent run of a sweep; it stays RUNNING until `end_parent`."""
        if not self.cfg.enabled:
            return None
        client = self._client()
        created = client.create_run(self._experiment_id(client), run_name=name,
                                    tags={**tags, SWEEP_TAG: "parent"})
        return created.info.run_id

    def end_parent(self, run_id: str | None, failed: Sequence[str], jobs: int,
                   failed_jobs: int) -> None:
        """Close a sweep's parent run with its job counts (columns in the UI's run list)."""
        if run_id is None:
            return
        client = self._client()
        Run(client, run_id).log_metrics({"sweep/jobs": jobs, "sweep/failed_jobs": failed_jobs})
        if failed:
            client.set_tag(run_id, "failed_jobs", "; ".join(failed)[:5000])
        client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def find_finished(self, config_key: str,
                      parent_run_id: str | None = None) -> FinishedRun | None:
        """The earliest FINISHED job run with this config key (under this parent, if given)."""
        if not self.cfg.enabled or not self._store_exists():
            return None
        client = self._client()
        found = client.get_experiment_by_name(self.cfg.experiment)
        if found is None:
            return None
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{CONFIG_KEY_TAG}` = '{config_key}' "
                          "and attributes.status = 'FINISHED'"
                          + (f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
                             if parent_run_id else ""),
            order_by=["attributes.start_time ASC"], max_results=1,
        )
        if not runs:
            return None
        run = runs[0]
        origin = run.data.tags.get(REUSED_TAG, run.info.run_id)
        return FinishedRun(run_id=origin, metrics=dict(run.data.metrics))


def child_runs(uri: str, parent_run_id: str) -> list[dict[str, Any]]:
    """Every job run under a sweep's parent: id, status, params, metrics and tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10_000)
    return [_as_dict(r) for r in runs]


def finished_runs_of(uri: str, parent_run_id: str, bases: Sequence[str]) -> list[dict[str, Any]]:
    """FINISHED job runs of these base models in the parent's experiment, outside its sweep."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
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


def log_artifacts(uri: str, run_id: str, paths: Sequence[Path], artifact_path: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)


@dataclass(frozen=True)
class FinishedRun:
    run_id: str
    metrics: dict[str, float]


@contextlib.contextmanager
def _experiment_lock(uri: str, experiment: str) -> Iterator[None]:
    """A file lock beside a SQLite store (or in the temp dir for servers) for one experiment."""
    from filelock import FileLock

    prefix = "sqlite:///"
    if uri.startswith(prefix):
        folder = Path(uri[len(prefix):]).expanduser().resolve().parent
    else:
        folder = Path(tempfile.gettempdir())
    digest = hashlib.sha256(f"{uri}|{experiment}".encode()).hexdigest()[:16]
    with FileLock(str(folder / f".sbert_exp-{digest}.lock"), timeout=120):
        yield
