"""Layer-pruned Sentence-BERT experiments."""
