"""One config trained once across machines that share only a tracking server: a claim run.

A job that is about to train or reuse a config creates a claim: a RUNNING run tagged with the
config key in the experiment `<experiment>.claims`. Then it looks at the live claims of that key:

- another claim already *settled* (its holder is training): wait for it to end;
- a live claim with a lower run id: wait (the lowest id goes first);
- its own claim the lowest and none settled: look once more after `settle` seconds, and if
  that still holds, mark it settled and go on. A claim created later sees the settled tag
  and waits; one created in between has a lower id or sees the tag on its second look.

A claim ends (FINISHED) when the job leaves its block, whatever happened. A claim whose holder
is gone (its SLURM job ended, per `sacct`, or its process on this host) is marked KILLED by the
first job that waits on it, so that a cancelled job does not block its config for ever. No
clock of another machine is compared with this one's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from sbert_exp.tracking.store import alive_owner, owner_tags
from sbert_exp.tracking.tags import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from sbert_exp.utils import interrupts

log = logging.getLogger(__name__)

CLAIM_TAG = "sbert_exp.claim"  # the config key a claim run claims
SETTLED_TAG = "sbert_exp.claim_settled"  # set when its holder goes on to train or reuse
CLAIMS_SUFFIX = ".claims"  # the claims' experiment: <experiment>.claims


@contextlib.contextmanager
def claim(client: Any, experiment: str, key: str, settle: float = 2.0,
          poll: float = 5.0) -> Iterator[None]:
    """Hold the claim on config `key` among every job that logs to `client`'s store."""
    where = _claims_experiment(client, experiment)
    with interrupts.shielded():
        mine = client.create_run(where, run_name=f"claim {key[:12]}",
                                 tags={CLAIM_TAG: key, **owner_tags()}).info.run_id
    try:
        _wait_for_turn(client, where, key, mine, settle, poll)
        yield
    finally:
        with interrupts.shielded():
            client.set_terminated(mine, status="FINISHED")


def _wait_for_turn(client: Any, where: str, key: str, mine: str, settle: float,
                   poll: float) -> None:
    candidate, told = False, False
    while True:
        interrupts.check()
        live = _live_claims(client, where, key)
        ahead = [r for r in live if r.info.run_id != mine and (
            r.data.tags.get(SETTLED_TAG) == "true" or r.info.run_id < mine)]
        if ahead:
            if not told:
                log.info("a job with the same config holds it (claim %s): waiting to reuse its "
                         "result", ahead[0].info.run_id)
                told = True
            candidate = False
            time.sleep(poll)
        elif not candidate:
            candidate = True
            time.sleep(settle)
        else:
            with interrupts.shielded():
                client.set_tag(mine, SETTLED_TAG, "true")
            return


def _live_claims(client: Any, where: str, key: str) -> list[Any]:
    """The RUNNING claims of `key`; those whose holder is gone are marked KILLED and left out."""
    runs = client.search_runs([where], filter_string=f"tags.`{CLAIM_TAG}` = '{key}' and "
                                                     "attributes.status = 'RUNNING'",
                              max_results=1000)
    live = []
    for run in runs:
        if alive_owner(run.data.tags):
            live.append(run)
        else:
            with interrupts.shielded():
                client.set_tag(run.info.run_id, "error", "killed: its holder ended without "
                                                         "releasing it")
                client.set_terminated(run.info.run_id, status="KILLED")
            log.info("claim %s: its holder is gone, marked KILLED", run.info.run_id)
    return live


def _claims_experiment(client: Any, experiment: str) -> str:
    from mlflow.exceptions import MlflowException

    name = experiment + CLAIMS_SUFFIX
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException:  # another job created it first
        return client.get_experiment_by_name(name).experiment_id
