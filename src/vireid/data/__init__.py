"""Data layer: dataset readers, the synthetic generator, sampling and transforms."""
