"""Make ``import torchvision`` (and so ``import timm``) work next to a CPU-only torch.

The torchvision wheel on PyPI is a CUDA build. Next to the CPU build of torch its
compiled extension (``torchvision/_C.so``) fails to load, and torchvision's
``_meta_registrations`` module then dies at import with
``RuntimeError: operator torchvision::nms does not exist``, because it registers
fake (meta) kernels for ``torchvision::nms`` and ``torchvision::qnms``
unconditionally while every other meta kernel is guarded by ``_has_ops()``.

:func:`ensure_torchvision` tries to load the extension exactly as torchvision
does. Only when that fails, and only for operators that are not defined yet, it
defines the two missing operator *schemas* (no kernels) in the ``torchvision``
namespace, so that the import completes. Models, transforms and everything timm
needs then work; the compiled parts stay unavailable: ``torchvision.ops.nms``
and the RoI/deformable ops raise when called, and ``torchvision.io`` image
decoding is not there (vireid decodes images with Pillow). With a matching
torchvision build (CUDA torch + CUDA torchvision, or a CPU build of both) the
extension loads and this function changes nothing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

#: Schemas of the operators that torchvision registers fake kernels for without a guard.
_UNGUARDED_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_state: dict[str, object] = {"done": False, "patched": False, "library": None}


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision absent: nothing to guard
    folder = Path(next(iter(spec.submodule_search_locations)))
    candidates = sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, ImportError, RuntimeError):
        return False
    return True


def _op_defined(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name).default
    except (AttributeError, RuntimeError):
        return False
    return True


def ensure_torchvision() -> bool:
    """Define torchvision's missing operator schemas if, and only if, its extension fails to load.

    Returns True when schemas were defined (the CPU-torch + CUDA-torchvision case).
    Idempotent; set ``VIREID_NO_TORCHVISION_GUARD=1`` to disable it.
    """
    if _state["done"]:
        return bool(_state["patched"])
    _state["done"] = True
    if os.environ.get("VIREID_NO_TORCHVISION_GUARD") == "1" or _extension_loads():
        return False
    missing = [name for name in _UNGUARDED_OPS if not _op_defined(name)]
    if missing:
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            lib.define(_UNGUARDED_OPS[name])
        _state["library"] = lib  # keep the registration alive
        _state["patched"] = True
    return bool(_state["patched"])


# --------------------------------------------------------------------------------------------
# CPU features (shared by training precision and the bf16 distance screen of evaluation)
# --------------------------------------------------------------------------------------------

#: /proc/cpuinfo flags of x86 bf16 matrix/dot-product units that oneDNN's bf16 kernels use
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The bf16 unit flags (:data:`BF16_CPU_FLAGS`) the CPU reports, from ``cpuinfo`` (the text of
    ``/proc/cpuinfo``; read from the machine when None). Empty where the file cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return ()
    words: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            words.update(value.split())
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in words)
