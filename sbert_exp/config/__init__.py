"""Typed config schemas: the dataclasses every Hydra group is checked against."""
