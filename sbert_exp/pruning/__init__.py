"""Layer pruning's pure core: the strategies (declared once), the kept-layer rules, and the
importance scores computed from hidden states."""
