"""The benchmarks cannot rot unseen: every name a bench script imports from the package, or
from bench/common.py, exists (a bench script imports most of them inside functions, where
only running it would find a module that moved)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from conftest import ROOT

BENCH = ROOT / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, name or None, line) of every import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
    return found


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_name_a_bench_script_imports_exists(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    local = {p.stem for p in SCRIPTS}
    missing = []
    for module, name, line in _imports(script):
        if module.split(".")[0] not in {"sbert_exp", *local}:
            continue  # third-party: the package's own dependencies
        try:
            found = (_bench_module(module) if module in local
                     else importlib.import_module(module))
        except ImportError as e:
            missing.append(f"{script.name}:{line}: {module}: {e}")
            continue
        if name is not None and not hasattr(found, name):
            try:  # a submodule: `from sbert_exp import references`
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{script.name}:{line}: {module} has no {name}")
    assert missing == []
