"""Data layer: importers, validation, item vocabulary, sequences and leave-one-out splits (polars, no torch)."""
