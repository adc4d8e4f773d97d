"""Which store an MLflow call talks to: always the one named, never a process-wide default.

MLflow resolves a URI left out through globals that its own setters also copy into the
environment (`set_tracking_uri` and `set_registry_uri` export MLFLOW_TRACKING_URI and
MLFLOW_REGISTRY_URI for subprocesses), so a URI set once for one call leaks into every later
client of the process and of its children. Here a client names both of its stores, and the
fluent API, where MLflow offers nothing else, is pointed at a store only for the calls inside
`using`, then put back as it was, environment included.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def client(uri: str) -> Any:
    """An MlflowClient whose runs and registered models are both in `uri`."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def using(uri: str) -> Iterator[None]:
    """MLflow's fluent API (log_model, load_model, download_artifacts of models:/ URIs) on
    `uri`, for tracking and registry, inside the block only."""
    import mlflow

    env = {name: os.environ.get(name) for name in _ENV}
    # What a setter left behind differs from the environment it exported only when the
    # environment was changed since; what equals the environment was not set by hand.
    resolved = mlflow.get_tracking_uri()
    tracking = resolved if mlflow.tracking.is_tracking_uri_set() else None
    registry = mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None if tracking == env["MLFLOW_TRACKING_URI"] else tracking)
        mlflow.set_registry_uri(None if registry in (env["MLFLOW_REGISTRY_URI"], resolved)
                                else registry)
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
