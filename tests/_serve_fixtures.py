"""Helpers shared by the search-service tests: a tiny gallery index built with a tiny checkpoint,
and a real uvicorn server on a free 127.0.0.1 port running in a background thread."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from conftest import REPO

#: SYSU-MM01 cameras: 1, 2, 4, 5 visible; 3, 6 infrared.
VISIBLE_CAM, INFRARED_CAM = 1, 3


@dataclass
class Service:
    checkpoint: Path
    index_dir: Path
    gallery_dir: Path
    outside_file: Path      # a real image outside the gallery folder
    query_member: Path      # a visible gallery image (searching it finds itself)
    query_other: Path       # a visible image of an identity that is not in the gallery
    embedder: object
    index: object
    threshold: float
    features: np.ndarray    # gallery features, row i = index row i


def build_service(synth_root: Path, out: Path, ids: tuple[int, ...] = (1, 2, 3, 4),
                  per_cam: int = 2, escapes: bool = False) -> Service:
    """Copy a few synthetic images into ``out/gallery``, make a tiny checkpoint, index the gallery.

    The checkpoint's calibrated threshold sits halfway between the largest similarity of two
    different gallery images and 1, so a gallery image searched for itself is a match and other
    images are not. ``escapes=True`` adds entries that must never be served: a symlink to a file
    outside the gallery and a text file named ``.jpg``, plus a symlink to a file inside it.
    """
    from vireid.config import load_config
    from vireid.engine.checkpoint import atomic_torch_save
    from vireid.inference.loading import load_embedder
    from vireid.engine.trainer import build_model
    from vireid.retrieval.features import FeatureSet, Metadata
    from vireid.retrieval.index import GalleryIndex

    out.mkdir(parents=True, exist_ok=True)
    gallery = out / "gallery"
    paths, pids, cams, mods = [], [], [], []
    for pid in ids:
        for cam, modality in ((VISIBLE_CAM, "visible"), (INFRARED_CAM, "infrared")):
            for n in range(1, per_cam + 1):
                src = synth_root / f"cam{cam}" / f"{pid:04d}" / f"{n:04d}.jpg"
                dst = gallery / f"cam{cam}" / f"{pid:04d}" / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                paths.append(dst), pids.append(pid), cams.append(cam), mods.append(modality)
    outside = out / "outside" / "secret.jpg"
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(synth_root / f"cam{VISIBLE_CAM}" / "0020" / "0001.jpg", outside)
    if escapes:
        (gallery / "escape.jpg").symlink_to(outside)
        (gallery / "notes.jpg").write_text("password=hunter2\n")
        (gallery / "alias.jpg").symlink_to(paths[0])
        for name in ("escape.jpg", "notes.jpg", "alias.jpg"):
            paths.append(gallery / name), pids.append(-1), cams.append(-1), mods.append("visible")

    cfg = load_config(REPO / "configs" / "baseline_synth.yaml",
                      ["model.params.backbone=resnet10t", "model.params.pretrained=null", "data.height=64", "data.width=32"])
    import torch

    torch.manual_seed(0)
    model = build_model(cfg, len(ids)).eval()
    ckpt = {"model": model.state_dict(), "config": asdict(cfg), "num_classes": len(ids)}
    ckpt_path = out / "model.pt"
    atomic_torch_save(ckpt, ckpt_path)
    embedder = load_embedder(ckpt_path)
    readable = [p for p in paths if p.name != "notes.jpg"]
    feats = np.zeros((len(paths), embedder.dim), np.float32)
    rows = [i for i, p in enumerate(paths) if p.name != "notes.jpg"]
    feats[rows] = embedder.embed_paths(readable, [mods[i] for i in rows])
    if escapes:
        feats[paths.index(gallery / "notes.jpg")] = feats[0]
    sims = feats[: len(ids) * 2 * per_cam] @ feats[: len(ids) * 2 * per_cam].T
    np.fill_diagonal(sims, -1.0)
    threshold = float((1.0 + sims.max()) / 2.0)
    ckpt["verification"] = {"metric": "cosine", "threshold": threshold, "eer": 0.1, "far_target": 0.01,
                            "tar_at_far": 0.5, "split": "test", "num_pairs": 10}
    atomic_torch_save(ckpt, ckpt_path)
    embedder = load_embedder(ckpt_path)
    assert embedder.verification["threshold"] == threshold

    fs = FeatureSet(feats, Metadata.from_images(paths, pids, cams, mods, root=gallery), {"checkpoint": str(ckpt_path)})
    index_dir = GalleryIndex.build(fs, kind="flat").save(out / "index")
    return Service(ckpt_path, index_dir, gallery, outside, paths[0],
                   synth_root / f"cam{VISIBLE_CAM}" / "0021" / "0001.jpg", embedder, GalleryIndex.load(index_dir),
                   threshold, feats)


@contextmanager
def running_server(app, timeout: float = 30.0, limits=None):
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL. With
    ``limits`` (a ServeLimits) it runs as ``vireid serve`` does (its connection guard and timeouts)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    if limits is not None:
        from vireid.serve.protocol import uvicorn_config

        server = uvicorn.Server(uvicorn_config(app, limits, log_level="warning", timeout_keep_alive=2))
    else:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test uvicorn server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
