"""`python -m sbert_exp.report`: the report of a sweep (see `sbert_exp.report.cli`)."""

from sbert_exp.report.cli import cli

cli()
