"""The MLflow model registry: the model to ship as a registered version with an alias."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from sbert_exp.errors import UserError
from sbert_exp.tracking import uris
from sbert_exp.tracking.tags import LOGGED_MODEL_TAG

REGISTRY_ALIAS = "recommended"  # the registered version of the model to ship


def register(uri: str, model_uri: str, name: str, tags: Mapping[str, object] | None = None) -> str:
    """Register a logged model (runs:/<run id>/<path> or models:/<model id>) as a version of
    `name`, once per source, with `tags` (what it scored), and point the `recommended` alias
    at it; returns the version."""
    from mlflow.exceptions import MlflowException

    client = uris.client(uri)
    try:
        source, run_id, model_id = _model_source(client, model_uri)
        try:
            client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        same = [v for v in (client.search_model_versions(f"run_id = '{run_id}'") if run_id
                            else []) if v.name == name and v.source == source]
        version = same[0].version if same else client.create_model_version(
            name, source, run_id=run_id, model_id=model_id).version
        for key, value in (tags or {}).items():
            client.set_model_version_tag(name, version, key, str(value))
        client.set_registered_model_alias(name, REGISTRY_ALIAS, version)
    except MlflowException as e:
        first = str(e.message).strip().splitlines()[0][:300] if str(e.message).strip() else ""
        raise UserError(f"cannot register the logged model {model_uri} as {name!r} in {uri} "
                        f"({first}): pass --register NAME, or check the run's "
                        f"{LOGGED_MODEL_TAG} tag") from e
    return str(version)


def _model_source(client, model_uri: str) -> tuple[str, str | None, str | None]:
    """(artifact location, run id, logged model id) of a model URI, read with `client`.

    mlflow.register_model resolves these URIs itself, but through the process-wide tracking URI
    (MLflow 3.17: fluent._register_model, and the SQL registry store for models:/ sources), not a
    client's: the same resolution here, with the client of the sweep's store.
    """
    from mlflow.exceptions import MlflowException

    if model_uri.startswith("models:/m-"):
        model = client.get_logged_model(model_uri[len("models:/"):].strip("/"))
        return model.artifact_location, model.source_run_id, model.model_id
    parsed = parse_runs_uri(model_uri)
    if parsed is not None:
        run_id, path = parsed
        run = client.get_run(run_id)
        # MLflow 3 keeps a logged model's files with the model, not the run; a folder logged as
        # run artifacts (log_artifacts) is the other place a runs:/ URI can point to.
        logged = [m for m in client.search_logged_models([run.info.experiment_id],
                                                         filter_string=f"name = '{path}'")
                  if m.source_run_id == run_id]
        if logged:  # logged more than once under one name: the newest
            model = max(logged, key=lambda m: m.creation_timestamp)
            return model.artifact_location, run_id, model.model_id
        if client.list_artifacts(run_id, path or None):
            return f"{run.info.artifact_uri.rstrip('/')}/{path}".rstrip("/"), run_id, None
        raise MlflowException(f"run {run_id} has no logged model or artifacts named {path!r}")
    return model_uri, None, None


def parse_runs_uri(uri: str) -> tuple[str, str] | None:
    """(run id, artifact path) of `runs:/<run id>/<path>` ("" for the run's root), None for a URI
    of another scheme; a malformed runs URI raises MlflowException.

    The rules of MLflow's own parser (RunsArtifactRepository.parse_runs_uri, not public API),
    less a trailing slash: a profile between `runs://` and the run id is not part of either.
    """
    from mlflow.exceptions import MlflowException

    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "runs":
        return None
    run_id, _, path = parsed.path.removeprefix("/").partition("/")
    if not parsed.path.startswith("/") or not run_id:
        raise MlflowException(f"not a runs URI: {uri!r} (runs:/<run id>/<artifact path>)")
    return run_id, path.strip("/")
