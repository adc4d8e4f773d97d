"""The package's shape: layers without upward imports or circles, small modules and functions,
and one declaration of the layer strategies that every listing reads."""

from __future__ import annotations

import ast
import re
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


def test_every_strategy_listing_reads_the_one_declaration():
    """The report's order and lines, the plots' colours and labels, the layer-score metric and
    chart, what a scored strategy reads: all come from `STRATEGIES`, and the pure core holds no
    presentation (colours, chart axes) and no MLflow names."""
    from sbert_exp import selection
    from sbert_exp.pruning import strategies
    from sbert_exp.pruning.strategies import SCORED, STRATEGIES, Evidence, Strategy
    from sbert_exp.report import plots, style, table

    assert list(table.STRATEGY_ORDER) == [*map(str, STRATEGIES), *style.OTHER_ROWS]
    assert table.LINE_STRATEGIES == [str(s) for s in STRATEGIES]
    assert set(style.COLORS) == set(table.STRATEGY_ORDER)
    assert {plots._removed(str(s)) for s in Strategy} == {d.label for d in STRATEGIES.values()}
    assert SCORED == {s for s, d in STRATEGIES.items() if d.chooses is None}
    assert set(selection.METRICS) == set(style.SCORE_AXES) == SCORED
    for s in SCORED:  # a scored strategy names its evidence, logs its scores and draws them
        assert isinstance(STRATEGIES[s].evidence, Evidence)
        assert selection.METRICS[s].startswith("pruning/")
    for s in set(Strategy) - SCORED:
        assert STRATEGIES[s].chooses(12, 4) == sorted(set(STRATEGIES[s].chooses(12, 4)))
        assert STRATEGIES[s].evidence is None
    core = Path(strategies.__file__).read_text()
    assert not re.search(r"tab:|pruning/|mlflow", core)


def test_no_strategy_is_named_outside_its_declaration():
    """Code branches on what a strategy scores on, never on its name: a new scored strategy
    changes `pruning/strategies.py` and `selection.py` only."""
    named = re.compile(r"Strategy\.(block_influence|angular|greedy_dev)\b|"
                       r"[=!]= \"(block_influence|angular|greedy_dev)\"|"
                       r"in \(\"(block_influence|angular|greedy_dev)\"")
    allowed = {"sbert_exp/pruning/strategies.py", "sbert_exp/selection.py",
               "sbert_exp/report/style.py"}
    found = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "sbert_exp").rglob("*.py"))
             if str(p.relative_to(ROOT)) not in allowed
             for i, line in enumerate(p.read_text().splitlines(), 1) if named.search(line)]
    assert found == []


def test_no_module_defines_a_logger_it_never_uses():
    unused = [str(p.relative_to(ROOT)) for p in (ROOT / "sbert_exp").rglob("*.py")
              if "log = logging.getLogger(__name__)" in p.read_text()
              and "log." not in p.read_text().replace("log = logging.getLogger", "")]
    assert unused == []
