"""Reading a trained translator's generator from a ``vireid gan train`` checkpoint.

A GAN checkpoint (``RUN/last.pt``, format ``vireid-gan-1``) stores plain tensors and containers, so it is
opened with ``torch.load(weights_only=True)``: no code runs. It holds ``gan_settings`` (the keyword
arguments the generators were built with), ``image_size`` (height, width) and ``networks`` (the state of
:class:`~vireid.modeling.gan.networks.CycleGAN`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vireid.errors import VireidError

FORMAT = "vireid-gan-1"
#: translation direction -> the CycleGAN sub-network doing it
DIRECTIONS = {"visible->infrared": "vis2ir", "infrared->visible": "ir2vis"}


def gan_checkpoint_path(run: str | Path) -> Path:
    """``RUN/last.pt`` for a run folder, the file itself for a ``.pt`` path; one sentence when absent."""
    path = Path(run).expanduser()
    if path.is_dir():
        path = path / "last.pt"
        if not path.is_file():
            raise VireidError(f"GAN run {run} holds no last.pt; train it with vireid gan train first (or wait for its "
                              "first epoch to finish)")
    elif not path.is_file():
        raise VireidError(f"GAN run {run} does not exist; pass the folder of a vireid gan train run or its last.pt")
    return path


def load_gan_checkpoint(run: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict of a GAN run folder or ``.pt`` file, checked to be a ``vireid gan train`` one."""
    path = gan_checkpoint_path(run)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise VireidError(f"GAN checkpoint {path} cannot be read ({type(err).__name__}); it may be truncated or not a "
                          "vireid file") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = " (it is a ReID checkpoint; pass a GAN run)" if isinstance(ckpt, dict) and "model" in ckpt else ""
        raise VireidError(f"{path} is not a checkpoint of vireid gan train{hint}; pass the folder of a GAN run")
    return ckpt


def load_generator(run: str | Path, direction: str, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The frozen generator of ``direction`` (``visible->infrared`` or ``infrared->visible``) of a GAN
    run, in evaluation mode, and its checkpoint (for ``image_size`` and ``config``)."""
    from vireid.modeling.gan.networks import ResnetGenerator

    if direction not in DIRECTIONS:
        raise VireidError(f"translation direction {direction!r} is unknown; use {' or '.join(DIRECTIONS)}")
    ckpt = load_gan_checkpoint(run, map_location)
    prefix = DIRECTIONS[direction] + "."
    generator = ResnetGenerator(**ckpt["gan_settings"]["generator"])
    state = {k[len(prefix):]: v for k, v in ckpt["networks"].items() if k.startswith(prefix)}
    try:
        generator.load_state_dict(state)
    except RuntimeError:
        raise VireidError(f"the {direction} generator stored in GAN run {run} does not fit the settings stored with "
                          "it; the file was edited or written by another version, so retrain the GAN") from None
    generator.to(map_location).eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    return generator, ckpt


__all__ = ["DIRECTIONS", "FORMAT", "gan_checkpoint_path", "load_gan_checkpoint", "load_generator"]
