"""The versions of installed packages: the ones that can change a number this tool reports go
into every fingerprint and cache key; an export and a logged model record theirs."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

# The packages whose versions can change a number this tool reports.
PACKAGES = ("sbert_exp", "torch", "transformers", "sentence-transformers", "tokenizers",
            "datasets", "numpy", "scipy")
MISSING = "not installed"


def versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Package -> installed version (MISSING when it is not installed)."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = MISSING
    return found
