"""The sweeper wraps Hydra's BasicSweeper and reads a few of its internals (no public extension
point lets a sweep check every job before the first runs and go on after a job fails). Hydra is
pinned; this test names every internal the sweeper uses, so an upgrade that moves one fails
here, not in a user's sweep."""

from __future__ import annotations

import inspect
import re
from importlib import metadata

from conftest import ROOT


def test_hydra_is_the_pinned_version():
    pinned = re.search(r'"hydra-core==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned is not None
    assert metadata.version("hydra-core") == pinned.group(1)


def test_the_basic_sweeper_internals_the_sweeper_reads_are_there():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.utils import JobReturn, JobStatus

    basic = BasicSweeper(max_batch_size=None, params=None)
    for attribute in ("max_batch_size", "overrides", "launcher", "hydra_context"):
        assert hasattr(basic, attribute), attribute
    for method in ("setup", "_parse_config", "split_arguments", "is_done", "get_job_batch"):
        assert callable(getattr(basic, method)), method
    assert list(inspect.signature(BasicSweeper.split_arguments).parameters) == [
        "overrides", "max_batch_size"]
    failed = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("bad"))
    assert isinstance(failed._return_value, ValueError)  # read without the stderr line


def test_the_sweeper_module_uses_no_other_internal():
    source = (ROOT / "sbert_exp" / "job" / "sweeper.py").read_text()
    internals = set(re.findall(r"hydra\._internal[\w.]*", source))
    assert internals == {"hydra._internal.core_plugins.basic_sweeper"}
    assert set(re.findall(r"\bbasic\.(_\w+)", source)) == {"_parse_config"}
    assert set(re.findall(r"\.(_return_value)\b", source)) == {"_return_value"}
