"""Text with images: text -> image retrieval (``text_image``) and text-assisted matching (``text_fusion``).

The survey's text modality (§4.1-4.2: "textual information describing pedestrians", encoded by
LSTM/GRU) enters a model in two ways here, both over a two-stream image backbone (as
:class:`~vireid.modeling.methods.multimodal_fusion.FusionReID`) and the recurrent
:class:`~vireid.modeling.modules.text_encoder.TextEncoder` on the ``tokens`` side input
(:mod:`vireid.data.text.tokens`):

* ``text_image`` (:class:`TextImageReID`): the image and the text encoder are trained into one space
  -- an identity loss on both through one **shared classifier** (each description is classified as
  its person, like the image) and an image-text matching loss (CMPM, Zhang and Lu, ECCV 2018:
  :mod:`vireid.modeling.losses.cmpm`) -- so a sentence finds the images of its person, visible or
  infrared (the text -> image protocols, :mod:`vireid.evaluation.text_protocols`).
* ``text_fusion`` (:class:`TextFusionReID`): the query image's description is fused with its image
  through the survey's fusion modules (:mod:`vireid.modeling.modules.fusion_layers`), the text being one
  more modality of the set (member 0 the image, member 1 the text):

  - ``strategy="early"``: the text embedding, projected to the channels of the shallow feature map and
    tiled over its positions, is a second map for :class:`EarlyFusion` (channel concatenation + 1x1
    mixing) before the shared deeper stages;
  - ``"late"``: :class:`LateFusion`, the weighted average of the L2-normalised image and text embeddings;
  - ``"attention"``: :class:`AttentionFusion`, input-dependent weights of the image and text embeddings.

Outputs. Training (a dict): ``features`` / ``bn_features`` / ``logits`` of the images, ``text_features``
/ ``text_bn_features`` / ``text_logits`` of their descriptions, ``image_text`` ``[B, 2, D]`` (image and
text BNNeck embeddings, for CMPM) and, for ``text_fusion``, ``fused_features`` / ``fused_bn_features`` /
``fused_logits`` of each (image, description) set. Without ``tokens`` the text branch sees empty
sentences (all padding). Evaluation: the image embedding ``[B, D]`` without ``tokens`` (the gallery
side: indexes, ordinary protocols); with ``tokens``, ``[B, 2D]`` = (image embedding, query-side
embedding), the query side being the description's embedding (``text_image``) or the fused
(image, description) embedding (``text_fusion``). The text protocols split the two halves.
:meth:`TextImageReID.embed_query` embeds queries of text, image or both for ``vireid search --text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.backbones.two_stream import TwoStreamBackbone, as_modality_tensor
from vireid.modeling.heads import LinearClassifier, build_neck
from vireid.modeling.modules.fusion_layers import ATTENTION_GRANULARITIES, AttentionFusion, EarlyFusion, LateFusion
from vireid.modeling.modules.pooling import build_pooling
from vireid.modeling.modules.text_encoder import RNNS, TEXT_POOLINGS, ClipSentenceEncoder, TextEncoder
from vireid.modeling.registries import METHODS

TEXT_STRATEGIES = ("early", "late", "attention")
#: Sentence encoders: the survey's recurrent one over the shipped tokenizer, or CLIP's text tower.
TEXT_ENCODERS = ("rnn", "clip")
#: Members of a text-assisted set: the image and its description.
IMAGE, TEXT = 0, 1


def _shipped_vocab_size() -> int:
    from vireid.data.text.tokenizer import WordTokenizer

    return WordTokenizer().vocab_size


@METHODS.register("text_image")
class TextImageReID(nn.Module):
    """Image + text encoders in one space, a shared identity classifier (see the module doc).

    Args:
        num_classes: training identities.
        backbone, specific_stages, last_stride, pretrained, pooling, gem_p, neck, img_size: the image branch,
            as :class:`~vireid.modeling.methods.multimodal_fusion.FusionReID`.
        vocab_size: token ids of the tokenizer (default: the shipped vocabulary's size).
        text_rnn: ``"gru"`` or ``"lstm"``; text_pooling: ``"mean"`` or ``"last"``; text_embed_dim,
            text_hidden, text_layers: sizes of :class:`TextEncoder`.
        text_encoder: ``"rnn"`` (:class:`TextEncoder`, the default) or ``"clip"``
            (:class:`~vireid.modeling.modules.text_encoder.ClipSentenceEncoder`: ``clip_model``,
            ``clip_pretrained``, ``quick_gelu``; the tokens must then be CLIP's, ``data.extras.tokens.tokenizer:
            clip:<model>``).
    """

    extra_inputs = ("tokens",)
    strategy: str | None = None

    def __init__(self, num_classes: int, backbone: str = "resnet50", specific_stages: int = 1, last_stride: int = 1,
                 pretrained: str | bool | None = None, pooling: str = "gem", gem_p: float = 3.0, neck: str = "bnneck",
                 img_size: Sequence[int] = (288, 144), vocab_size: int | None = None, text_rnn: str = "gru",
                 text_pooling: str = "mean", text_embed_dim: int = 128, text_hidden: int = 128,
                 text_layers: int = 1, text_encoder: str = "rnn", clip_model: str = "ViT-B-16",
                 clip_pretrained: object = None, quick_gelu: bool | None = None) -> None:
        super().__init__()
        if text_encoder not in TEXT_ENCODERS:
            raise ConfigError(f"config key 'model.params.text_encoder' is {text_encoder!r}; use one of "
                              f"{', '.join(TEXT_ENCODERS)}")
        if text_rnn not in RNNS:
            raise ConfigError(f"config key 'model.params.text_rnn' is {text_rnn!r}; use one of {', '.join(RNNS)}")
        if text_pooling not in TEXT_POOLINGS:
            raise ConfigError(f"config key 'model.params.text_pooling' is {text_pooling!r}; use one of "
                              f"{', '.join(TEXT_POOLINGS)}")
        self.num_classes = int(num_classes)
        self.input_size = (int(img_size[0]), int(img_size[1]))
        self.backbone = TwoStreamBackbone(arch=backbone, specific_stages=specific_stages, last_stride=last_stride,
                                          pretrained=pretrained, img_size=img_size)
        self.embed_dim: int = self.backbone.out_channels
        self.pool = build_pooling(pooling, p=gem_p)
        self.neck = build_neck(neck, self.embed_dim)
        if text_encoder == "clip":
            self.text: nn.Module = ClipSentenceEncoder(self.embed_dim, clip_model, clip_pretrained, quick_gelu)
        else:
            self.text = TextEncoder(int(vocab_size or _shipped_vocab_size()), self.embed_dim,
                                    embed_dim=text_embed_dim, hidden=text_hidden, layers=text_layers, rnn=text_rnn,
                                    pooling=text_pooling)
        self.text_neck = build_neck(neck, self.embed_dim)
        self.classifier = LinearClassifier(self.embed_dim, self.num_classes)  # shared by images and texts
        # text + image queries of a text_image model: the average of the two normalised embeddings
        self.late = LateFusion(2)

    # ------------------------------------------------------------------ pieces
    @property
    def gallery_columns(self) -> int:
        """The leading columns of the ``[B, 2D]`` evaluation output that are the image embedding (what
        verification and the gallery index use)."""
        return self.embed_dim

    def _empty_tokens(self, batch: int, device: torch.device) -> torch.Tensor:
        return self.text.empty_tokens(batch, device)

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, BNNeck embedding) ``[B, D]`` of token rows ``[B, L]``."""
        features = self.text(tokens)
        return features, self.text_neck(features)

    def _image(self, images: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.pool(self.backbone(images, codes))
        return features, self.neck(features)

    def _fuse(self, images: torch.Tensor | None, codes: torch.Tensor | None, image_feats: torch.Tensor | None,
              image_bn: torch.Tensor | None, text_feats: torch.Tensor | None, text_bn: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused features, fused embedding) of sets of an image and/or a text (absent: None)."""
        present = next(t for t in (image_bn, text_bn) if t is not None)
        mask = torch.tensor([[image_bn is not None, text_bn is not None]], device=present.device).expand(
            present.shape[0], 2)
        zeros = torch.zeros_like(present)
        stacked = torch.stack([image_bn if image_bn is not None else zeros, text_bn if text_bn is not None else zeros],
                              dim=1)
        fused = self.late(stacked, mask)
        return fused, fused

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, modalities: torch.Tensor | int, tokens: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor] | torch.Tensor:
        """Training: the dict of outputs of the module doc; evaluation: ``[B, D]`` without ``tokens``,
        ``[B, 2D]`` (image, query side) with them."""
        codes = as_modality_tensor(modalities, images.shape[0], images.device)
        batch = images.shape[0]
        if tokens is None and self.training:
            tokens = self._empty_tokens(batch, images.device)
        if not self.training:
            image_feats, image_bn = self._image(images, codes)
            if tokens is None:
                return image_bn
            text_feats, text_bn = self.encode_text(tokens.to(images.device))
            query = self._query_side(images, codes, image_feats, image_bn, text_feats, text_bn)
            return torch.cat([image_bn, query], dim=1)
        image_feats, image_bn = self._image(images, codes)
        text_feats, text_bn = self.encode_text(tokens.to(images.device))
        out = {
            "features": image_feats,
            "bn_features": image_bn,
            "logits": self.classifier(image_bn),
            "text_features": text_feats,
            "text_bn_features": text_bn,
            "text_logits": self.classifier(text_bn),
            "image_text": torch.stack([image_bn, text_bn], dim=1),
        }
        out.update(self._fused_outputs(images, codes, image_feats, image_bn, text_feats, text_bn))
        return out

    def _query_side(self, images, codes, image_feats, image_bn, text_feats, text_bn) -> torch.Tensor:
        """The query-side embedding of (image, description) rows: the description's (``text_image``)."""
        return text_bn

    def _fused_outputs(self, images, codes, image_feats, image_bn, text_feats, text_bn) -> dict[str, torch.Tensor]:
        return {}

    @torch.no_grad()
    def embed_query(self, images: torch.Tensor | None = None, modalities: torch.Tensor | int | None = None,
                    tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Query embeddings ``[S, D]`` in the gallery's space: of descriptions (``tokens``), of images, or
        of (image, description) pairs (row ``s`` of each); the model must be in evaluation mode."""
        if images is None and tokens is None:
            raise ValueError("a query needs a description, an image or both")
        if images is not None and tokens is not None and images.shape[0] != tokens.shape[0]:
            raise ValueError(f"{images.shape[0]} images and {tokens.shape[0]} descriptions: give one of each per query")
        image_feats = image_bn = text_feats = text_bn = codes = None
        if images is not None:
            codes = as_modality_tensor(0 if modalities is None else modalities, images.shape[0], images.device)
            image_feats, image_bn = self._image(images, codes)
        if tokens is not None:
            device = images.device if images is not None else next(self.parameters()).device
            text_feats, text_bn = self.encode_text(tokens.to(device))
        if tokens is None:
            return image_bn
        if images is None:
            return self._text_only(text_feats, text_bn)
        return self._query_side(images, codes, image_feats, image_bn, text_feats, text_bn) if self.strategy else \
            self._fuse(images, codes, image_feats, image_bn, text_feats, text_bn)[1]

    def _text_only(self, text_feats: torch.Tensor, text_bn: torch.Tensor) -> torch.Tensor:
        return text_bn

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embed_dim={self.embed_dim}, strategy={self.strategy!r}"


@METHODS.register("text_fusion")
class TextFusionReID(TextImageReID):
    """Text-assisted matching: the description fused with its image by early, late or attention fusion
    (see the module doc); every argument of :class:`TextImageReID`, plus

    Args:
        strategy: ``"early"``, ``"late"`` or ``"attention"``.
        late_weights: fixed late-fusion weights (image, text); default equal.
        attention: attention granularity, ``"modality"`` or ``"channel"``; attention_hidden: scorer width.
    """

    def __init__(self, num_classes: int, strategy: str = "attention", late_weights: Sequence[float] | None = None,
                 attention: str = "modality", attention_hidden: int | None = None, **kwargs: Any) -> None:
        if strategy not in TEXT_STRATEGIES:
            raise ConfigError(f"config key 'model.params.strategy' is {strategy!r}; use one of "
                              f"{', '.join(TEXT_STRATEGIES)}")
        if attention not in ATTENTION_GRANULARITIES:
            raise ConfigError(f"config key 'model.params.attention' is {attention!r}; use one of "
                              f"{', '.join(ATTENTION_GRANULARITIES)}")
        super().__init__(num_classes, **kwargs)
        self.strategy = strategy
        if strategy == "late":
            self.late = LateFusion(2, weights=late_weights)
        self.fusion: nn.Module | None = None
        if strategy == "early":
            stages = self.backbone.specific_stages
            if stages > 4:
                raise ConfigError(f"early text fusion needs shared stages after the fusion: specific_stages must be "
                                  f"0..4, got {stages}")
            channels = 3 if stages == 0 else self.backbone.stage_channels[stages - 1]
            self.text_to_map = nn.Linear(self.embed_dim, channels)
            self.fusion = EarlyFusion(channels, 2)
        elif strategy == "attention":
            self.fusion = AttentionFusion(self.embed_dim, 2, hidden=attention_hidden, granularity=attention)
        self.fused_neck = build_neck("bnneck", self.embed_dim) if strategy != "late" else None

    def _early(self, images: torch.Tensor | None, codes: torch.Tensor | None, text_feats: torch.Tensor | None,
               batch: int) -> torch.Tensor:
        """Pooled features of early-fused (shallow image map, tiled text map) sets; either may be absent."""
        assert isinstance(self.fusion, EarlyFusion)
        if images is not None:
            shallow = self.backbone.forward_specific(images, codes)
        else:  # a text-only set: the map's size is that of an image of the model's input size
            probe = torch.zeros(1, 3, *self.input_size, device=text_feats.device)
            shallow = self.backbone.forward_specific(probe, 0).expand(batch, -1, -1, -1)
        text_map = (self.text_to_map(text_feats)[:, :, None, None].expand_as(shallow) if text_feats is not None
                    else torch.zeros_like(shallow))
        maps = torch.stack([shallow if images is not None else torch.zeros_like(shallow), text_map], dim=1)
        mask = torch.tensor([[images is not None, text_feats is not None]], device=maps.device).expand(batch, 2)
        return self.pool(self.backbone.forward_shared(self.fusion(maps, mask)))

    def _fuse(self, images, codes, image_feats, image_bn, text_feats, text_bn) -> tuple[torch.Tensor, torch.Tensor]:
        present = next(t for t in (image_bn, text_bn) if t is not None)
        batch = present.shape[0]
        if self.strategy == "late":
            return super()._fuse(images, codes, image_feats, image_bn, text_feats, text_bn)
        if self.strategy == "early":
            fused = self._early(images, codes, text_feats, batch)
        else:
            assert isinstance(self.fusion, AttentionFusion)
            zeros = torch.zeros_like(present)
            mask = torch.tensor([[image_feats is not None, text_feats is not None]], device=present.device).expand(
                batch, 2)
            stacked = torch.stack([image_feats if image_feats is not None else zeros,
                                   text_feats if text_feats is not None else zeros], dim=1)
            fused = self.fusion(stacked, mask)
        assert self.fused_neck is not None
        return fused, self.fused_neck(fused)

    def _query_side(self, images, codes, image_feats, image_bn, text_feats, text_bn) -> torch.Tensor:
        return self._fuse(images, codes, image_feats, image_bn, text_feats, text_bn)[1]

    def _fused_outputs(self, images, codes, image_feats, image_bn, text_feats, text_bn) -> dict[str, torch.Tensor]:
        fused, fused_bn = self._fuse(images, codes, image_feats, image_bn, text_feats, text_bn)
        return {"fused_features": fused, "fused_bn_features": fused_bn, "fused_logits": self.classifier(fused_bn)}

    def _text_only(self, text_feats: torch.Tensor, text_bn: torch.Tensor) -> torch.Tensor:
        return self._fuse(None, None, None, None, text_feats, text_bn)[1]


__all__ = ["TEXT_STRATEGIES", "TextFusionReID", "TextImageReID"]
