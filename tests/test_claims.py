"""The claim run that keeps one config trained once across machines sharing a tracking store:
holders never overlap, a later claimant waits, a claim whose holder is gone does not block."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time

import psutil
import pytest

from sbert_exp.tracking import claims
from sbert_exp.tracking.store import alive_owner
from sbert_exp.tracking.tags import HOST_TAG, PID_START_TAG, PID_TAG, SLURM_JOB_TAG

FAST = {"settle": 0.05, "poll": 0.05}


@pytest.fixture
def client(tmp_path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def _hold(client, key: str, seconds: float, held: list, start: threading.Event) -> None:
    start.wait()
    with claims.claim(client, "tests", key, **FAST):
        entered = time.monotonic()
        time.sleep(seconds)
        held.append((entered, time.monotonic()))


def test_claimants_started_at_once_hold_the_claim_one_after_another(client):
    client.create_experiment("tests.claims")  # as a first claim would
    held, start = [], threading.Event()
    threads = [threading.Thread(target=_hold, args=(client, "k1", 0.3, held, start))
               for _ in range(3)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(timeout=60)
    assert len(held) == 3
    spans = sorted(held)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    exp = client.get_experiment_by_name("tests.claims").experiment_id
    runs = client.search_runs([exp])
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert {r.data.tags[claims.CLAIM_TAG] for r in runs} == {"k1"}
    assert all(r.data.tags[claims.SETTLED_TAG] == "true" for r in runs)


def test_a_later_claimant_waits_for_the_holder_and_other_keys_do_not(client):
    held, start = [], threading.Event()
    first = threading.Thread(target=_hold, args=(client, "k1", 1.0, held, start))
    first.start()
    start.set()
    time.sleep(0.4)  # the first holds it by now
    waited = time.monotonic()
    with claims.claim(client, "tests", "k2", **FAST):  # another config: no wait
        assert time.monotonic() - waited < 0.5
    with claims.claim(client, "tests", "k1", **FAST):
        entered = time.monotonic()
    first.join(timeout=60)
    assert held[0][1] <= entered


def test_a_claim_whose_process_is_gone_is_killed_and_does_not_block(client):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(dead.pid).create_time()
    dead.wait()
    exp = client.create_experiment("tests.claims")
    stale = client.create_run(exp, tags={
        claims.CLAIM_TAG: "k1", HOST_TAG: socket.gethostname(), PID_TAG: str(dead.pid),
        PID_START_TAG: f"{started:.2f}", claims.SETTLED_TAG: "true"}).info.run_id
    began = time.monotonic()
    with claims.claim(client, "tests", "k1", **FAST):
        assert time.monotonic() - began < 5
    run = client.get_run(stale)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "killed: its holder ended without releasing it"


def test_a_run_of_a_slurm_job_is_alive_by_its_state_where_sacct_can_tell(monkeypatch):
    from sbert_exp.tracking import store

    here = {HOST_TAG: "elsewhere", PID_TAG: "1", PID_START_TAG: "0",
            SLURM_JOB_TAG: "local:17"}
    for state, alive in (("RUNNING", True), ("PENDING", True), ("CANCELLED", False),
                         ("COMPLETED", False), ("FAILED", False), (None, True)):
        monkeypatch.setattr(store, "slurm_state", lambda job, s=state: s)
        assert alive_owner(here) is alive, state
