"""The sweep report: its table, the board of models to ship, the recommendation, the plots,
the command line (`python -m sbert_exp.report`)."""
