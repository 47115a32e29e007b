"""Geometry shared by the batch steps and the side inputs ("extras") that move with the pixels.

A pad + crop + mirror of a batch is described per sample by a shift ``[B, 2]`` of ``(dy, dx)`` (output
pixel ``(r, c)`` shows source pixel ``(r + dy, c + dx)``) and a mirror flag ``[B]`` (the output column ``c``
then shows column ``W - 1 - c``). :func:`shift_and_flip` applies it to images and to anything laid out
like them (a mask, a depth map); :func:`move_joints` applies it to pixel coordinates of body joints.
The augmentation order follows AGW / CAJ (``Pad`` + ``RandomCrop`` + ``RandomHorizontalFlip``, Ye et al.,
TPAMI 2021; ICCV 2021); the joint mirror swaps MPII's left/right joints as PDFENet's pose input needs.
"""

from __future__ import annotations

import torch

#: MPII joint pairs (right, left) that trade places when an image is mirrored.
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))


def shift_and_flip(images: torch.Tensor, shift: torch.Tensor, flipped: torch.Tensor, pad: int) -> torch.Tensor:
    """Output pixel ``(r, c)`` of sample ``b`` = input ``(r + dy_b, c + dx_b)`` (0 outside), columns
    reversed where ``flipped``: zero-pad + crop + mirror as one gather over the whole batch."""
    batch, channels, height, width = images.shape
    if pad == 0 and not bool(flipped.any()):
        return images
    device = images.device
    shift = shift.to(device)
    rows = torch.arange(height, device=device).unsqueeze(0) + shift[:, :1]  # [B,H] source row
    cols = torch.arange(width, device=device).unsqueeze(0) + shift[:, 1:]  # [B,W] source column
    cols = torch.where(flipped.to(device).unsqueeze(1), cols.flip(1), cols)
    valid = ((rows >= 0) & (rows < height)).unsqueeze(2) & ((cols >= 0) & (cols < width)).unsqueeze(1)
    flat = rows.clamp(0, height - 1).unsqueeze(2) * width + cols.clamp(0, width - 1).unsqueeze(1)
    flat = flat.view(batch, 1, height * width).expand(batch, channels, height * width)
    out = images.reshape(batch, channels, height * width).gather(2, flat).view(batch, channels, height, width)
    return out.mul_(valid.unsqueeze(1).to(images.dtype)) if pad else out


def move_joints(joints: torch.Tensor, shift: torch.Tensor, flipped: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Joints ``[B, J, 3]`` after :class:`~vireid.data.transforms.RandomPadCropFlip`: output pixel ``(r, c)`` shows source pixel
    ``(r + dy, c + dx)`` (``shift`` = [B, 2] of (dy, dx)), mirrored samples show column ``W-1-c``.

    So ``y' = y - dy``, ``x' = x - dx`` and, mirrored, ``x' = W - 1 - (x - dx)`` with MPII left/right joints
    swapped (16 joints). Joints that leave the image get visibility 0.
    """
    out = joints.clone().float()
    shift = shift.to(out.device, out.dtype)
    flip = flipped.to(out.device)
    out[..., 0] = out[..., 0] - shift[:, 1:2]
    out[..., 1] = out[..., 1] - shift[:, 0:1]
    out[..., 0] = torch.where(flip.unsqueeze(1), (width - 1) - out[..., 0], out[..., 0])
    if out.shape[1] == 16 and bool(flip.any()):
        order = torch.arange(16, device=out.device)
        for right, left in MPII_FLIP_PAIRS:
            order[right], order[left] = left, right
        out = torch.where(flip.view(-1, 1, 1), out[:, order], out)
    inside = (out[..., 0] >= 0) & (out[..., 0] <= width - 1) & (out[..., 1] >= 0) & (out[..., 1] <= height - 1)
    out[..., 2] = out[..., 2] * inside.to(out.dtype)
    return out



def scale_points(points: torch.Tensor, size_from: tuple[int, int], size_to: tuple[int, int]) -> torch.Tensor:
    """Points ``[..., >=2]`` (x, y in pixel-centre coordinates) of an image of ``size_from`` (H, W) moved to
    the same image resized to ``size_to`` without keeping the aspect ratio: ``x' = (x + 0.5) W'/W - 0.5``
    (as :func:`vireid.data.pose.scale_joints` maps original images to the cached ones)."""
    out = points.clone().float()
    (h0, w0), (h1, w1) = size_from, size_to
    out[..., 0] = (out[..., 0] + 0.5) * (w1 / w0) - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * (h1 / h0) - 0.5
    return out


__all__ = ["MPII_FLIP_PAIRS", "move_joints", "scale_points", "shift_and_flip"]
