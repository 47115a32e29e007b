"""Synthetic visible-infrared person re-identification data (``vireid synth``).

The toolkit's embedded default dataset: identities with body proportions, clothing layout,
patterns, materials, accessories and hair; cameras with their own light and scenes; visible
images coloured by clothing colour and infrared images by material heat, so colour alone cannot
bridge the modalities. Written in the real SYSU-MM01 or RegDB layouts, with MPII body joints.
"""

from vireid.data.synth.cameras import REGDB_CAMERAS, SYSU_CAMERAS, CameraSpec, make_scene_template
from vireid.data.synth.generator import (
    DEFAULT_SIZES,
    FORMATS,
    GENERATOR_VERSION,
    JOINTS_FILE,
    META_FILE,
    generate_dataset,
    image_rng,
    load_joints,
)
from vireid.data.synth.layouts import regdb_trials, sysu_split
from vireid.data.synth.render import MPII_JOINTS, PoseParams, RenderedImage, render_identity_image, sample_pose
from vireid.data.synth.traits import IdentityTraits, sample_identity_traits

__all__ = [
    "CameraSpec",
    "DEFAULT_SIZES",
    "FORMATS",
    "GENERATOR_VERSION",
    "IdentityTraits",
    "JOINTS_FILE",
    "META_FILE",
    "MPII_JOINTS",
    "PoseParams",
    "REGDB_CAMERAS",
    "RenderedImage",
    "SYSU_CAMERAS",
    "generate_dataset",
    "image_rng",
    "load_joints",
    "make_scene_template",
    "regdb_trials",
    "render_identity_image",
    "sample_identity_traits",
    "sample_pose",
    "sysu_split",
]
