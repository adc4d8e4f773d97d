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


# The benchmarks that build and measure forms, with their quickest settings; on the tiny model
# (SBERT_EXP_BENCH_OVERRIDES), so each runs its real path in seconds. overhead.py and scaling.py
# time whole `python -m sbert_exp.train` processes on the embedded model: their imports are
# checked above, the command they run by the job tests.
QUICK = {
    "encode_speed.py": ["--rounds", "1", "--sentences", "16"],
    "export_speed.py": ["--rounds", "1", "--sentences", "16"],
    "onnx_fp32.py": ["--rounds", "1", "--sentences", "16"],
    "peers.py": ["--rounds", "1", "--sentences", "16", "--latency", "3"],
    "precision.py": ["--rounds", "1", "--sentences", "16", "--train-sentences", "64"],
}


# make test runs the quickest (seconds); the others build every form (20 s to 2 min) and run in
# make test-slow. The import check above, in make test, covers every script.
FAST = ("encode_speed.py",)


@pytest.mark.parametrize("script", [pytest.param(s, marks=() if s in FAST else pytest.mark.slow)
                                    for s in sorted(QUICK)])
def test_a_bench_script_runs_on_the_tiny_model(script, tiny_bert, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from conftest import SMALL_STS_TEST, TINY_LAYERS

    tiny = ["base_model.name=tiny_bert", "base_model.source=local",
            f"base_model.location={tiny_bert}", f"base_model.num_layers={TINY_LAYERS}",
            "base_model.prefix=", "base_model.languages=[]", "dataset.sts_test.source=local",
            f"dataset.sts_test.location={tiny_bert / SMALL_STS_TEST}"]
    # The prepared assets as they are; the caches a benchmark writes (references, teacher
    # embeddings) in this test's folder, not the user's.
    from sbert_exp.utils.cache import cache_dir

    cache = tmp_path / "cache"
    cache.mkdir()
    for entry in cache_dir().iterdir():
        if entry.name not in ("references", "teacher_embeddings", "layer_scores"):
            (cache / entry.name).symlink_to(entry)
    env = {**os.environ, "SBERT_EXP_BENCH_OVERRIDES": json.dumps(tiny),
           "SBERT_EXP_BENCH_OUT": str(tmp_path), "SBERT_EXP_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, str(BENCH / script), *QUICK[script]], env=env,
                          capture_output=True, text=True, timeout=600)
    table = tmp_path / script.replace(".py", ".md")
    # Exit 1 with its table written: a target missed, as it may on a tiny model; else a crash.
    assert proc.returncode == 0 or (proc.returncode == 1 and table.is_file()), \
        proc.stderr[-3000:]
    assert table.read_text().startswith("## ") and "| " in table.read_text()
