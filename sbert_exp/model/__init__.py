"""The model: loading a base, its layers and internals, vocabulary trimming, export."""
