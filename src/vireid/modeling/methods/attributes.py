"""Attribute heads and attribute-graph fusion over any method (the survey §6 "knowledge graph" fusion).

``model.method: attributes`` wraps a registered method (``base``, default ``baseline``, with its
``base_params``) and adds, on the feature it returns (``feature``: its training output, default
``bn_features``, which must be the embedding it returns in evaluation mode):

* **attribute heads** — one classifier per attribute of :data:`vireid.data.attribute_table.ATTRIBUTES`
  (:class:`~vireid.modeling.modules.attributes.AttributeHeads`); the training output ``attributes`` packs
  their logits with the batch's labels for the ``attribute`` loss (-1 labels ignored). A training image
  that augmentation turned grey (grey-scale, channel augmentation) loses its colour labels, as an infrared
  image has none (:func:`~vireid.modeling.modules.attributes.colourless`);
* **a relation graph** (``fusion`` other than ``none``): a two-layer GCN over the attribute-value nodes
  whose correlation matrix is ML-GCN's (Chen et al., CVPR 2019), computed from the **training** set's labels
  at the start of the first epoch (the ``on_train_epoch_start`` hook; stored in the model's buffers, so in
  every checkpoint). Its output, read through the image's predicted attributes, re-weights the feature's
  channels (``attention``) or is added (``add``) or concatenated (``concat``) to it
  (:class:`~vireid.modeling.modules.attributes.GraphFusion`). The training outputs then also hold
  ``fused_features`` and ``fused_logits`` (a new identity classifier on the fused feature) for identity
  losses, and the evaluation embedding is the fused feature.

The labels come from the ``attributes`` side input (``data.extras: {attributes: dataset}``,
:mod:`vireid.data.attributes`). ``fusion: none`` with the heads leaves the evaluation embedding the base
method's; :meth:`AttributeReID.predict_attributes` gives per-image predicted labels (search filters).
Every other attribute (the backbone, ``on_epoch_start``, ``embed_sets``, ...) is the base method's.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vireid.data.attribute_table import VISIBLE_ONLY
from vireid.errors import ConfigError, VireidError
from vireid.modeling.heads import LinearClassifier
from vireid.modeling.modules.attributes import (
    DEFAULT_REWEIGHT,
    DEFAULT_THRESHOLD,
    FUSIONS,
    AttributeHeads,
    GraphFusion,
    colourless,
    pack_attribute_output,
    predict_labels,
)
from vireid.modeling.registries import METHODS


def _forward_parameters(module: nn.Module) -> tuple[set[str], bool]:
    params = inspect.signature(type(module).forward).parameters.values()
    return {p.name for p in params}, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


@METHODS.register("attributes")
class AttributeReID(nn.Module):
    """A base method + attribute heads (+ a GCN over the attribute nodes fused with the feature).

    Args:
        num_classes: training identities.
        base: the wrapped method's registered name (``baseline``, ``dfw_sln``, ``vit``, ...).
        base_params: its ``model.params``.
        feature: the base's training output the heads read (its evaluation embedding).
        fusion: ``none`` (heads only), ``attention``, ``add`` or ``concat`` (module docstring).
        gcn_in_dim, gcn_hidden_dim: node-input and hidden widths of the GCN (ML-GCN: 300 and 1024).
        threshold, reweight: ML-GCN's τ and p for the correlation matrix (released defaults 0.4, 0.25).
        img_size: given to the base method when it takes one.
    """

    extra_inputs = ("attributes",)

    def __init__(self, num_classes: int, base: str = "baseline", base_params: Mapping[str, Any] | None = None,
                 feature: str = "bn_features", fusion: str = "none", gcn_in_dim: int = 64, gcn_hidden_dim: int = 256,
                 threshold: float = DEFAULT_THRESHOLD, reweight: float = DEFAULT_REWEIGHT,
                 img_size: Sequence[int] = (288, 144)) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"config key 'model.params.fusion' is {fusion!r}; use one of {', '.join(FUSIONS)}")
        if base == "attributes":
            raise ConfigError("config key 'model.params.base' is 'attributes'; name the method to add attribute "
                              "heads to (e.g. baseline)")
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= reweight < 1.0:
            raise ConfigError(f"config keys 'model.params.threshold' and 'reweight' are {threshold} and {reweight}; "
                              "the threshold is a probability in [0, 1] and reweight in [0, 1) (ML-GCN: 0.4, 0.25)")
        cls, params = METHODS.check(base, dict(base_params or {}), "model.params.base_params",
                                    where="config key 'model.params.base'", skip=("num_classes",))
        if "img_size" in inspect.signature(cls).parameters and "img_size" not in params:
            params["img_size"] = tuple(img_size)
        self.base_name = base
        self.inner = cls(num_classes=num_classes, **params)
        self.num_classes = int(num_classes)
        self.feature = feature
        self.fusion_mode = fusion
        self._inner_params, self._inner_any = _forward_parameters(self.inner)
        self.embed_dim = int(getattr(self.inner, "embed_dim", 0))
        dim = int(getattr(self.inner, "output_dim", 0) or self.embed_dim)
        if dim <= 0:
            raise ConfigError(f"method {base!r} does not say its embedding width (embed_dim); attribute heads need it")
        self.feature_dim = dim
        self.heads = AttributeHeads(dim)
        self.register_buffer("_visible_only", torch.as_tensor(VISIBLE_ONLY), persistent=False)
        if fusion != "none":
            self.fusion = GraphFusion(dim, fusion, in_dim=gcn_in_dim, hidden_dim=gcn_hidden_dim, threshold=threshold,
                                      reweight=reweight)
            self.fused_classifier = LinearClassifier(self.fusion.out_dim, self.num_classes)
            self.output_dim = self.fusion.out_dim
        else:
            self.fusion = None
            self.output_dim = dim

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner" or "inner" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["inner"], name)  # the base method's hooks, backbone, ...

    # ------------------------------------------------------------------ forward
    def _inner_kwargs(self, extras: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in extras.items() if v is not None and (self._inner_any or k in self._inner_params)}

    def _check_feature(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.feature not in outputs:
            raise VireidError(f"method {self.base_name!r} has no training output {self.feature!r} for the attribute "
                              f"heads (it outputs {', '.join(sorted(outputs))}); set model.params.feature to one")
        return outputs[self.feature]

    def forward(self, images: torch.Tensor, modalities: torch.Tensor | int, attributes: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **extras: Any) -> dict[str, torch.Tensor] | torch.Tensor:
        """Training: the base's outputs + ``attributes`` (+ ``fused_features``, ``fused_logits``); evaluation:
        the embedding (fused when ``fusion`` is not ``none``)."""
        outputs = self.inner(images, modalities, **self._inner_kwargs({**extras, "labels": labels}))
        if not self.training:
            if self.fusion is None:
                return outputs
            return self.fusion(outputs, self.heads(outputs))
        features = self._check_feature(outputs)
        logits = self.heads(features)
        if attributes is not None:  # a visible image made grey by augmentation no longer shows its colours
            attributes = attributes.clone()
            grey = colourless(images)
            attributes[grey.unsqueeze(1) & self._visible_only.unsqueeze(0)] = -1
        outputs = dict(outputs, attributes=pack_attribute_output(logits, attributes))
        if self.fusion is not None:
            fused = self.fusion(features, logits)
            outputs.update(fused_features=fused, fused_logits=self.fused_classifier(fused))
        return outputs

    @torch.no_grad()
    def predict_attributes(self, images: torch.Tensor, modalities: torch.Tensor | int, **extras: Any) -> torch.Tensor:
        """Predicted labels ``[B, A]`` (int64; colours -1 on infrared images), in evaluation mode."""
        was_training = self.training
        self.eval()
        try:
            embedding = self.inner(images, modalities, **self._inner_kwargs(extras))
            codes = torch.as_tensor(modalities, device=images.device).expand(images.shape[0])
            return predict_labels(self.heads(embedding), codes)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ trainer hooks
    def on_train_epoch_start(self, trainer: Any, epoch: int) -> None:
        """At the first epoch (or a model built without statistics): the graph's correlation matrix from the
        training labels (the loader's ``attributes`` side input); then the base method's own hook."""
        if self.fusion is not None and not bool(self.fusion.gcn.ready):
            extras = getattr(trainer.data.train_loader, "extras", None) or {}
            if "attributes" not in extras:
                raise ConfigError("model.params.fusion builds its relation graph from the training images' attribute "
                                  "labels, but the config gives none; add data.extras: {attributes: dataset}")
            self.fusion.gcn.set_statistics(extras["attributes"])
        hook = getattr(self.inner, "on_train_epoch_start", None)
        if callable(hook):
            hook(trainer, epoch)

    def param_groups(self, base_lr: float, **kwargs: Any) -> list[dict[str, Any]]:
        """The base method's groups (its ``param_groups`` when it has one) + the attribute parts at ``base_lr``."""
        own = [p for n, p in self.named_parameters() if not n.startswith("inner.") and p.requires_grad]
        if hasattr(self.inner, "param_groups"):
            groups = list(self.inner.param_groups(base_lr, **kwargs))
        else:
            groups = [{"params": [p for p in self.inner.parameters() if p.requires_grad], "lr": base_lr}]
        return [*groups, {"params": own, "lr": base_lr, "name": "attributes"}]


__all__ = ["AttributeReID"]
