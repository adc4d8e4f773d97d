"""The README and the pages under docs/: the README shows the Makefile's targets verbatim and
stays short, links every page, and every link, make target, module and path they name exists."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 300

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)
MAKE = re.compile(r"\bmake ([a-z][a-z-]*)")
PYTHON_M = re.compile(r"python -m (sbert_exp(?:\.\w+)*)")
PACKAGE_PATH = re.compile(r"(?<![\w./~-])(sbert_exp/[\w/]*\w\.py)\b")
DOTTED = re.compile(r"(?<![\w./~-])(sbert_exp(?:\.[A-Za-z_]\w*)+)")


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(path: Path) -> str:
    """The page without its fenced code blocks (code holds brackets and comments, not links or
    headings)."""
    return FENCE.sub("", path.read_text())


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub gives a page: lower case, punctuation dropped, spaces to
    hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in HEADING.findall(_prose(path))}


def _named(pattern: re.Pattern) -> dict[str, set[str]]:
    """What `pattern` captures on every page, code included: {page: names}."""
    return {_ids(page): set(pattern.findall(page.read_text())) for page in PAGES}


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


def test_the_readme_reads_in_five_minutes():
    lines = len(README.read_text().splitlines())
    assert 0 < lines < MAX_README_LINES, f"README.md has {lines} lines"


def test_the_readme_links_every_docs_page():
    assert DOCS, "no pages under docs/"
    linked = {Path(target.partition("#")[0]).name for target in LINK.findall(_prose(README))
              if target.startswith("docs/")}
    missing = [page.name for page in DOCS if page.name not in linked]
    assert missing == [], f"README.md does not link {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_every_relative_link_points_at_a_file_and_heading(page):
    links = [t for t in LINK.findall(_prose(page)) if not re.match(r"[a-z]+:", t)]
    broken = []
    for target in links:
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no such heading")
    assert broken == []
    if page == README:
        assert links, "README.md links nothing"


def test_every_make_target_in_the_readme_and_docs_exists():
    targets = set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = _named(MAKE)
    assert named[_ids(README)], "README.md names no make target"
    unknown = {page: sorted(names - targets) for page, names in named.items() if names - targets}
    assert unknown == {}


def test_every_python_module_named_runs():
    named = _named(PYTHON_M)
    assert "sbert_exp.train" in named[_ids(README)]
    missing = {}
    for page, modules in named.items():
        for module in modules:
            spec = _spec(module)
            runnable = spec is not None and (spec.submodule_search_locations is None
                                             or _spec(f"{module}.__main__") is not None)
            if not runnable:
                missing.setdefault(page, []).append(module)
    assert missing == {}


def test_every_package_path_named_exists():
    named = _named(PACKAGE_PATH)
    assert any(named.values()), "no sbert_exp/...py path named anywhere"
    missing = {page: sorted(p for p in paths if not (ROOT / p).is_file())
               for page, paths in named.items()}
    assert {page: paths for page, paths in missing.items() if paths} == {}


def test_every_dotted_name_is_a_module_its_attribute_or_a_tag():
    """`sbert_exp.forms.export.load` must be there; `sbert_exp.reused_from` is an MLflow tag."""
    tags = {tag for source in (ROOT / "sbert_exp").rglob("*.py")
            for tag in re.findall(r"\"(sbert_exp\.\w+)\"", source.read_text())}
    assert "sbert_exp.reused_from" in tags
    unknown = {page: sorted(n for n in names if n not in tags and not _resolves(n))
               for page, names in _named(DOTTED).items()}
    assert {page: names for page, names in unknown.items() if names} == {}


def _spec(module: str):
    try:
        return importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent package is missing
        return None


def _resolves(name: str) -> bool:
    """A module, or one top-level name defined in a module's source (read, not imported)."""
    parts = name.split(".")
    for split in range(len(parts), 1, -1):
        spec = _spec(".".join(parts[:split]))
        if spec is None:
            continue
        rest = parts[split:]
        if not rest:
            return True
        if len(rest) > 1 or spec.origin is None or not spec.origin.endswith(".py"):
            return False
        return rest[0] in _top_level_names(Path(spec.origin))
    return False


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names
