"""Where the Hydra configs are: inside the installed package, or in the clone's conf/ folder."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def conf_dir() -> Path:
    """A wheel installs the clone's conf/ as sbert_exp/conf (pyproject.toml's package-dir);
    a clone, installed editable or not, reads its conf/ where it is."""
    packaged = PACKAGE / "conf"
    return packaged if (packaged / "train.yaml").is_file() else PACKAGE.parent / "conf"


CONF_DIR = conf_dir()
