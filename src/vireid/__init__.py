"""vireid: visible-infrared (cross-modality) person re-identification toolkit.

The Python front door::

    import vireid
    model = vireid.load("runs/demo")                 # a run folder, a .pt checkpoint or an exported .onnx
    emb = model.embed(["a.jpg", "b.png"])            # [2, D] float32, L2-normalised; modality guessed
    emb = model.embed(pil_image, modality="ir", flip=True)
    score = float(emb[0] @ emb[1])                   # cosine similarity
"""

from vireid._compat import ensure_torchvision

ensure_torchvision()

__version__ = "0.1.0"


def load(model: str, device: str = "cpu", flip: bool | None = None):
    """The embedder of a run folder, ``.pt`` checkpoint or exported ``.onnx`` model
    (:class:`vireid.inference.embedder.Embedder`).

    Its :meth:`~vireid.inference.embedder.Embedder.embed` takes paths, PIL images or uint8 numpy
    arrays of any size, with ``modality="auto"`` (grey-level images are infrared,
    :mod:`vireid.data.modality`), one spelling for all, or one per image, and returns
    L2-normalised embeddings ``[N, D]``. ``flip`` sets test-time flip (default: the model's
    ``eval.flip``). A path that does not exist raises :class:`vireid.errors.VireidError`.
    """
    from vireid.inference.loading import load_embedder

    embedder = load_embedder(model, device=device)
    if flip is not None:
        embedder.flip = bool(flip)
    return embedder


__all__ = ["__version__", "load"]
