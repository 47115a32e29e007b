"""Video (tracklet) visible-infrared ReID on synthetic data: each temporal model (``model.method: temporal``,
heads avg / gru / lstm / attention / conv2plus1d) against a single-image two-stream baseline, evaluated tracklet
to tracklet and frame to frame, both directions; written into the "Video (tracklets)" section of
docs/results.md.

Every model starts from ``configs/video_synth.yaml`` (ResNet-10-T from scratch at 64x32, cross entropy +
triplet, Adam, cosine) with the same data and budget; the baseline is the ``baseline`` method trained on the
same frames as independent images. Per model:

* **tracklet** columns: ``vcm-i2v`` / ``vcm-v2i`` (:mod:`vireid.evaluation.tracklets`): a temporal model embeds
  every frame of a tracklet (``test_frames: all``: chunks of ``seq_len`` frames, the chunks' embeddings
  averaged); the baseline's tracklet embedding is the mean of its frame embeddings (temporal average pooling
  at test time);
* **frame** columns: the same protocols with every frame its own query / gallery item (each frame a tracklet of
  one, :func:`~vireid.evaluation.tracklets.single_frame_pool`): what one frame gives.

Data (``--data``):

* ``pseudo`` (default): the still-image synthetic generator (SYSU-MM01 layout), each identity's images of one
  modality read as one tracklet (``images_per_camera`` x the modality's cameras frames, recorded under one camera
  per modality). The frames are independent renders (pose, viewpoint, camera change between frames), not
  consecutive frames of a walk: order carries no motion, so this measures aggregation over frames;
* ``synthetic-vcm``: the video generator's walks (``vireid synth --format hitsz-vcm``), once that format is
  registered (its reader and tracklet sampler come from the data side of the video work).

    python benchmarks/video_table.py [--seeds 0 1 2] [--epochs 4] [--out runs/video-table]
    python benchmarks/video_table.py --quick --doc /tmp/results.md      # seconds-long smoke run
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import SMOKE_BANNER, table_parser, train_once, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SECTION = "video-table"
TITLE = "Video (tracklets): temporal models vs single frames"
HEADS = ("avg", "gru", "lstm", "attention", "conv2plus1d")
PROTOCOLS = ("vcm-i2v", "vcm-v2i")
PSEUDO = "pseudo-tracklets"
#: the camera number every frame of a pseudo tracklet is recorded under (one per modality)
PSEUDO_CAMERA = {"visible": 1, "infrared": 3}


def register_pseudo_reader() -> str:
    """The reader of the ``pseudo`` data (see the module docstring), registered once."""
    from vireid.data.datasets.base import DATASETS
    from vireid.data.datasets.sysu_mm01 import SYSUMM01

    if PSEUDO in DATASETS:
        return PSEUDO

    @DATASETS.register(PSEUDO)
    class PseudoTracklets(SYSUMM01):
        """SYSU-MM01 layout, each identity's images of one modality as one tracklet (benchmarks/video_table.py)."""

        protocol_family = "vcm"

        def __init__(self, root, train_includes_val: bool = False, require_train: bool = True) -> None:
            super().__init__(root, train_includes_val=train_includes_val, require_train=require_train)
            ids: dict[tuple[int, str], int] = {}

            def tag(records):
                ordered = sorted(records, key=lambda r: (r.orig_pid, r.modality != "visible"))
                return [replace(r, camid=PSEUDO_CAMERA[r.modality],
                                tracklet=ids.setdefault((r.orig_pid, r.modality), len(ids))) for r in ordered]

            self.train, self.val, self.test = tag(self.train), tag(self.val), tag(self.test)

    return PSEUDO


def make_config(args, label: str, head: str | None, seed: int):
    from vireid.config import load_config
    from vireid.data.synth import generate_dataset

    fmt = register_pseudo_reader() if args.data == "pseudo" else args.data
    root = args.out / f"data-{args.data}"
    if args.data == "pseudo" and not (root / "exp").is_dir():
        generate_dataset(root, ids=args.ids, format="sysu-mm01", images_per_camera=args.images_per_camera,
                         height=64, width=32, seed=0, workers=1, progress=False)
    overrides = [f"data.format={fmt}", f"data.root={root}", f"seed={seed}", f"name={label}_s{seed}",
                 f"train.epochs={args.epochs}", f"train.threads={args.threads}", "train.progress=false",
                 "train.device=cpu", "data.workers=1", f"data.synth.ids={args.ids}",
                 f"sampler.num_per_modality={args.seq_len}", f"sampler.num_ids={args.num_ids}",
                 f"sampler.epoch_length={args.batches}", "train.eval_every=0", "train.select_best=last",
                 f"model.params.seq_len={args.seq_len}", "model.params.test_frames=all"]
    from dataclasses import fields

    from vireid.config import SamplerConfig

    if "seq_len" in {f.name for f in fields(SamplerConfig)}:  # the tracklet sampler: P ids x K tracklets x T frames
        overrides += [f"sampler.seq_len={args.seq_len}", "sampler.tracklets_per_id=1"]
    if args.data != "pseudo":  # the video generator: images_per_camera = tracklets per camera
        overrides += [f"data.synth.images_per_camera={args.images_per_camera}",
                      f"data.synth.frames_per_tracklet={args.frames}"]
    cfg = load_config(REPO / "src" / "vireid" / "configs" / "video_synth.yaml", overrides)
    if head is None:  # the single-image baseline: the same backbone and head, frames as independent images
        cfg.model.method = "baseline"
        cfg.model.params = {k: v for k, v in cfg.model.params.items() if k not in ("temporal", "seq_len", "test_frames")}
        cfg.data.extras = {}
        if hasattr(cfg.sampler, "seq_len"):
            cfg.sampler.seq_len = 0  # image sampling: the frames as independent images
    else:
        cfg.model.params["temporal"] = head
    return cfg


def evaluate(folder: Path):
    """``{(unit, protocol): (rank1, mAP)}`` of a trained run: tracklets and single frames."""
    from vireid.data.build import prepare_dataset
    from vireid.engine.trainer import load_model_from_checkpoint
    from vireid.evaluation.tracklets import single_frame_pool
    from vireid.workflows.evaluate_model import evaluate_model

    model, cfg, _ = load_model_from_checkpoint(folder / "best.pt")
    dataset = prepare_dataset(cfg.data, progress=False, generate=False)
    out = {}
    for unit in ("tracklet", "frame"):
        if unit == "frame":
            dataset.test = single_frame_pool(dataset.test)
        for result in evaluate_model(model, dataset, cfg, "cpu", protocols=PROTOCOLS, progress=False):
            out[(unit, result.name)] = (result.mean["rank1"], result.mean["mAP"])
    return out


def chance(cfg, draws: int = 20):
    """``{(unit, protocol): (rank1, mAP)}`` of random embeddings on the same test pool (mean of ``draws``): the
    level a model that learned nothing reaches."""
    import torch

    from vireid.data.build import prepare_dataset
    from vireid.evaluation.protocols import run_protocol
    from vireid.evaluation.tracklets import single_frame_pool

    dataset = prepare_dataset(cfg.data, progress=False, generate=False)
    generator = torch.Generator().manual_seed(0)
    sums: dict = {}
    for unit, pool in (("tracklet", list(dataset.test)), ("frame", single_frame_pool(dataset.test))):
        for _ in range(draws):
            feats = torch.randn(len(pool), 64, generator=generator)
            for name in PROTOCOLS:
                result = run_protocol(name, feats, pool)
                r1, mAP = sums.get((unit, name), (0.0, 0.0))
                sums[(unit, name)] = (r1 + result.mean["rank1"] / draws, mAP + result.mean["mAP"] / draws)
    return sums


def main() -> None:
    import numpy as np

    ap = table_parser(__doc__, REPO / "runs" / "video-table", 'tiny data, one short epoch, one seed (a smoke test)')
    ap.add_argument("--data", default="pseudo", help="pseudo (still-image renders grouped) or synthetic-vcm")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (the data stays seed 0)")
    ap.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS, help="temporal heads to train")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batches", type=int, default=12, help="batches per epoch")
    ap.add_argument("--ids", type=int, default=96, help="synthetic identities (about half train)")
    ap.add_argument("--images-per-camera", type=int, default=3, help="pseudo: images per camera; synthetic-vcm: "
                    "tracklets per camera")
    ap.add_argument("--frames", type=int, default=8, help="synthetic-vcm: frames per tracklet")
    ap.add_argument("--seq-len", type=int, default=4, help="frames per training tracklet (and test chunk)")
    ap.add_argument("--num-ids", type=int, default=4, help="identities per batch")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per training")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.batches, args.ids, args.images_per_camera = [0], 1, 2, 16, 2
        args.heads, args.seq_len, args.num_ids = ["avg", "gru"], 2, 3

    models = [("single-image baseline", None)] + [(f"temporal {h}", h) for h in args.heads]
    figures: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    cfg = None
    for label, head in models:
        tag = label.replace(" ", "_").replace("-", "_")
        for seed in args.seeds:
            cfg = make_config(args, tag, head, seed)
            folder, cpu = train_once(args.out / f"{tag}_s{seed}", lambda c=cfg: c, args.retrain)
            seconds[label] = seconds.get(label, 0.0) + cpu
            figures.setdefault(label, []).append(evaluate(folder))
            print(f"{label} seed {seed}: trained in {cpu:.0f} CPU-s", flush=True)

    figures["random embedding (chance)"] = [chance(cfg)]
    models.append(("random embedding (chance)", None))
    columns = [(unit, p) for unit in ("tracklet", "frame") for p in PROTOCOLS]
    head_row = "| model | " + " | ".join(f"{u} {p[4:]} R1 / mAP" for u, p in columns) + " |"
    lines = [head_row, "|" + "---|" * (1 + len(columns))]
    for label, _ in models:
        cells = []
        for key in columns:
            r1 = np.array([f[key][0] for f in figures[label]])
            mAP = np.array([f[key][1] for f in figures[label]])
            if len(r1) > 1:
                cells.append(f"{r1.mean():.1f} ± {r1.std():.1f} / {mAP.mean():.1f} ± {mAP.std():.1f}")
            else:
                cells.append(f"{r1.mean():.1f} / {mAP.mean():.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    data_text = (
        f"still-image synthetic renders (SYSU-MM01 layout, {args.ids} identities x {args.images_per_camera} images per "
        "camera, 64x32), each identity's images of one modality read as one tracklet: independent renders, so the "
        "frame order carries no motion and the table measures aggregation over frames, not motion"
        if args.data == "pseudo" else
        f"`{args.data}` walks (the video generator: consecutive frames of one walk, gait phase advancing, drifting, "
        f"occluders passing), {args.ids} identities x {args.images_per_camera} tracklets per camera x {args.frames} "
        "frames, 2 visible + 2 infrared cameras, 64x32, about half of the identities tested")
    body = "\n".join([
        f"Data: {data_text}. Every model: `configs/video_synth.yaml` (ResNet-10-T from scratch, cross entropy + "
        f"triplet, Adam, cosine), {args.epochs} epochs of {args.batches} batches of {args.num_ids} identities x "
        f"{args.seq_len} frames per modality, the last epoch kept; the baseline is the `baseline` method on the same "
        "frames as independent images. Seeds: "
        f"{', '.join(map(str, args.seeds))} (training seed; mean ± std over seeds, std 0 with one seed).",
        "",
        "*tracklet*: `vcm-i2v` / `vcm-v2i`, one query / gallery item per tracklet (a temporal model embeds every "
        f"frame, chunks of {args.seq_len} averaged; the baseline averages its frame embeddings). *frame*: the same "
        "protocols with every frame its own query and gallery item. Camera rule: a gallery tracklet of the query's "
        "identity and camera is skipped (MITML's evaluation). *random embedding*: random features on the same pool "
        "(mean of 20 draws), the level of a model that learned nothing.",
        "",
        *lines,
        "",
        "Training CPU time per model, all seeds: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
        + ".",
    ])
    if args.quick:
        body = SMOKE_BANNER + body
    command = "python benchmarks/video_table.py" + (" --quick" if args.quick else "") + (
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0, 1, 2] and not args.quick else "") + (
        f" --epochs {args.epochs}" if args.epochs != 4 and not args.quick else "") + (
        f" --data {args.data}" if args.data != "pseudo" else "") + "".join(
        f" --{k.replace('_', '-')} {getattr(args, k)}" for k, d in (("batches", 12), ("ids", 96), ("images_per_camera", 3),
                                                                    ("frames", 8), ("seq_len", 4), ("num_ids", 4))
        if getattr(args, k) != d and not args.quick)
    write_section(SECTION, TITLE, body, command, doc=args.doc)
    print("\n".join(lines))
    print(f"written to {args.doc}")


if __name__ == "__main__":
    main()
