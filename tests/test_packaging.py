"""The package installs as one: its list of sub-packages, its declared dependencies, and a wheel
that runs from outside the clone."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, tiny_overrides

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"sentence_transformers": "sentence-transformers", "hydra": "hydra-core",
                 "yaml": "pyyaml", "sklearn": "scikit-learn"}


def _requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[\[<>=~!; ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


def test_the_package_list_holds_every_sub_package():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "sbert_exp").rglob("__init__.py")}
    on_disk |= {".".join(p.parent.relative_to(ROOT).parts)
                for p in (ROOT / "hydra_plugins").rglob("__init__.py")}
    assert listed - {"sbert_exp.conf"} == on_disk
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"sbert_exp.conf": "conf"}


def _third_party_imports() -> dict[str, str]:
    """Top-level module -> a file importing it, for every import in the package that is
    neither the standard library nor the package itself."""
    found: dict[str, str] = {}
    for path in sorted([*(ROOT / "sbert_exp").rglob("*.py"),
                        *(ROOT / "hydra_plugins").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("sbert_exp", "__future__"):
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_third_party_package_is_declared():
    declared = _requirement_names(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        declared |= _requirement_names(extra)
    missing = {module: where for module, where in _third_party_imports().items()
               if DISTRIBUTIONS.get(module, module).lower().replace("_", "-") not in declared}
    assert missing == {}


def test_console_scripts_name_functions_that_exist():
    import importlib

    for command, target in PYPROJECT["project"]["scripts"].items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), command


@pytest.mark.slow
def test_the_wheel_installs_and_runs_a_job_from_outside_the_clone(tiny_bert, tmp_path):
    """Build the wheel, install it (no dependencies: those come from this environment's
    site-packages, without the editable install of the clone) into a new venv, and run
    `sbert-exp-train --cfg job` and a tiny job from a folder outside the clone."""
    import shutil

    source, wheels = tmp_path / "source", tmp_path / "wheels"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("sbert_exp", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(source)], check=True,
                   capture_output=True, text=True)  # in a copy: setuptools writes build/ there
    wheel = next(wheels.glob("sbert_exp-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", purelib], check=True,
                               capture_output=True, text=True).stdout.strip())
    # A path line, not a site dir: the .pth files there (the clone's editable finder) stay unread.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, text=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)

    where = run("python", "-c", "import sbert_exp, sbert_exp.train as t; "
                "print(sbert_exp.__file__); print(t.CONF_DIR)")
    assert where.returncode == 0, where.stderr[-2000:]
    module, conf = where.stdout.split()
    assert Path(module).is_relative_to(site) and not Path(module).is_relative_to(ROOT)
    assert Path(conf) == site / "sbert_exp" / "conf"

    shown = run("sbert-exp-train", "--cfg", "job", "pruning.keep=2")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "keep: 2" in shown.stdout and "name: e5_small" in shown.stdout

    overrides = [*tiny_overrides(tiny_bert, elsewhere, phase="sts"), "pruning.keep=2",
                 "eval.speed_rounds=0", "save_model=false"]
    job = run("sbert-exp-train", "-m", *overrides, f"hydra.sweep.dir={elsewhere / 'sweep'}")
    assert job.returncode == 0, job.stderr[-2000:]
    metrics = list((elsewhere / "sweep").glob("0_*/metrics.json"))
    assert len(metrics) == 1 and "sts_test/spearman_cosine" in metrics[0].read_text()
    report = run("sbert-exp-report", "--sweep", str(elsewhere / "sweep"))
    assert report.returncode == 0, report.stderr[-2000:]


def test_a_launcher_of_the_launchers_extra_that_is_not_installed_names_the_extra():
    from hydra.errors import MissingConfigException

    from sbert_exp.train import _one_line

    error = MissingConfigException("not found", missing_cfg_file="hydra/launcher/joblib",
                                   options=["basic"])
    assert _one_line(error) == (
        "hydra/launcher=joblib is not an option: choose one of basic (joblib comes with the "
        "launchers extra: pip install 'sbert_exp[launchers]')")
    typo = MissingConfigException("not found", missing_cfg_file="hydra/launcher/jobli",
                                  options=["basic", "joblib"])
    assert _one_line(typo) == "hydra/launcher=jobli is not an option: choose one of basic, joblib"
