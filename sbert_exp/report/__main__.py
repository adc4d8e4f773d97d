"""`python -m sbert_exp.report`: the report of a sweep (see `sbert_exp.report.cli`)."""

import sys

from sbert_exp.report.cli import main

sys.exit(main())
