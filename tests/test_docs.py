"""The README shows the Makefile's targets verbatim, and every target it names exists."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_readme_shows_make_help_verbatim():
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout
    readme = (ROOT / "README.md").read_text()
    assert f"```text\n{help_text}```" in readme


def test_every_make_target_in_the_readme_exists():
    targets = set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", (ROOT / "README.md").read_text()))
    assert named <= targets, sorted(named - targets)
