"""Ctrl-C, placed where it hurts: every sweep or job ends with exit 130 and one line, no run is
left RUNNING, and the same command again finishes the work.

The signal is sent by the process to itself at a chosen call (os.kill runs the Python handler
before the next line), so each case is the same on every machine.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import tiny_overrides
from sbert_exp.utils import interrupts

LINE = "interrupted: run the same command again to finish; finished jobs are reused"


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(autouse=True)
def _sigint_restored():
    """Each test starts with Python's own SIGINT handler, whatever this process inherited (a
    background job of a script starts with SIGINT ignored); train.cli() takes it over, and the
    handler from before comes back after each test."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
    interrupts.reset()


# --- the mechanism ---------------------------------------------------------------------------

def test_a_ctrl_c_inside_a_shielded_call_waits_for_it_to_end():
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.shielded():
        ctrl_c()
        done.append("the call went on")
    assert done == ["the call went on"]
    # Outside the block Python's own handler is back, and nothing of the Ctrl-C stays.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not interrupts.interrupted()


def test_a_second_ctrl_c_inside_a_shielded_call_raises_at_once():
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.shielded():
        ctrl_c()
        done.append("first waited")
        ctrl_c()
        done.append("second waited")
    assert done == ["first waited"]


def test_a_shielded_block_that_raises_keeps_its_own_error():
    with pytest.raises(ValueError, match="the call's own error"), interrupts.shielded():
        ctrl_c()
        raise ValueError("the call's own error")


class _SwallowsInDel:
    def __del__(self) -> None:
        ctrl_c()  # Python prints "Exception ignored in ..." and drops the KeyboardInterrupt
        sum(range(10))


def _record_unraisable(monkeypatch) -> list[type]:
    """What Python swallowed ("Exception ignored in ..."), by type."""
    swallowed: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    return swallowed


def test_a_ctrl_c_that_a_finalizer_swallows_is_not_lost(monkeypatch):
    swallowed = _record_unraisable(monkeypatch)
    interrupts.install()
    obj = _SwallowsInDel()
    del obj  # no KeyboardInterrupt here: Python drops it
    assert swallowed == [KeyboardInterrupt]
    assert interrupts.interrupted()
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()


def test_an_ignored_sigint_stays_ignored():
    """Started with SIGINT ignored (nohup, `cmd &` in a script), the process keeps ignoring it,
    as Python does; shielded calls leave it as it is."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupts.install()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    with interrupts.shielded():
        ctrl_c()  # ignored
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and not interrupts.interrupted()


def test_without_a_ctrl_c_check_passes():
    interrupts.install()
    interrupts.check()
    with interrupts.shielded():
        pass
    assert not interrupts.interrupted()


# --- a sweep and a job, interrupted at each point that matters --------------------------------

def _runs(db: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("tests")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _cli(monkeypatch, argv: list[str], full_error: str | None = None) -> int:
    from sbert_exp import train

    monkeypatch.setattr(sys, "argv", ["train", *argv])
    if full_error is None:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    else:
        monkeypatch.setenv("HYDRA_FULL_ERROR", full_error)
    with pytest.raises(SystemExit) as ended:
        train.cli()
        raise SystemExit(0)  # cli returns on success
    # cli sets it while Hydra runs, and gives the caller's value back (a subprocess started
    # later in this process would inherit it, and skip the one-line errors).
    assert os.environ.get("HYDRA_FULL_ERROR") == full_error
    return ended.value.code


def _at(monkeypatch, owner, name: str, when: str, nth: int = 1) -> list[int]:
    """Send Ctrl-C at the nth call of owner.name: "before" it runs, or "after" it returned."""
    real, calls = getattr(owner, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if when == "before" and len(calls) == nth:
            ctrl_c()
        result = real(*args, **kwargs)
        if when == "after" and len(calls) == nth:
            ctrl_c()
        return result

    monkeypatch.setattr(owner, name, wrapped)
    return calls


def _swallowed_in_a_stage(monkeypatch) -> None:
    from sbert_exp.training import stages

    real, swallowed = stages.train_sts, _record_unraisable(monkeypatch)

    def train_sts(*args, **kwargs):
        obj = _SwallowsInDel()
        del obj  # the KeyboardInterrupt dies in __del__; the stage goes on
        assert swallowed == [KeyboardInterrupt]
        return real(*args, **kwargs)

    monkeypatch.setattr(stages, "train_sts", train_sts)


def _point(monkeypatch, where: str) -> None:
    from hydra._internal.core_plugins import basic_launcher
    from mlflow.tracking import MlflowClient

    from sbert_exp.tracking import runs
    from sbert_exp.training import stages

    if where == "store read before the run":
        _at(monkeypatch, runs.Tracker, "find_finished", "before", nth=2)
    elif where == "creating the run":
        _at(monkeypatch, MlflowClient, "create_run", "before", nth=2)
    elif where == "run created":
        _at(monkeypatch, MlflowClient, "create_run", "after", nth=2)
    elif where == "inside a tracking call":
        _at(monkeypatch, MlflowClient, "log_batch", "before", nth=3)
    elif where == "inside a stage":
        _at(monkeypatch, stages, "train_sts", "before", nth=1)
    elif where == "swallowed inside a stage":
        _swallowed_in_a_stage(monkeypatch)
    elif where == "ending a run":
        _at(monkeypatch, MlflowClient, "set_terminated", "before", nth=1)
    elif where == "between jobs":
        _at(monkeypatch, basic_launcher, "run_job", "after", nth=1)
    else:
        raise AssertionError(where)


def _points(*names: str, fast: tuple[str, ...]) -> list:
    """The fast tier runs the two points that failed before this module existed (a run left
    RUNNING, a Ctrl-C lost); make test-slow runs every point."""
    return [pytest.param(n, marks=() if n in fast else pytest.mark.slow) for n in names]


SWEEP_POINTS = _points("store read before the run", "creating the run", "run created",
                       "inside a tracking call", "inside a stage", "swallowed inside a stage",
                       "ending a run", "between jobs",
                       fast=("run created", "swallowed inside a stage"))
JOB_POINTS = _points("creating the run", "run created", "inside a tracking call",
                     "inside a stage", "swallowed inside a stage", "ending a run",
                     fast=("run created",))


@pytest.mark.parametrize("where", SWEEP_POINTS)
def test_an_interrupted_sweep_ends_cleanly_and_the_same_command_finishes_it(
        tiny_bert, tmp_path, monkeypatch, capsys, where):
    monkeypatch.chdir(tmp_path)
    argv = ["-m", *tiny_overrides(tiny_bert, tmp_path, phase="sts"), "pruning.keep=1,2",
            "eval.speed_rounds=0", "save_model=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    with monkeypatch.context() as patch:
        _point(patch, where)
        assert _cli(monkeypatch, argv) == 130
    assert capsys.readouterr().err.endswith(f"\n{LINE}\n")  # on a line of its own
    runs = _runs(tmp_path / "mlflow.db")
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    parent = next(r for r in runs if r.data.tags.get("sbert_exp.sweep") == "parent")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["failed_jobs"] == "sweep interrupted"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    done = [r for r in kids if r.info.status == "FINISHED"]
    assert len(done) < 2
    assert {r.data.tags.get("error") for r in kids if r not in done} <= {"KeyboardInterrupt: "}

    interrupts.reset()
    assert _cli(monkeypatch, argv) == 0  # the same command again
    runs = _runs(tmp_path / "mlflow.db")
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    again = next(r for r in runs if r.info.run_id == parent.info.run_id)
    assert again.info.status == "FINISHED"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
            and r.info.status == "FINISHED"]
    assert sorted(r.data.params["pruning.keep"] for r in kids) == ["1", "2"]


@pytest.mark.parametrize("where", JOB_POINTS)
def test_an_interrupted_job_ends_cleanly_and_the_same_command_finishes_it(
        tiny_bert, tmp_path, monkeypatch, capsys, where):
    monkeypatch.chdir(tmp_path)
    argv = [*tiny_overrides(tiny_bert, tmp_path, phase="sts"), "pruning.keep=2",
            "eval.speed_rounds=0", "save_model=false", f"hydra.run.dir={tmp_path / 'job'}"]
    nth = {"creating the run": 1, "run created": 1, "inside a tracking call": 2}
    with monkeypatch.context() as patch:
        if where in nth:  # a job alone has no parent run: its first run is its own
            from mlflow.tracking import MlflowClient

            name = "log_batch" if where == "inside a tracking call" else "create_run"
            _at(patch, MlflowClient, name, "after" if where == "run created" else "before",
                nth=nth[where])
        else:
            _point(patch, where)
        assert _cli(monkeypatch, argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == LINE
    # Ctrl-C while the run was being ended FINISHED lets that call end: the job had finished.
    first = [(r.info.status, r.data.tags.get("error")) for r in _runs(tmp_path / "mlflow.db")]
    assert first == ([("FINISHED", None)] if where == "ending a run"
                     else [("FAILED", "KeyboardInterrupt: ")])

    interrupts.reset()
    assert _cli(monkeypatch, argv) == 0
    runs = _runs(tmp_path / "mlflow.db")
    assert sorted(r.info.status for r in runs) == sorted([first[0][0], "FINISHED"])
    assert (tmp_path / "job" / "metrics.json").is_file()


def test_ctrl_c_ends_in_one_line_with_hydra_full_error_too(tiny_bert, tmp_path, monkeypatch,
                                                           capsys):
    """HYDRA_FULL_ERROR=1 keeps errors' tracebacks; Ctrl-C is still exit 130 and one line."""
    monkeypatch.chdir(tmp_path)
    argv = [*tiny_overrides(tiny_bert, tmp_path, phase="sts"), "pruning.keep=2",
            "eval.speed_rounds=0", "save_model=false", f"hydra.run.dir={tmp_path / 'job'}"]
    with monkeypatch.context() as patch:
        _point(patch, "inside a stage")
        assert _cli(monkeypatch, argv, full_error="1") == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == LINE
    assert [(r.info.status, r.data.tags.get("error")) for r in _runs(tmp_path / "mlflow.db")] \
        == [("FAILED", "KeyboardInterrupt: ")]
