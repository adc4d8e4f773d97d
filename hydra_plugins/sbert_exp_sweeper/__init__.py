"""Hydra loads sweepers only from classes defined in the hydra_plugins namespace."""

from sbert_exp.job.sweeper import TrackedSweeper as _TrackedSweeper


class TrackedSweeper(_TrackedSweeper):
    """sbert_exp.job.sweeper.TrackedSweeper, under the module name Hydra requires of plugins."""
