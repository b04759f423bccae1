"""LaSOT training set as a TFDS builder (docs/training.md#training-data).

Root (manual dir) = the LaSOT folder: ``{class}/{class}-{id}/img/%08d.jpg`` (1-based file names),
``groundtruth.txt`` (comma x,y,w,h), ``full_occlusion.txt`` and ``out_of_view.txt`` (one comma-separated 0/1 line).
visible[t] = not occluded and not out of view and w > 0 and h > 0 (and a readable image).

Sequence list: ``split_file`` (constructor keyword; names like ``airplane-1``, one per line — the official
``lasot_train_split.txt``), else ``{root}/lasot_train_split.txt``, else ``{root}/training_set.txt`` (shipped with
LaSOT). Without any of them preparation stops: taking every folder would mix in the test set.
"""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds
from tqdm import tqdm

from grm_jax.data.datasets.common import SequenceSpec, TrackingBuilder, parse_box_lines, parse_flag_values

DEFAULT_SPLIT_FILES = ("lasot_train_split.txt", "training_set.txt")


def lasot_sequence(root: pathlib.Path, name: str) -> SequenceSpec:
    """One LaSOT sequence ``{class}-{id}``: flags = not full_occlusion and not out_of_view."""
    folder = root / name.rsplit("-", 1)[0] / name
    gt = folder / "groundtruth.txt"
    boxes, problems, bad_rows = parse_box_lines(gt)
    n = len(boxes)
    occluded, p1 = parse_flag_values(folder / "full_occlusion.txt", n, one_line=True)
    out_of_view, p2 = parse_flag_values(folder / "out_of_view.txt", n, one_line=True)
    flags = (occluded == 0) & (out_of_view == 0)
    paths = [str(folder / "img" / f"{t + 1:08d}.jpg") for t in range(n)]
    return SequenceSpec(name=name, boxes=boxes, flags=flags, paths=paths, box_file=str(gt),
                        problems=problems + p1 + p2, reported_rows=bad_rows)


class Lasot(TrackingBuilder):
    """LaSOT train (1,120 sequences with the official split file); one record per frame."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Point the manual dir at the LaSOT folder holding the class folders."

    def __init__(self, *, split_file=None, **kwargs):
        self._split_file = split_file
        super().__init__(**kwargs)

    def _list_split_sequences(self, root):
        split_file = self._split_file
        if split_file is None:
            found = [root / f for f in DEFAULT_SPLIT_FILES if (root / f).is_file()]
            if not found:
                raise FileNotFoundError(f"no LaSOT sequence list: pass split_file= or put one of "
                                        f"{DEFAULT_SPLIT_FILES} into {root}")
            split_file = found[0]
        names = [line.strip() for line in pathlib.Path(split_file).read_text().splitlines() if line.strip()]
        specs = [lasot_sequence(root, name) for name in tqdm(names, desc="lasot: annotations", mininterval=1.0)]
        return {"train": specs}
