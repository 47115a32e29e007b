"""Text descriptions of person images: the shipped word-level tokenizer (:mod:`.tokenizer`), description
sources for the readers (:mod:`.descriptions`) and the ``tokens`` side input (:mod:`.tokens`)."""
