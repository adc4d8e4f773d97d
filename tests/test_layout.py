"""The package's shape: layers without upward imports or circles, small modules and functions,
and one declaration of the layer strategies that every listing reads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "sbert_exp"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 350, 60


def test_the_import_layers_contract_is_kept():
    """pyproject.toml's import-linter contract (also `make lint`): each sub-package imports only
    those below it, so no import circle runs between them."""
    proc = subprocess.run([sys.executable, "-c",
                           "import sys; from importlinter.cli import lint_imports; "
                           "sys.exit(lint_imports())"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 kept, 0 broken" in proc.stdout


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_every_strategy_listing_reads_the_one_declaration(monkeypatch):
    """The report's order and lines, the plots' colours and labels, the layer-score metric and
    chart: all come from `STRATEGIES`."""
    from sbert_exp.pruning.strategies import OTHER_ROWS, SCORED, STRATEGIES, Strategy
    from sbert_exp.report import plots, table

    assert list(table.STRATEGY_ORDER) == [*map(str, STRATEGIES), *OTHER_ROWS]
    assert table.LINE_STRATEGIES == [str(s) for s in STRATEGIES]
    assert plots.COLORS == {str(s): d.color for s, d in {**STRATEGIES, **OTHER_ROWS}.items()}
    assert {plots._removed(str(s)) for s in Strategy} == {d.label for d in STRATEGIES.values()}
    assert SCORED == {s for s, d in STRATEGIES.items() if d.chooses is None}
    for s in SCORED:  # a scored strategy logs its scores and draws them
        assert STRATEGIES[s].score_metric.startswith("pruning/") and STRATEGIES[s].score_axes
    for s in set(Strategy) - SCORED:
        assert STRATEGIES[s].chooses(12, 4) == sorted(set(STRATEGIES[s].chooses(12, 4)))


def test_no_module_defines_a_logger_it_never_uses():
    unused = [str(p.relative_to(ROOT)) for p in (ROOT / "sbert_exp").rglob("*.py")
              if "log = logging.getLogger(__name__)" in p.read_text()
              and "log." not in p.read_text().replace("log = logging.getLogger", "")]
    assert unused == []
