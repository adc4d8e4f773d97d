"""Errors that end a run with one line naming the problem and its fix."""

from __future__ import annotations


def chain(error: BaseException | None) -> list[BaseException]:
    """An error and the errors it was raised from or during, outermost first."""
    found: list[BaseException] = []
    while error is not None and error not in found:
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


class UserError(Exception):
    """A problem with the user's config, assets or data; the message says how to fix it."""


class ConfigError(UserError):
    """An override or config value that cannot work."""


class AssetError(UserError):
    """An embedded asset that is missing or does not match its SHA-256."""


class AssetUnavailable(AssetError):
    """An optional asset whose source this machine lacks (e.g. Debian's apt-get)."""


class DataError(UserError):
    """A data file or Hub dataset that cannot be read as sentence pairs."""
