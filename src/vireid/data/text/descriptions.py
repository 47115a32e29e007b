"""Where a record's text description comes from, for the readers of every layout.

A description is found, in this order:

1. the record's own ``description`` (a CSV manifest's ``description`` column,
   :mod:`vireid.data.datasets.folder`);
2. a **description file**: a JSON object ``{image path: sentence}``, the paths relative to the dataset
   root (absolute paths are accepted too). With ``descriptions: dataset`` the file is
   ``<data.root>/Text/descriptions.json`` -- a ``Text`` folder beside the images, as the text-extended
   SYSU-MM01 / RegDB / LLCM layouts of TVI-LFM (Hu, Yang and Ye, NeurIPS 2024: ``sysu/Text``,
   ``regdb/Text``, ``llcm/Text``) keep theirs; the format of the file inside is vireid's own, the one
   ``vireid synth`` writes (:mod:`vireid.data.synth.descriptions`). Any other path names a file of
   that format directly (``descriptions: path/to/file.json``), for SYSU-MM01, RegDB, LLCM and folder
   layouts alike.

A record without a description when one is required is one :class:`~vireid.errors.DatasetError`
sentence naming the image and where it was looked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from vireid.errors import DatasetError

#: ``descriptions: dataset`` reads this file under the dataset root (Tri-SYSU style ``Text`` folder).
DATASET_FILE = Path("Text") / "descriptions.json"
DATASET = "dataset"


@lru_cache(maxsize=4)
def _read(path: str, mtime: float) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise DatasetError(f"description file {path} cannot be read ({err.strerror or err}); check the path and its "
                           "permissions") from None
    except ValueError as err:
        raise DatasetError(f"description file {path} is not valid JSON ({err}); it must be an object "
                           "{\"relative/image/path\": \"sentence\"}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise DatasetError(f"description file {path} must be a JSON object mapping image paths to sentences "
                           "(strings); fix the file")
    return {k.replace("\\", "/"): v for k, v in data.items()}


def read_description_file(path: str | Path) -> dict[str, str]:
    """``{relative image path: sentence}`` of a description file (see the module doc)."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise DatasetError(f"description file {path} {state}; give a JSON file of image path -> sentence, or use "
                           "descriptions: dataset for <root>/Text/descriptions.json")
    return dict(_read(str(path), path.stat().st_mtime))


def description_file(source: Any, root: str | Path | None) -> Path | None:
    """The description file ``source`` names (``dataset``: ``<root>/Text/descriptions.json``; ``None`` when
    that file does not exist, so the records must carry their own)."""
    if source in (None, "", DATASET):
        if root is None:
            return None
        path = Path(root).expanduser().absolute() / DATASET_FILE
        return path if path.is_file() else None
    return Path(str(source)).expanduser().absolute()


def record_descriptions(records: Sequence[Any], source: Any = DATASET, root: str | Path | None = None) -> list[str]:
    """One description per record (see the module doc for the order they are looked up in).

    ``root`` is the dataset root the file's relative paths start at (``data.root``)."""
    path = description_file(source, root)
    table = read_description_file(path) if path is not None else {}
    base = Path(root).expanduser().absolute() if root is not None else None
    bases = [b for b in (base, path.parent.parent if path is not None else None, path.parent if path else None) if b]
    out = []
    for record in records:
        text = getattr(record, "description", None)
        if not text:
            text = table.get(str(record.path))
            for b in bases:
                if text:
                    break
                rel = os.path.relpath(str(record.path), str(b)).replace(os.sep, "/")
                text = table.get(rel)
        if not text or not str(text).strip():
            where = (f"the description file {path}" if path is not None else
                     f"the record (no 'description' column) and no {DATASET_FILE} under {root}")
            raise DatasetError(f"image {record.path} has no description in {where}; add one (a description column "
                               "of the CSV manifest or an entry in the description file), or remove "
                               "data.extras.tokens")
        out.append(str(text))
    return out


__all__ = ["DATASET", "DATASET_FILE", "description_file", "read_description_file", "record_descriptions"]
