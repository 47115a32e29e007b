"""``combined``: a dataset plus extra training images, e.g. the translations of ``vireid gan translate``.

Offline use of generated images (AlignGAN / JSIA-ReID train the ReID model on real and generated
images together): the ReID config names the real dataset as ``base`` and the translated folders as
``extra``::

    data:
      format: combined
      root: data/synth-sysu-small          # the base dataset's folder
      options:
        base: sysu-mm01                    # the base dataset's format (synthetic data: sysu-mm01)
        base_options: {train_includes_val: false}
        extra: [runs/translated]           # folders in vireid's folder layout (vireid.data.datasets.folder)

The training split is the base dataset's plus every extra folder's ``train`` images; identities are
matched by their dataset number, so a translated image trains the identity it was translated from
(``vireid gan translate`` keeps the numbers). An extra identity of the base's test split is refused (the
test set would leak into training); other identities the base training split does not have (e.g. the
validation identities a synthetic recipe keeps out of training) are left out, with a note. Validation, test, query and gallery come from the base dataset only, with its protocols.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vireid.data.datasets.base import DATASETS, VIReIDDataset
from vireid.errors import ConfigError, DatasetError


@DATASETS.register("combined")
class CombinedDataset(VIReIDDataset):
    """The ``base`` dataset with the ``train`` images of the ``extra`` folders added to its training split."""

    name = "combined"
    #: replaced per dataset by the base's family (its protocols evaluate the combined data)
    protocol_family = "that of the base format"

    def __init__(self, root: str | Path, base: str = "sysu-mm01", extra: list | None = None,
                 base_options: dict | None = None) -> None:
        from vireid.data.datasets import build_dataset
        from vireid.data.datasets.folder import FolderDataset

        super().__init__(root)
        if base == "combined" or base not in DATASETS:
            names = ", ".join(n for n in DATASETS.names() if n != "combined")
            raise ConfigError(f"data.options.base {base!r} is not a dataset format; use one of {names}")
        inner = build_dataset(base, root, **dict(base_options or {}))  # a missing or unreadable root is said first
        if not extra:
            raise ConfigError("data.options.extra is empty; list the translated dataset folder(s) to add, e.g. "
                              "extra: [runs/translated] (written by vireid gan translate)")
        if not isinstance(extra, (list, tuple)) or not all(isinstance(e, str) for e in extra):
            raise ConfigError(f"data.options.extra must be a list of folder paths, got {extra!r}")
        self.base_dataset = inner
        self.protocol_family = inner.protocol_family
        self.val, self.test, self.query, self.gallery = inner.val, inner.test, inner.query, inner.gallery
        self.notes = list(inner.notes)
        base_ids = {r.orig_pid for r in inner.train}
        raw = [replace(r, pid=r.orig_pid) for r in inner.train]
        self.extra_counts: dict[str, int] = {}
        for folder in extra:
            path = Path(folder).expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            added = FolderDataset(path, allow_lone_split=True)
            records = list(added.train)
            if not records:
                raise DatasetError(f"extra folder {path} holds no train images; translate the training split "
                                   "(vireid gan translate ... --split train)")
            held_out = {r.orig_pid for r in list(inner.test) + list(inner.query or []) + list(inner.gallery or [])}
            leaking = sorted({r.orig_pid for r in records} & held_out - base_ids)
            if leaking:
                raise DatasetError(f"extra folder {path} has identities {leaking[:5]} of the {base} test split of "
                                   f"{self.root}; training on them would leak the test set, so translate only the "
                                   "training split (vireid gan translate ... --split train)")
            unknown = sorted({r.orig_pid for r in records} - base_ids)
            if unknown:  # e.g. validation identities kept out of training (train_includes_val: false)
                self.notes.append(f"extra folder {path}: {len(unknown)} identities not in the {base} training split "
                                  f"(e.g. {unknown[:5]}) were left out")
                records = [r for r in records if r.orig_pid in base_ids]
            raw += [replace(r, pid=r.orig_pid) for r in records]
            self.extra_counts[str(path)] = len(records)
        self._finish(raw)


__all__ = ["CombinedDataset"]
