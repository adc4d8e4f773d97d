"""All MLflow access: one run per job, params from the resolved config, namespaced metrics."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from typing import Any

from sbert_exp.config.schema import TrackingConfig
from sbert_exp.errors import ConfigError
from sbert_exp.tracking import claims, uris
from sbert_exp.tracking.calls import Run, call, end_failed
from sbert_exp.tracking.queries import FinishedRun
from sbert_exp.tracking.store import (
    alive_owner,
    artifact_root,
    create_sqlite_store,
    owner_tags,
    sqlite_path,
    store_lock,
)
from sbert_exp.tracking.tags import (
    CONFIG_KEY_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    HOST_TAG,
    JOB_TAG,
    LOGGED_BF16_TAG,
    LOGGED_EXPORT_TAG,
    LOGGED_MODEL_TAG,
    MAX_PARAM_CHARS,
    MODEL_DIR_TAG,
    PARENT_TAG,
    PID_TAG,
    REUSED_TAG,
    SLURM_JOB_TAG,
    SWEEP_TAG,
    UI_TRAINING_VIEW,
)
from sbert_exp.utils import interrupts

log = logging.getLogger(__name__)


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


_opened: set[str] = set()  # store URIs this process has opened (and so created or migrated)


class Tracker:
    def __init__(self, cfg: TrackingConfig) -> None:
        self.cfg = cfg

    def _client(self) -> Any:
        # An explicit client: no process-wide active run or URI to leak between sweep jobs.
        if self.cfg.uri in _opened:
            return uris.client(self.cfg.uri)
        # The first client of a process creates a new SQLite store and runs its migrations:
        # two processes doing that at once break it ("duplicate column name"). One at a time,
        # and never cut halfway by Ctrl-C.
        with store_lock(self.cfg.uri), interrupts.shielded():
            create_sqlite_store(self.cfg.uri)
            client = uris.client(self.cfg.uri)
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
        with store_lock(self.cfg.uri):
            found = client.get_experiment_by_name(self.cfg.experiment)
            if found is not None:
                return found.experiment_id
            try:
                created = client.create_experiment(self.cfg.experiment,
                                                   artifact_location=artifact_root(self.cfg.uri),
                                                   tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:
                # Jobs on other machines do not share our lock: one of them won the race.
                found = client.get_experiment_by_name(self.cfg.experiment)
                if found is None:
                    raise
                return found.experiment_id
        # MLflow's UI opens an experiment on GenAI pages unless the link asks for training runs.
        ui = (self.cfg.uri.rstrip("/") if self.cfg.uri.startswith(("http:", "https:"))
              else "<MLflow UI>")
        log.info("MLflow experiment %r created; its runs in the MLflow UI: %s/#/experiments/%s?%s",
                 self.cfg.experiment, ui, created, UI_TRAINING_VIEW)
        return created

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
        """A run that ends FINISHED, or FAILED with the error as a tag when the block raises.

        No Ctrl-C leaves it RUNNING: it is created, and ended, in shielded calls, and the run
        exists only inside the block that ends it. A Ctrl-C that came during the block (even
        one a library swallowed) ends it FAILED, never FINISHED.
        """
        if not self.cfg.enabled:
            yield Run(None, None)
            return
        client = self._client()
        all_tags = {**(tags or {}), **owner_tags()}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id  # how MLflow nests a child under its parent
        run: Run | None = None
        try:
            with call():
                created = client.create_run(self._experiment_id(client), run_name=name,
                                            tags=all_tags)
                run = Run(client, created.info.run_id)
            log.info("MLflow run %s (%s) in %s", name, run.run_id, self.cfg.uri)
            yield run
            interrupts.check()
        except BaseException as e:
            if run is not None:
                end_failed(client, run.run_id, e)
            raise
        with interrupts.shielded():
            client.set_terminated(run.run_id, status="FINISHED")

    def start_parent(self, name: str, tags: Mapping[str, str],
                     resume: str | None = None) -> str | None:
        """Open the parent run of a sweep (or reopen `resume`); it stays RUNNING until
        `end_parent`."""
        if not self.cfg.enabled:
            return None
        with interrupts.shielded():
            return self._start_parent(name, tags, resume)

    def _start_parent(self, name: str, tags: Mapping[str, str], resume: str | None) -> str:
        client = self._client()
        if resume is not None:
            try:
                previous = client.get_run(resume)
            except Exception:
                previous = None  # deleted, or another store: start a new parent
            if previous is not None:
                owner = previous.data.tags
                if previous.info.status == "RUNNING" and alive_owner(owner):
                    raise ConfigError(
                        f"this sweep folder is in use: its parent run {resume} is RUNNING in "
                        f"process {owner[PID_TAG]}: wait for it, or choose another hydra.sweep.dir")
                client.update_run(resume, status="RUNNING")
                for key, value in owner_tags().items():
                    client.set_tag(resume, key, value)
                if "failed_jobs" in owner:  # from the interrupted attempt
                    client.delete_tag(resume, "failed_jobs")
                log.info("continuing the sweep's parent run %s", resume)
                return resume
        created = client.create_run(self._experiment_id(client), run_name=name,
                                    tags={**tags, SWEEP_TAG: "parent", **owner_tags()})
        return created.info.run_id

    def end_parent(self, run_id: str | None, failed: Sequence[str], jobs: int,
                   failed_jobs: int) -> None:
        """Close a sweep's parent run with its job counts (columns in the UI's run list)."""
        if run_id is None:
            return
        with interrupts.shielded():  # also after a Ctrl-C: the parent says how it ended
            client = self._client()
            Run(client, run_id).write_metrics({"sweep/jobs": jobs,
                                               "sweep/failed_jobs": failed_jobs})
            if failed:
                client.set_tag(run_id, "failed_jobs", "; ".join(failed)[:5000])
            client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def end_dead_runs(self) -> int:
        """Mark KILLED the RUNNING runs of this experiment whose process on this host, or whose
        SLURM job (any host, per `sacct`), is gone.

        A process killed outright (SIGKILL, power loss, scancel) cannot close its runs; the next
        command does. Other hosts' runs outside SLURM, and runs without owner tags, are left as
        they are.
        """
        with interrupts.shielded():
            return self._end_dead_runs()

    def _end_dead_runs(self) -> int:
        opened = self._existing_experiment()
        if opened is None:
            return 0
        client, experiment = opened
        host = socket.gethostname()
        running = client.search_runs(
            [experiment], filter_string="attributes.status = 'RUNNING'", max_results=10_000)
        ended = 0
        for found in running:
            tags = found.data.tags
            if (tags.get(HOST_TAG) != host and not tags.get(SLURM_JOB_TAG)) or alive_owner(tags):
                continue
            what = (f"SLURM job {tags[SLURM_JOB_TAG]}" if tags.get(SLURM_JOB_TAG)
                    else f"process {tags.get(PID_TAG)} on {host}")
            client.set_tag(found.info.run_id, "error",
                           f"killed: {what} ended without closing this run")
            client.set_terminated(found.info.run_id, status="KILLED")
            ended += 1
        if ended:
            log.info("marked %d run(s) KILLED: their process or SLURM job is gone", ended)
        return ended

    def claim(self, key: str) -> contextlib.AbstractContextManager[None]:
        """The claim on config `key` across every machine that logs to this store
        (`sbert_exp.tracking.claims`)."""
        return claims.claim(self._client(), self.cfg.experiment, key)

    def find_finished(self, config_key: str, parent_run_id: str | None = None,
                      job: int | None = None) -> list[FinishedRun]:
        """FINISHED job runs with this config key, earliest first (under this parent and with
        this job number, if given)."""
        with call():
            return self._find_finished(config_key, parent_run_id, job)

    def _find_finished(self, config_key: str, parent_run_id: str | None,
                       job: int | None) -> list[FinishedRun]:
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
                            logged_model=r.data.tags.get(LOGGED_MODEL_TAG),
                            logged_export=r.data.tags.get(LOGGED_EXPORT_TAG),
                            logged_bf16=r.data.tags.get(LOGGED_BF16_TAG)) for r in runs]
