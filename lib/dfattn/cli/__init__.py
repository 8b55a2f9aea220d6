"""Command-line entry points (``dfattn-preprocess``, ...)."""
