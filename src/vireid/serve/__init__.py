"""``vireid serve``: a web page and JSON API that search a gallery index with a query image.

:func:`~vireid.serve.app.create_app` builds the FastAPI app from a loaded embedder and index;
:mod:`vireid.serve.security` holds the access rules, :mod:`vireid.serve.uploads` the upload
checks and :mod:`vireid.serve.gallery` the safe reading of gallery files.
"""

from vireid.serve.app import create_app
from vireid.serve.uploads import ServeLimits, UploadError

__all__ = ["ServeLimits", "UploadError", "create_app"]
