"""All MLflow access: one run per job, params from the resolved config, namespaced metrics."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sbert_exp.errors import ConfigError
from sbert_exp.schema import TrackingConfig

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "sbert_exp.sweep"
CONFIG_KEY_TAG = "sbert_exp.config_key"
REUSED_TAG = "sbert_exp.reused_from"
JOB_TAG = "sbert_exp.job"  # the job's number in its sweep
MODEL_DIR_TAG = "sbert_exp.model_dir"  # where the job saved its model
LOGGED_MODEL_TAG = "sbert_exp.logged_model"  # tracking.log_model=true: the logged model's URI
# MLflow 3's UI opens an experiment in the view its kind names; unset, it guesses GenAI.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# Who runs a run: a rerun marks runs whose process is gone KILLED instead of leaving them RUNNING.
HOST_TAG, PID_TAG, PID_START_TAG = "sbert_exp.host", "sbert_exp.pid", "sbert_exp.pid_started"

# MLflow's HTTP client retries 7 times with exponential backoff and waits 120 s per request by
# default: minutes before an unreachable server is reported. Shorter, unless the user set them.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
for _name, _value in HTTP_SETTINGS.items():
    os.environ.setdefault(_name, _value)
PROBE_TIMEOUT_S = 5.0  # connect and read timeout of the one request that checks a server


def check_reachable(cfg: TrackingConfig) -> None:
    """An HTTP tracking server must answer its /health request; raise one line otherwise.

    One request, no retries: an unreachable server is reported within PROBE_TIMEOUT_S seconds
    of connect plus read time, before anything is loaded or written.
    """
    if not cfg.enabled or not cfg.uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        response = requests.get(cfg.uri.rstrip("/") + "/health",
                                timeout=(PROBE_TIMEOUT_S, PROBE_TIMEOUT_S))
        ok = response.status_code < 500
    except requests.RequestException:
        ok = False
    if not ok:
        raise ConfigError(f"tracking server {cfg.uri} does not answer: start it with "
                          "make mlflow-server, or use tracking=sqlite")


def _owner_tags() -> dict[str, str]:
    import psutil

    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PID_START_TAG: f"{psutil.Process().create_time():.2f}"}


def _is_alive(pid: int, started: float) -> bool:
    """Whether process `pid` still runs and is the one that started at `started` (not a reuse)."""
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except psutil.AccessDenied:
        return True  # another user's process: it exists
    except (psutil.NoSuchProcess, ValueError):
        return False


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


SQLITE = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The file of a SQLite store URI (`~` expanded, relative to the working directory as
    MLflow reads it); None for a tracking server."""
    return Path(uri[len(SQLITE):]).expanduser() if uri.startswith(SQLITE) else None


def artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a SQLite store instead of in whatever directory a job runs from."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / "mlartifacts").as_uri()


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

    def log_datasets(self, datasets: Sequence[tuple[str, str, str, str]]) -> None:
        """Log (name, digest, source, context) as the run's dataset inputs (the Dataset column):
        `source` a local path or a Hub id, `context` training, calibration or evaluation."""
        if self.run_id is None or not datasets:
            return
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [DatasetInput(
            dataset=Dataset(name=name, digest=digest[:36], source_type=kind, source=json.dumps(
                {"uri": source} if kind == "local" else {"path": source})),
            tags=[InputTag("mlflow.data.context", context)])
            for name, digest, source, context in datasets
            for kind in ["hub" if digest.startswith("hub:") else "local"]]
        self._client.log_inputs(self.run_id, datasets=inputs)

    def log_model(self, model: Any, uri: str) -> str | None:
        """Log `model` (a SentenceTransformer) under the run with MLflow's sentence_transformers
        flavor; returns its URI, also set as the run's LOGGED_MODEL_TAG.

        MLflow logs models into the active run of its fluent API only, which ends the run
        (FINISHED) when it closes: call this last, when the run is done anyway.
        """
        if self.run_id is None:
            return None
        from importlib.metadata import version

        import mlflow
        import mlflow.sentence_transformers

        before = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            with mlflow.start_run(run_id=self.run_id):
                info = mlflow.sentence_transformers.log_model(
                    model, name="model",
                    # Pinned as here, instead of MLflow inferring them by loading the model in
                    # a subprocess.
                    pip_requirements=[f"{p}=={version(p)}" for p in (
                        "torch", "transformers", "sentence-transformers")])
        finally:
            mlflow.set_tracking_uri(before)
        self.set_tags({LOGGED_MODEL_TAG: info.model_uri})
        return info.model_uri

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run_id is None or not path.exists():
            return
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)


_opened: set[str] = set()  # store URIs this process has opened (and so created or migrated)


class Tracker:
    def __init__(self, cfg: TrackingConfig) -> None:
        self.cfg = cfg

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        # An explicit client: no process-wide active run or URI to leak between sweep jobs.
        if self.cfg.uri in _opened:
            return MlflowClient(tracking_uri=self.cfg.uri)
        # The first client of a process creates a new SQLite store and runs its migrations:
        # two processes doing that at once break it ("duplicate column name"). One at a time.
        with _store_lock(self.cfg.uri):
            _create_sqlite_store(self.cfg.uri)
            client = MlflowClient(tracking_uri=self.cfg.uri)
            client.search_experiments(max_results=1)
        _opened.add(self.cfg.uri)
        return client

    def _store_exists(self) -> bool:
        """False for a SQLite store not created yet: a lookup must not create it."""
        db = sqlite_path(self.cfg.uri)
        return db is None or db.is_file()

    def _experiment_id(self, client: Any) -> str:
        found = client.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an earlier version
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                          EXPERIMENT_KIND)
            return found.experiment_id
        # Parallel jobs may all find no experiment; one creates it, the others wait and reuse.
        with _store_lock(self.cfg.uri):
            found = client.get_experiment_by_name(self.cfg.experiment)
            if found is not None:
                return found.experiment_id
            try:
                return client.create_experiment(self.cfg.experiment,
                                                artifact_location=artifact_root(self.cfg.uri),
                                                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:
                # Jobs on other machines do not share our lock: one of them won the race.
                found = client.get_experiment_by_name(self.cfg.experiment)
                if found is None:
                    raise
                return found.experiment_id

    def _existing_experiment(self) -> tuple[Any, str] | None:
        """(client, experiment id) when the store and experiment exist; never creates them."""
        if not self.cfg.enabled or not self._store_exists():
            return None
        client = self._client()
        found = client.get_experiment_by_name(self.cfg.experiment)
        return None if found is None else (client, found.experiment_id)

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str] | None = None,
            parent_run_id: str | None = None) -> Iterator[Run]:
        """A run that ends FINISHED, or FAILED with the error as a tag when the block raises."""
        if not self.cfg.enabled:
            yield Run(None, None)
            return
        client = self._client()
        all_tags = {**(tags or {}), **_owner_tags()}
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

    def start_parent(self, name: str, tags: Mapping[str, str],
                     resume: str | None = None) -> str | None:
        """Open the parent run of a sweep (or reopen `resume`); it stays RUNNING until
        `end_parent`."""
        if not self.cfg.enabled:
            return None
        client = self._client()
        if resume is not None:
            try:
                previous = client.get_run(resume)
            except Exception:
                previous = None  # deleted, or another store: start a new parent
            if previous is not None:
                owner = previous.data.tags
                if previous.info.status == "RUNNING" and _alive_owner(owner):
                    raise ConfigError(
                        f"this sweep folder is in use: its parent run {resume} is RUNNING in "
                        f"process {owner[PID_TAG]}: wait for it, or choose another hydra.sweep.dir")
                client.update_run(resume, status="RUNNING")
                for key, value in _owner_tags().items():
                    client.set_tag(resume, key, value)
                if "failed_jobs" in owner:  # from the interrupted attempt
                    client.delete_tag(resume, "failed_jobs")
                log.info("continuing the sweep's parent run %s", resume)
                return resume
        created = client.create_run(self._experiment_id(client), run_name=name,
                                    tags={**tags, SWEEP_TAG: "parent", **_owner_tags()})
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

    def end_dead_runs(self) -> int:
        """Mark KILLED the RUNNING runs of this experiment whose process on this host is gone.

        A process killed outright (SIGKILL, power loss) cannot close its runs; the next command
        does. Runs of other hosts, and runs without owner tags, are left as they are.
        """
        opened = self._existing_experiment()
        if opened is None:
            return 0
        client, experiment = opened
        host = socket.gethostname()
        running = client.search_runs(
            [experiment], filter_string=f"attributes.status = 'RUNNING' and "
                                        f"tags.`{HOST_TAG}` = '{host}'", max_results=10_000)
        ended = 0
        for found in running:
            if _alive_owner(found.data.tags):
                continue
            pid = found.data.tags.get(PID_TAG)
            client.set_tag(found.info.run_id, "error",
                           f"killed: process {pid} on {host} ended without closing this run")
            client.set_terminated(found.info.run_id, status="KILLED")
            ended += 1
        if ended:
            log.info("marked %d run(s) KILLED: their process on this host is gone", ended)
        return ended

    def find_finished(self, config_key: str, parent_run_id: str | None = None,
                      job: int | None = None) -> list[FinishedRun]:
        """FINISHED job runs with this config key, earliest first (under this parent and with
        this job number, if given)."""
        opened = self._existing_experiment()
        if opened is None:
            return []
        client, experiment = opened
        where = f"tags.`{CONFIG_KEY_TAG}` = '{config_key}' and attributes.status = 'FINISHED'"
        if parent_run_id:
            where += f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
        if job is not None:
            where += f" and tags.`{JOB_TAG}` = '{job}'"
        runs = client.search_runs([experiment], filter_string=where,
                                  order_by=["attributes.start_time ASC"], max_results=1000)
        return [FinishedRun(run_id=r.data.tags.get(REUSED_TAG, r.info.run_id),
                            metrics=dict(r.data.metrics),
                            model_dir=r.data.tags.get(MODEL_DIR_TAG),
                            kept_layers=r.data.params.get("pruning.kept_layers"),
                            logged_model=r.data.tags.get(LOGGED_MODEL_TAG)) for r in runs]


def _alive_owner(tags: Mapping[str, str]) -> bool:
    """Whether the process named by a run's owner tags still runs (True when it cannot tell:
    another host, or a run logged without owner tags)."""
    if tags.get(HOST_TAG) != socket.gethostname():
        return True
    try:
        return _is_alive(int(tags[PID_TAG]), float(tags[PID_START_TAG]))
    except (KeyError, ValueError):
        return True


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
    run_id: str  # the run that trained (a reuse points to it)
    metrics: dict[str, float]
    model_dir: str | None = None  # where that run, or this reuse of it, keeps the saved model
    kept_layers: str | None = None  # its `pruning.kept_layers` param
    logged_model: str | None = None  # the URI of the model it logged (tracking.log_model=true)


def _create_sqlite_store(uri: str) -> None:
    """Create a SQLite store that does not exist yet under a temporary name, migrate it, then
    move it into place. A process killed while migrating leaves a stray temporary file, not a
    half-migrated store that every later run fails to open ("table ... already exists").
    Called with the store's lock held."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = sqlite_path(uri)
    if path is None or path.exists():
        return
    for stale in path.parent.glob(f".{path.name}.new-*"):  # a killed creator's; we hold the lock
        stale.unlink(missing_ok=True)
    work = path.with_name(f".{path.name}.new-{os.getpid()}")
    store = SqlAlchemyStore(f"{SQLITE}{work}", artifact_root(uri))
    store.engine.dispose()
    os.replace(work, path)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """A file lock beside a SQLite store (or in the temp dir for servers) around its creation,
    migration and the creation of experiments in it."""
    from filelock import FileLock

    db = sqlite_path(uri)
    if db is not None:
        folder = db.resolve().parent
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.gettempdir())
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    with FileLock(str(folder / f".sbert_exp-{digest}.lock"), timeout=300):
        yield
