"""Pseudo-tracklets for the temporal models' tests until the synthetic video generator is used: the tiny
synthetic SYSU-MM01-layout images, every (identity, camera) folder read as one tracklet (its images in file
order are the frames), as a test-only reader ``test-pseudo-vcm`` of the tracklet protocols' family ``vcm``."""

from __future__ import annotations

from dataclasses import replace


def register_pseudo_vcm() -> str:
    """Register (once) and return the name of the test-only reader."""
    from vireid.data.datasets.base import DATASETS
    from vireid.data.datasets.sysu_mm01 import SYSUMM01

    name = "test-pseudo-vcm"
    if name in DATASETS:
        return name

    @DATASETS.register(name)
    class PseudoVCM(SYSUMM01):
        """SYSU-MM01 layout with each (identity, camera) folder as one tracklet (tests only)."""

        protocol_family = "vcm"

        def __init__(self, root, train_includes_val: bool = True, require_train: bool = True) -> None:
            super().__init__(root, train_includes_val=train_includes_val, require_train=require_train)
            ids: dict[tuple[int, int], int] = {}

            def tag(records):
                return [replace(r, tracklet=ids.setdefault((r.orig_pid, r.camid), len(ids))) for r in records]

            self.train, self.val, self.test = tag(self.train), tag(self.val), tag(self.test)

    return name


def tracklet_sampling_overrides(seq_len: int, tracklets_per_id: int = 1) -> dict:
    """``sampler.seq_len`` / ``sampler.tracklets_per_id`` where the config has the tracklet sampler's keys (it
    refuses the ``tracklets`` side input without them); nothing before those keys exist, where the identity
    sampler's consecutive frames of one (identity, modality) form the tracklets."""
    from dataclasses import fields

    from vireid.config import SamplerConfig

    names = {f.name for f in fields(SamplerConfig)}
    if "seq_len" not in names:
        return {}
    return {"sampler.seq_len": seq_len, "sampler.tracklets_per_id": tracklets_per_id}
