"""Data and assets: reading pair and sentence files, the embedded models and datasets, the
language sets and texts, the e5 converter, content digests."""
