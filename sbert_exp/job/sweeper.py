"""Hydra's basic sweeper plus one MLflow parent run per sweep and a report of failed jobs."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sbert_exp.config.schema import TrackingConfig, to_train_config
from sbert_exp.errors import ConfigError, UserError
from sbert_exp.tracking.runs import Tracker
from sbert_exp.tracking.store import check_reachable
from sbert_exp.utils import interrupts
from sbert_exp.utils.atomic import write_text

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"  # in the sweep folder: how jobs anywhere find their parent run


class SweepFailed(UserError):
    """Some jobs of a sweep failed; the others ran to the end."""


def read_sweep_file(sweep_dir: Path) -> dict[str, Any]:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _reason(result: JobReturn) -> str:
    error = result._return_value
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if not isinstance(error, UserError) else text


def _failures(results: list[JobReturn], first: int, swept: set[str]) -> list[str]:
    """One line per failed job of a batch: its number, swept values and error."""
    lines = []
    for idx, result in enumerate(results, start=first):
        if result.status != JobStatus.COMPLETED:
            own = [o for o in result.overrides or []
                   if o.split("=", 1)[0] in swept] or ["(no swept values)"]
            lines.append(f"#{idx} {' '.join(own)}: {_reason(result)}")
            log.error("job failed: %s", lines[-1])
    return lines


def check_slurm(launcher: DictConfig) -> None:
    """hydra/launcher=submitit_slurm: sbatch is on the PATH and the partition exists, checked
    before any job is submitted."""
    if not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
        return
    if shutil.which("sbatch") is None:
        raise ConfigError("hydra/launcher=submitit_slurm needs SLURM's sbatch on the PATH: run "
                          "the sweep on a SLURM login node, start the local one-node cluster "
                          "(make cluster-up), or use hydra/launcher=submitit_local")
    partition = launcher.get("partition")
    if partition:
        found = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True,
                               timeout=30)
        names = sorted(set(found.stdout.split()))
        if found.returncode != 0:
            first = (found.stderr.strip().splitlines() or ["no answer"])[0]
            raise ConfigError(f"SLURM does not answer sinfo ({first}): start it (make "
                              "cluster-up for the local one), or check its controller")
        if partition not in names:
            raise ConfigError(f"hydra.launcher.partition={partition}: SLURM has no such "
                              f"partition (it has: {', '.join(names) or 'none'}): choose one "
                              "of those")


class TrackedSweeper(Sweeper):
    """Runs every job (a failed job does not stop the others) under one MLflow parent run.

    Job batching, `hydra.sweeper.params` and launching are Hydra's basic sweeper's; it is
    wrapped rather than subclassed because Hydra re-imports its core plugins while scanning.
    """

    def __init__(self, max_batch_size: int | None = None, params: Any = None) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        self.basic = BasicSweeper(max_batch_size=max_batch_size, params=params)
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.basic.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.config = config

    def sweep(self, arguments: list[str]) -> Any:
        basic = self.basic
        assert self.config is not None and basic.launcher is not None
        assert basic.hydra_context is not None
        params_conf = [*basic._parse_config(), *arguments]
        parser = OverridesParser.create(config_loader=basic.hydra_context.config_loader)
        parsed = parser.parse_overrides(params_conf)
        swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
        basic.overrides = basic.split_arguments(parsed, basic.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        tracking = TrackingConfig(**OmegaConf.to_container(self.config.tracking, resolve=True))

        # 1. Every check before anything is written or logged: the tracking server answers, and
        # every job composes and passes its checks (config, model files, data).
        check_reachable(tracking)
        check_slurm(self.config.hydra.launcher)
        self._check_jobs(swept)

        # 2. Runs that a killed process left RUNNING become KILLED; the same sweep folder
        # continues its own parent run.
        tracker = Tracker(tracking)
        tracker.end_dead_runs()
        resume = read_sweep_file(sweep_dir).get("parent_run_id")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        sweep_id = f"{sweep_dir.parent.name}/{sweep_dir.name}"
        overrides = " ".join(self.config.hydra.overrides.task) or "(none)"
        parent = tracker.start_parent(f"sweep {sweep_id}",
                                      {"sweep_id": sweep_id, "overrides": overrides,
                                       "sweep_dir": str(sweep_dir.resolve())}, resume=resume)
        write_text(sweep_dir / SWEEP_FILE, json.dumps({
            "parent_run_id": parent, "tracking_uri": tracking.uri,
            "experiment": tracking.experiment, "sweep_id": sweep_id}, indent=1))

        returns: list[list[JobReturn]] = []
        failed: list[str] = []
        initial_job_idx = 0
        finished = False
        try:
            while not basic.is_done():
                interrupts.check()  # a Ctrl-C that a job's library swallowed stops it here
                batch = basic.get_job_batch()  # composed and checked above
                results = list(basic.launcher.launch(batch, initial_job_idx=initial_job_idx))
                failed += _failures(results, initial_job_idx, swept)
                initial_job_idx += len(batch)
                returns.append(results)
            interrupts.check()
            finished = True
        finally:
            tracker.end_parent(parent, ([] if finished else ["sweep interrupted"]) + failed,
                               jobs=initial_job_idx, failed_jobs=len(failed))
        if failed:
            raise SweepFailed(f"{len(failed)} of {initial_job_idx} jobs failed: {failed[0]}"
                              + (f" (and {len(failed) - 1} more, listed above)"
                                 if len(failed) > 1 else ""))
        return returns

    def _check_jobs(self, swept: set[str]) -> None:
        """Compose every job of the sweep and run its checks; the first failure ends the sweep."""
        # Imported here: it pulls in torch, which a sweep needs and Hydra's plugin scan does not.
        from sbert_exp.job.checks import check

        basic = self.basic
        assert basic.hydra_context is not None and self.config is not None
        loader = basic.hydra_context.config_loader
        jobs = [overrides for batch in basic.overrides for overrides in batch]
        tic = time.perf_counter()
        configs = []  # compose them all first: a typo in one value fails before any file is read
        for overrides in jobs:
            cfg = loader.load_sweep_config(master_config=self.config,
                                           sweep_overrides=list(overrides))
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
            configs.append(cfg)
        for idx, (overrides, cfg) in enumerate(zip(jobs, configs, strict=True)):
            try:
                check(to_train_config(cfg))
            except UserError as e:
                own = [o for o in overrides if o.split("=", 1)[0] in swept]
                raise UserError(f"job #{idx} {' '.join(own) or '(no swept values)'}: {e}; "
                                "nothing ran") from None
        log.info("checked %d jobs in %.1f s", len(jobs), time.perf_counter() - tic)
