"""The tracking store: a server's reachability, a SQLite store's file, creation and lock, and
which process owns a run."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from sbert_exp.config.schema import TrackingConfig
from sbert_exp.errors import ConfigError, chain
from sbert_exp.tracking.tags import HOST_TAG, PID_START_TAG, PID_TAG, SLURM_JOB_TAG
from sbert_exp.utils.cache import cache_dir, file_lock

# MLflow's HTTP client retries 7 times with exponential backoff and waits 120 s per request by
# default: minutes before an unreachable server is reported. Shorter, unless the user set them.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
for _name, _value in HTTP_SETTINGS.items():
    os.environ.setdefault(_name, _value)


PROBE_TIMEOUT_S = 5.0  # connect and read timeout of the one request that checks a server


def check_reachable(cfg: TrackingConfig) -> None:
    """An HTTP tracking server must answer its /health request, and a database store take the
    login (`_check_database`); raise one line otherwise.

    One request, no retries: an unreachable server is reported within PROBE_TIMEOUT_S seconds
    of connect plus read time, before anything is loaded or written.
    """
    if not cfg.enabled:
        return
    if cfg.uri.split(":", 1)[0].split("+", 1)[0] in DATABASES:
        _check_database(cfg)
        return
    if not cfg.uri.startswith(("http://", "https://")):
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


_API_REQUEST = re.compile(r"API request to (https?://\S+?)/(?:api|ajax-api)/")


def lost_server(error: BaseException) -> str | None:
    """The one line for an error that came from a tracking server that no longer answers (the
    error names the request; the server's /health is asked again); None for any other error."""
    for e in chain(error):
        found = _API_REQUEST.search(str(e))
        if found is None:
            continue
        try:
            check_reachable(TrackingConfig(uri=found.group(1)))
        except ConfigError:
            return (f"tracking server {found.group(1)} stopped answering during the run: "
                    "restart it (make mlflow-server, or make cluster-up), then run the same "
                    "command again: finished jobs are reused, and a run it left RUNNING is "
                    "marked KILLED")
        return None
    return None


DATABASES = ("postgresql", "mysql", "mssql")  # store URIs that SQLAlchemy opens directly


def _check_database(cfg: TrackingConfig) -> None:
    """A database store URI: its driver is installed, the database takes the login, and the
    experiment (if it exists) keeps its artifacts where a job without a server can write."""
    import sqlalchemy

    url = sqlalchemy.engine.make_url(cfg.uri)
    shown = url.render_as_string(hide_password=True)
    try:
        engine = sqlalchemy.create_engine(
            url, connect_args={"connect_timeout": 5} if url.get_backend_name() == "postgresql"
            else {})
    except ModuleNotFoundError as e:
        raise ConfigError(f"tracking.uri={shown} needs the database driver {e.name}, which is "
                          "not installed: pip install 'sbert_exp[server]' (PostgreSQL; make "
                          "install has it), or log through a tracking server (tracking=server)"
                          ) from None
    try:
        with engine.connect() as connection:
            row = connection.execute(sqlalchemy.text(
                "select artifact_location from experiments where name = :name"),
                {"name": cfg.experiment}).first()
    except sqlalchemy.exc.ProgrammingError:
        row = None  # no MLflow tables yet: MLflow creates them
    except sqlalchemy.exc.DBAPIError as e:
        first = str(e.orig).strip().splitlines()[0] if str(e.orig).strip() else type(e).__name__
        raise ConfigError(f"tracking.uri={shown}: cannot connect ({first}): check the user, "
                          "password, host and database name") from None
    finally:
        engine.dispose()
    if row is not None and str(row[0]).startswith("mlflow-artifacts:"):
        raise ConfigError(f"experiment {cfg.experiment} in {shown} keeps its artifacts on a "
                          f"tracking server ({row[0]}): log through that server "
                          "(tracking=server, tracking.uri=http://HOST:PORT), not its database")


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


def create_sqlite_store(uri: str) -> None:
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
def store_lock(uri: str) -> Iterator[None]:
    """A file lock beside a SQLite store (or in the temp dir for servers) around its creation,
    migration and the creation of experiments in it."""
    db = sqlite_path(uri)
    folder = db.resolve().parent if db is not None else Path(tempfile.gettempdir())
    with file_lock(folder / f".sbert_exp-{_uri_key(uri)}", timeout=300):
        yield


def owner_tags() -> dict[str, str]:
    import psutil

    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PID_START_TAG: f"{psutil.Process().create_time():.2f}"}
    if os.environ.get("SLURM_JOB_ID"):
        tags[SLURM_JOB_TAG] = f"{os.environ.get('SLURM_CLUSTER_NAME', '')}:" \
                              f"{os.environ['SLURM_JOB_ID']}"
    return tags


def is_alive(pid: int, started: float) -> bool:
    """Whether process `pid` still runs and is the one that started at `started` (not a reuse)."""
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except psutil.AccessDenied:
        return True  # another user's process: it exists
    except (psutil.NoSuchProcess, ValueError):
        return False


# SLURM job states in which the job may still close its runs.
SLURM_LIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
              "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT"}


def slurm_state(job: str) -> str | None:
    """The state `sacct` gives a SLURM job (`<cluster>:<job id>`); None when it cannot tell
    (no sacct here, no accounting, another cluster's job it does not know)."""
    if shutil.which("sacct") is None:
        return None
    cluster, _, job_id = job.rpartition(":")
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id,
                              *(["-M", cluster] if cluster else [])],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.split()
    return words[0] if out.returncode == 0 and words else None  # "CANCELLED by 0": CANCELLED


def alive_owner(tags: Mapping[str, str]) -> bool:
    """Whether the process named by a run's owner tags still runs: its SLURM job's state where
    it ran in one (any host), else its process on this host. True when it cannot tell: another
    host outside SLURM, or a run logged without owner tags."""
    state = slurm_state(tags[SLURM_JOB_TAG]) if tags.get(SLURM_JOB_TAG) else None
    if state is not None:
        return state in SLURM_LIVE
    if tags.get(HOST_TAG) != socket.gethostname():
        return True
    try:
        return is_alive(int(tags[PID_TAG]), float(tags[PID_START_TAG]))
    except (KeyError, ValueError):
        return True


LOCKS = ".sbert_exp-locks"  # beside a SQLite store: one lock file per config key


def lock_dir(uri: str) -> Path:
    """Where jobs that log to `uri` lock a config key while they train or reuse it: beside a
    SQLite store, so that every sweep on the machine that logs there sees the lock. For a
    server, a folder of the cache named by the URI, for locks of this machine only: a config
    is claimed on the server itself (`sbert_exp.tracking.claims`)."""
    db = sqlite_path(uri)
    if db is not None:
        return db.resolve().parent / LOCKS
    return cache_dir() / "locks" / _uri_key(uri)


def _uri_key(uri: str) -> str:
    """A short digest that names a tracking URI in lock file and folder names."""
    return hashlib.sha256(uri.encode()).hexdigest()[:16]
