"""`python tests/fault_runner.py POINT N -m overrides...`: a sweep whose process group is SIGKILLed
at the N-th time it reaches POINT (a training step, a model save, an MLflow write, the moment
before a run is marked FINISHED), or after N seconds for POINT=`after`. Used by test_faults.py.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def die(point: str) -> None:
    print(f"fault: SIGKILL at {point}", file=sys.stderr, flush=True)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def on_nth_call(owner: object, name: str, n: int, point: str, after: bool = False) -> None:
    """Wrap owner.name so that its n-th call kills the process group (before or after it runs)."""
    real = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n and not after:
            die(point)
        result = real(*args, **kwargs)
        if calls[0] == n and after:
            die(point)
        return result

    setattr(owner, name, wrapper)


def install(point: str, n: int) -> None:
    if point == "after":  # a random moment, chosen by the caller
        timer = threading.Timer(n / 1000, die, args=(f"{n} ms",))
        timer.daemon = True
        timer.start()
    elif point == "train_step":  # inside the n-th optimisation step: after the backward pass
        from transformers import Trainer

        on_nth_call(Trainer, "training_step", n, point, after=True)
    elif point == "save":  # the model's files are written, its folder not yet in place
        from sentence_transformers import SentenceTransformer

        on_nth_call(SentenceTransformer, "save", n, point, after=True)
    elif point == "mlflow_write":  # inside a log_batch: metrics written, its tags not yet
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        on_nth_call(SqlAlchemyStore, "_log_metrics", n, point, after=True)
    elif point == "before_finished":  # metrics.json written, the run not yet FINISHED
        from mlflow.tracking import MlflowClient

        real = MlflowClient.set_terminated
        calls = [0]

        def set_terminated(self, run_id, status=None, end_time=None):
            if status == "FINISHED" and self.get_run(run_id).data.tags.get("sbert_exp.job"):
                calls[0] += 1
                if calls[0] == n:
                    die(point)
            return real(self, run_id, status=status, end_time=end_time)

        MlflowClient.set_terminated = set_terminated
    elif point != "none":
        raise SystemExit(f"unknown fault point {point}")


if __name__ == "__main__":
    point, n = sys.argv[1], int(sys.argv[2])
    install(point, n)
    sys.argv = ["sbert_exp.train", *sys.argv[3:]]
    from sbert_exp.train import cli

    cli()
