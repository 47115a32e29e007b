"""CycleGAN's losses and an identity-preserving term from a frozen vireid ReID model.

CycleGAN (Zhu et al., ICCV 2017; reference repository junyanz/pytorch-CycleGAN-and-pix2pix,
``models/cycle_gan_model.py`` and ``models/networks.py``'s ``GANLoss``):

* adversarial, least-squares form (LSGAN, Mao et al. 2017; ``gan_mode='lsgan'``): a discriminator
  output ``p`` is scored ``mean((p - t)^2)`` with the target ``t = 1`` for real and ``0`` for
  translated images. The discriminator minimises ``0.5 * (L(D(real), 1) + L(D(fake), 0))``, the
  generator ``L(D(G(x)), 1)``;
* cycle: ``lambda_A * |G_B(G_A(a)) - a|_1 + lambda_B * |G_A(G_B(b)) - b|_1`` (mean absolute error),
  ``lambda_A = lambda_B = 10``;
* identity mapping: ``lambda_B * lambda_idt * |G_A(b) - b|_1 + lambda_A * lambda_idt * |G_B(a) - a|_1``
  with ``lambda_idt = 0.5`` (a generator fed an image already of its target domain should leave it alone).

Identity preservation: AlignGAN (Wang et al., ICCV 2019) and JSIA-ReID (Wang et al., AAAI 2020) tie
the translator to identity by training a ReID objective on the generated images. Here the ReID model is a
trained vireid model, frozen: the translated image's embedding (computed with the *target* modality
code, since it now shows that modality) should stay close to the source image's embedding (its own
modality code). :class:`IdentityPreservingLoss` measures ``1 - cos`` (``distance='cosine'``) or the
squared Euclidean distance between L2-normalised embeddings (``distance='l2'``, equal to ``2 - 2 cos``).
The source embedding is computed without gradient, the model's parameters never get one: only the
generator learns from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vireid.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # what vireid models are trained with
from vireid.errors import ConfigError

DISTANCES = ("cosine", "l2")


def lsgan_loss(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """``mean((prediction - target)^2)`` with target 1 (``real``) or 0 (LSGAN, CycleGAN's ``GANLoss``)."""
    prediction = prediction.float()
    target = torch.ones_like(prediction) if real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)


def discriminator_loss(on_real: torch.Tensor, on_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (lsgan(D(real), 1) + lsgan(D(fake), 0))`` (CycleGAN's ``backward_D_basic``)."""
    return 0.5 * (lsgan_loss(on_real, True) + lsgan_loss(on_fake, False))


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (CycleGAN's cycle and identity criteria, ``torch.nn.L1Loss``)."""
    return (output.float() - target.float()).abs().mean()


def to_reid_input(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Generator images in ``[-1, 1]`` -> the normalised input of a vireid model (``(x01 - mean) / std``)."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return ((images + 1.0) * 0.5 - m) / s


def embedding_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Mean over rows of ``1 - cos(a, b)`` or ``|a/|a| - b/|b||^2`` (= ``2 - 2 cos``)."""
    if distance not in DISTANCES:
        raise ConfigError(f"identity-preserving distance {distance!r} is unknown; use cosine or l2")
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    if distance == "cosine":
        return (1.0 - (a * b).sum(dim=1)).mean()
    return (a - b).pow(2).sum(dim=1).mean()


class IdentityPreservingLoss:
    """Distance between the frozen ReID embeddings of source images and their translations (module text).

    ``model`` is a vireid ReID model (``model(images, modalities)`` returns embeddings in evaluation
    mode). It is put in evaluation mode and its parameters stop requiring gradients; it is held outside
    any ``nn.Module`` so that it is neither trained, switched to training mode, nor saved with the GAN.
    """

    def __init__(self, model: nn.Module, distance: str = "cosine") -> None:
        if distance not in DISTANCES:
            raise ConfigError(f"config key 'gan.reid_distance' is {distance!r}; use cosine or l2")
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self._model = (model,)  # a tuple: not registered as a sub-module of anything
        self.distance = distance

    @property
    def model(self) -> nn.Module:
        return self._model[0]

    def embed(self, images: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        out = self.model(to_reid_input(images), modalities)
        if isinstance(out, dict):
            raise ConfigError("the ReID model returned a dict in evaluation mode; pass a vireid run folder or checkpoint")
        return out

    def __call__(self, source: torch.Tensor, source_modalities: torch.Tensor, translated: torch.Tensor,
                 target_modalities: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            reference = self.embed(source, source_modalities)
        return embedding_distance(self.embed(translated, target_modalities), reference, self.distance)


__all__ = ["DISTANCES", "IdentityPreservingLoss", "discriminator_loss",
           "embedding_distance", "l1_loss", "lsgan_loss", "to_reid_input"]
