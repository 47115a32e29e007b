"""The one registration point: importing this module registers every part vireid ships.

Each part registers itself with a decorator in its own file (``@METHODS.register("pdfenet")``); this module
is the single list of those files, so the registries below are filled by ``import vireid.builtins`` and
nowhere else (no package ``__init__`` imports its members for their side effect). The layers that wire
parts together import it: the trainer, inference, the workflows and the CLI (and :mod:`vireid.plugins`,
before a user's plugin adds to the registries). Python code that uses a registry directly imports it
first. ``vireid list`` prints what the registries hold.

=====================  ================================================  ======================================
registry               where it is defined                               what a config names with it
=====================  ================================================  ======================================
``METHODS``            :mod:`vireid.modeling.registries`                 ``model.method``
``LOSSES``             :mod:`vireid.modeling.registries`                 ``losses.<term>`` (``type``)
``BACKBONES``          :mod:`vireid.modeling.registries`                 a method's backbone
``MODULES``            :mod:`vireid.modeling.registries`                 pooling, non-local, DFW, SLN, ...
``HEADS``              :mod:`vireid.modeling.registries`                 necks and classifiers
``TRANSFORM_STEPS``    :mod:`vireid.data.transforms`                     ``augment.steps`` (batch steps)
``DATASETS``           :mod:`vireid.data.datasets.base`                  ``data.format`` (readers)
``PROTOCOLS``          :mod:`vireid.evaluation.protocols`                ``eval.protocols``
``EXTRAS``             :mod:`vireid.data.extras`                         ``data.extras`` (side inputs)
=====================  ================================================  ======================================

A new built-in part is one new file plus one line here; a user's part is a plugin (docs/extending.md).
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- dataset readers
import vireid.data.datasets.combined  # noqa: F401  (a dataset + translated images, vireid gan translate)
import vireid.data.datasets.folder  # noqa: F401  ("folder", "csv": users' own data)
import vireid.data.datasets.hitsz_vcm  # noqa: F401  (MITML's HITSZ-VCM: video tracklets)
import vireid.data.datasets.llcm  # noqa: F401
import vireid.data.datasets.npu_reid  # noqa: F401  (dual-path Swin's NPU-ReID)
import vireid.data.datasets.regdb  # noqa: F401
import vireid.data.datasets.sysu_mm01  # noqa: F401
import vireid.data.text.tokens  # noqa: F401  (the "tokens" side input: text descriptions as token ids)

# ----------------------------------------------------------------------------- side inputs (data.extras)
import vireid.data.attributes  # noqa: F401  (attributes: per-image attribute labels)

# ----------------------------------------------------------------------------- batch (transform) steps
import vireid.data.corruptions  # noqa: F401  (the corruption suite as a training step)
import vireid.data.gan_augmentation  # noqa: F401  (a frozen GAN translating part of each batch)
import vireid.data.modality_augmentation  # noqa: F401  (MAG: modality patch exchange)
import vireid.data.paired  # noqa: F401  (paired crop/flip of registered visible-infrared pairs)
import vireid.data.transforms  # noqa: F401  (crop/flip, grayscale, erasing, channel augmentation, ...)

# ----------------------------------------------------------------------------- evaluation protocols
import vireid.evaluation.mixed  # noqa: F401  (mixed-modality galleries)
import vireid.evaluation.npu  # noqa: F401  (NPU-ReID protocols)
import vireid.evaluation.protocols  # noqa: F401  (SYSU-MM01, RegDB, LLCM, given query/gallery)
import vireid.evaluation.tracklets  # noqa: F401  (tracklet to tracklet, both directions: HITSZ-VCM / video data)
import vireid.evaluation.text_protocols  # noqa: F401  (text -> image, text-assisted cross-modality)

# ----------------------------------------------------------------------------- backbones, heads, modules
import vireid.modeling.backbones.clip  # noqa: F401  (CLIP image encoders through open_clip)
import vireid.modeling.backbones.two_stream  # noqa: F401
import vireid.modeling.backbones.vit  # noqa: F401  (TransReID-style ViT)
import vireid.modeling.heads  # noqa: F401
import vireid.modeling.modules.admg  # noqa: F401  (PDFENet)
import vireid.modeling.modules.dfw  # noqa: F401  (DFW+SLN)
import vireid.modeling.modules.fusion_layers  # noqa: F401  (the survey's early / late / attention fusion)
import vireid.modeling.modules.idi  # noqa: F401  (PDFENet)
import vireid.modeling.modules.non_local  # noqa: F401
import vireid.modeling.modules.pooling  # noqa: F401
import vireid.modeling.modules.sln  # noqa: F401  (DFW+SLN)
import vireid.modeling.modules.temporal  # noqa: F401  (tracklets: temporal pooling, GRU/LSTM, attention, (2+1)D)
import vireid.modeling.modules.text_encoder  # noqa: F401  (the survey's LSTM/GRU text encoder)

# ----------------------------------------------------------------------------- losses
import vireid.modeling.losses.attribute  # noqa: F401  (attribute heads: one cross entropy per attribute)
import vireid.modeling.losses.center  # noqa: F401
import vireid.modeling.losses.clip_reid  # noqa: F401  (CLIP-ReID stage 1)
import vireid.modeling.losses.cluster_memory  # noqa: F401  (unsupervised / semi-supervised: re-clustered pseudo-labels)
import vireid.modeling.losses.cmce  # noqa: F401  (PDFENet)
import vireid.modeling.losses.cmpm  # noqa: F401  (image-text matching, CMPM)
import vireid.modeling.losses.identity  # noqa: F401
import vireid.modeling.losses.multi_masking  # noqa: F401  (dual-path Swin)
import vireid.modeling.losses.overlap  # noqa: F401  (DFW+SLN)
import vireid.modeling.losses.partwise  # noqa: F401  (DFW+SLN)
import vireid.modeling.losses.triplet  # noqa: F401

# ----------------------------------------------------------------------------- methods
import vireid.modeling.methods.attributes  # noqa: F401  (attribute heads + attribute-graph fusion over any method)
import vireid.modeling.methods.baseline  # noqa: F401
import vireid.modeling.methods.clip_reid  # noqa: F401  (CLIP-ReID)
import vireid.modeling.methods.dfw_sln  # noqa: F401  (DFW+SLN)
import vireid.modeling.methods.dual_path_swin  # noqa: F401  (dual-path Swin / MAG / MMT)
import vireid.modeling.methods.multimodal_fusion  # noqa: F401  (the survey §4.1/§4.2)
import vireid.modeling.methods.pdfenet  # noqa: F401  (PDFENet)
import vireid.modeling.methods.temporal  # noqa: F401  (tracklets: a temporal head over any backbone)
import vireid.modeling.methods.text_reid  # noqa: F401  (text -> image retrieval, text-assisted fusion)
import vireid.modeling.methods.vit  # noqa: F401  (TransReID-style ViT)
from vireid.data.datasets.base import DATASETS
from vireid.data.extras import EXTRAS  # the built-in side inputs (joints) register where the registry is defined
from vireid.data.transforms import TRANSFORM_STEPS
from vireid.evaluation.protocols import PROTOCOLS
from vireid.errors import VireidError
from vireid.modeling.registries import BACKBONES, HEADS, LOSSES, METHODS, MODULES

#: Every registry, by the name ``vireid list NAME`` takes, in the order it prints them.
REGISTRIES = {
    "methods": METHODS,
    "losses": LOSSES,
    "backbones": BACKBONES,
    "modules": MODULES,
    "heads": HEADS,
    "steps": TRANSFORM_STEPS,
    "datasets": DATASETS,
    "protocols": PROTOCOLS,
    "extras": EXTRAS,
}

#: Where a config names each registry's entries (printed beside the registry's name).
CONFIG_KEYS = {
    "methods": "model.method",
    "losses": "losses.<term> (or its type:)",
    "backbones": "a method's backbone",
    "modules": "a method's modules (pooling, non_local, ...)",
    "heads": "a method's neck and classifiers",
    "steps": "augment.steps (batch steps)",
    "datasets": "data.format (dataset readers)",
    "protocols": "eval.protocols, vireid eval --protocol",
    "extras": "data.extras (named side inputs per image)",
}
#: Other spellings ``vireid list`` accepts.
ALIASES = {"readers": "datasets", "formats": "datasets", "batch-steps": "steps", "batch_steps": "steps",
           "transforms": "steps", "transform-steps": "steps"}


def registry_named(name: str) -> str:
    """The :data:`REGISTRIES` key ``name`` means (plural, singular or an alias); one sentence if none."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    for plural in (f"{key}s", f"{key}es"):
        if key not in REGISTRIES and plural in REGISTRIES:
            key = plural
    if key not in REGISTRIES:
        raise VireidError(f"there is no registry {name!r}; choose one of {', '.join(REGISTRIES)} "
                          "(or run vireid list without a name for all of them)")
    return key


def format_registries(names: list[str] | tuple[str, ...] = ()) -> str:
    """The text of ``vireid list``: per registry (all, or the ``names`` given) its config key, then one line
    per entry with its name and a one-line summary from its docstring (:meth:`~vireid.registry.Registry.summary`)."""
    keys = [registry_named(n) for n in names] or list(REGISTRIES)
    blocks = []
    for key in keys:
        registry = REGISTRIES[key]
        width = max((len(n) for n in registry), default=0)
        lines = [f"{key} ({len(registry)}) -- {CONFIG_KEYS[key]}"]
        lines += [f"  {n:<{width}}  {registry.summary(n)}".rstrip() for n in registry]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


__all__ = ["ALIASES", "CONFIG_KEYS", "REGISTRIES", "format_registries", "registry_named"]
