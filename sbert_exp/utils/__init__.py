"""Helpers below every other package: atomic writes, the disk cache, package versions."""
