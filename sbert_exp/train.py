"""Hydra entrypoint: `python -m sbert_exp.train [-m] key=value ...` runs one job per config."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sbert_exp import errors
from sbert_exp.config.location import CONF_DIR as _CONF
from sbert_exp.config.schema import TrainConfig, register_configs, to_train_config
from sbert_exp.errors import UserError
from sbert_exp.job.sweeper import read_sweep_file
from sbert_exp.utils import interrupts

log = logging.getLogger(__name__)
register_configs()
# Absolute, so the configs are found however this module is reached (`python -m`, an import,
# the sbert-exp-train command of an installed wheel).
CONF_DIR = str(_CONF)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    from sbert_exp.tracking.runs import flatten
    from sbert_exp.tracking.store import check_reachable, lost_server

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    tags = {"overrides": " ".join(hydra_cfg.overrides.task) or "(none)"}
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    parent = read_sweep_file(Path(hydra_cfg.sweep.dir)).get("parent_run_id") if multirun else None
    params: dict[str, str] = {}
    try:
        train_cfg: TrainConfig = to_train_config(cfg)
        params = flatten(OmegaConf.to_container(cfg, resolve=True))
        if not multirun:  # a sweep checked its server before its first job
            check_reachable(train_cfg.tracking)
        from sbert_exp.job.run import run_job  # torch, transformers: seconds to import
        metrics = run_job(train_cfg, output_dir, params, tags, parent_run_id=parent,
                          job=hydra_cfg.job.num if multirun else None)
    except UserError as e:
        if multirun:
            # The sweep checked every job before it started, so this is news (a file changed
            # meanwhile): the sweep goes on, and this job's folder and .log say why it failed.
            log.error("%s", e)
            _record_failed_job(cfg, hydra_cfg.job.num, params, tags, parent, e)
            raise
        _remove_unfinished(output_dir)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as e:
        if multirun:  # the sweep goes on; the job's .log keeps the traceback
            lost = lost_server(e)
            if lost is not None:  # not a bug: one line, as the sweep says it
                log.error("error: %s", lost)
                raise UserError(lost) from None
            log.exception("job %d failed", hydra_cfg.job.num)
        raise
    return metrics["sts_test/spearman_cosine"]


def _record_failed_job(cfg: DictConfig, num: int, params: dict[str, str], tags: dict[str, str],
                       parent: str | None, error: UserError) -> None:
    """In a sweep, a job stopped by its checks still gets a FAILED child run saying why."""
    from sbert_exp.config.schema import TrackingConfig
    from sbert_exp.tracking.runs import Tracker

    with contextlib.suppress(Exception):  # the tracking config itself may be what is wrong
        tracking = TrackingConfig(**OmegaConf.to_container(cfg.tracking, resolve=True))
        with contextlib.suppress(UserError), \
                Tracker(tracking).run(f"job {num} (failed checks)", tags, parent) as run:
            run.log_params(params)
            raise error


def _remove_unfinished(output_dir: Path) -> None:
    """Drop the folder Hydra made for a single run that failed its checks, and the dated folders
    above it that this left empty (outputs/DATE/TIME): nothing half-written stays."""
    if (output_dir / "metrics.json").exists() or (output_dir / "model").exists():
        return
    shutil.rmtree(output_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in output_dir.resolve().parents:
        if cwd not in parent.parents:  # never the working directory or anything above
            break
        try:
            parent.rmdir()
        except OSError:  # not empty: other runs live there
            break


def _schema_keys(object_type: object) -> str:
    if dataclasses.is_dataclass(object_type):
        return ", ".join(f.name for f in dataclasses.fields(object_type))
    return ""


def _one_line(error: BaseException) -> str | None:
    """The message for errors that are the user's to fix; None for bugs (they keep a traceback).

    Hydra's and OmegaConf's errors are read by their types and public attributes only; where
    those do not name the key, the line says less.
    """
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from sbert_exp.tracking.store import lost_server

    chain = errors.chain(error)
    own = next((e for e in chain if isinstance(e, UserError)), None)
    if own is not None:
        return str(own)
    lost = lost_server(error)
    if lost is not None:
        return lost
    first = chain[0]
    if isinstance(first, MissingConfigException) and first.options is not None:
        group, _, name = (first.missing_cfg_file or "").rpartition("/")
        line = f"{group}={name} is not an option: choose one of {', '.join(first.options)}"
        if group == "hydra/launcher" and name in LAUNCHERS and name not in first.options:
            line += f" ({name} comes with the launchers extra: pip install 'sbert_exp[launchers]')"
        return line
    if isinstance(first, OverrideParseException):
        return f"cannot parse override {first.override!r}: {_first_line(first)}"
    cause = next((e for e in chain if isinstance(e, OmegaConfBaseException)
                  and getattr(e, "full_key", None)), None)
    if isinstance(first, ConfigCompositionException) and cause is not None:
        if isinstance(cause, ConfigKeyError | ConfigAttributeError):
            keys = _schema_keys(cause.object_type)
            where = cause.full_key.rpartition(".")[0] or "the config"
            return f"{cause.full_key} is not a setting" + (f": {where} has {keys}" if keys else "")
        return f"{cause.full_key}={cause.value}: {_first_line(cause.msg)}"
    if isinstance(first, AssertionError) and isinstance(chain[-1], AssertionError) and \
            str(first).startswith("Unexpected type for root"):
        # OmegaConf asserts when an override sets a key below a null node; it does not say which.
        return ("an override sets a key below a null node of this config (e.g. phase=nli has "
                "no sts stage, so phase.sts.* cannot be set): choose an option that defines it, "
                "or drop that override")
    if isinstance(first, ConfigCompositionException | OmegaConfBaseException):
        return _first_line(first)
    return None


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# The launchers of the `launchers` extra (pyproject.toml), named when one is not installed.
LAUNCHERS = ("joblib", "submitit_local", "submitit_slurm")
# Hydra's command-line modes: at most one per call.
MODES = {"--run": "-r", "--multirun": "-m", "--cfg": "-c", "--info": "-i",
         "--shell-completion": "-sc"}


def _usage_error(argv: list[str]) -> str | None:
    """What is wrong with the command line's modes, before Hydra starts (None: nothing)."""
    given = [long for long, short in MODES.items() if long in argv or short in argv]
    if len(given) > 1:
        return f"use one of {', '.join(MODES)} at a time, not {' and '.join(given)}"
    return None


def cli() -> None:
    """Run Hydra; config, asset and data errors end in one line on stderr with exit code 2,
    Ctrl-C in one line with exit code 130 (HYDRA_FULL_ERROR=1 keeps errors' tracebacks)."""
    interrupts.install()  # Ctrl-C is never lost, and never cuts a tracking call in half
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    usage = None if full else _usage_error(sys.argv[1:])
    if usage is not None:
        print(f"error: {usage}", file=sys.stderr)
        sys.exit(2)
    # Let exceptions reach us instead of Hydra's multi-line report, then print one line; the
    # variable is the caller's again afterwards (cli may run in a caller's process).
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except KeyboardInterrupt:
        _interrupted()
    except Exception as e:
        if interrupts.interrupted():  # an error on the way out of a Ctrl-C
            _interrupted()
        message = None if full else _one_line(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        if before is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = before
    if interrupts.interrupted():  # the work ended anyway; the user still asked to stop
        _interrupted()


def _interrupted() -> None:
    # On a line of its own: Ctrl-C may cut a progress bar (or the terminal's "^C") mid-line.
    print(f"\n{INTERRUPTED}", file=sys.stderr)
    sys.exit(130)


INTERRUPTED = "interrupted: run the same command again to finish; finished jobs are reused"


if __name__ == "__main__":
    cli()
