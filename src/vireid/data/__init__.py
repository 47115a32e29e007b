"""Data layer: dataset readers, the synthetic generator, sampling and transforms (batch steps). The readers and
steps register themselves by name (``vireid list datasets``, ``vireid list steps``)."""
