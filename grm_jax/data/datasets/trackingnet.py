"""TrackingNet training chunks as a TFDS builder (docs/training.md#training-data).

Root (manual dir) holds ``TRAIN_{s}/anno/{video}.txt`` (comma x,y,w,h per frame; its line count is the length) and
``TRAIN_{s}/frames/{video}/{i}.jpg`` (0-based). Only the human-annotated frames are visible: index % 30 == 0 and
the last frame (and, as everywhere, a finite box with w > 0 and h > 0 and a readable image).

The causal sampler only ever picks visible frames, so the images of the other 29/30 of the frames are not stored
(their records are kept, with empty ``image``, so lengths and indices are those of the videos). Videos are taken in
chunk order and, within a chunk, in sorted name order. Config ``all`` = chunks 0..11; a ``TrackingNetConfig`` with
other ``set_ids`` prepares a subset; a missing chunk folder is reported and skipped.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from grm_jax.data.datasets.common import SequenceSpec, TrackingBuilder, parse_box_lines

ANNOTATED_EVERY = 30


@dataclasses.dataclass(eq=False)
class TrackingNetConfig(tfds.core.BuilderConfig):
    set_ids: tuple = tuple(range(12))


def annotated_frames(n: int) -> np.ndarray:
    """(n,) bool: t % 30 == 0 or t == n − 1."""
    flags = np.arange(n) % ANNOTATED_EVERY == 0
    if n:
        flags[-1] = True
    return flags


def trackingnet_sequence(root: pathlib.Path, set_id: int, video: str) -> SequenceSpec:
    chunk = root / f"TRAIN_{set_id}"
    anno = chunk / "anno" / f"{video}.txt"
    boxes, problems, bad_rows = parse_box_lines(anno)
    n = len(boxes)
    paths = [str(chunk / "frames" / video / f"{t}.jpg") for t in range(n)]
    return SequenceSpec(name=f"TRAIN_{set_id}/{video}", boxes=boxes, flags=annotated_frames(n), paths=paths,
                        box_file=str(anno), problems=problems, reported_rows=bad_rows)


class Trackingnet(TrackingBuilder):
    """TrackingNet TRAIN_0..11; one record per frame, images of the annotated frames only."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Point the manual dir at the TrackingNet folder holding TRAIN_0 ... TRAIN_11."
    BUILDER_CONFIGS = [TrackingNetConfig(name="all", description="TRAIN_0 .. TRAIN_11")]
    STORE_INVISIBLE_IMAGES = False

    def _list_split_sequences(self, root):
        specs = []
        for s in self.builder_config.set_ids:
            anno_dir = root / f"TRAIN_{s}" / "anno"
            if not anno_dir.is_dir():
                self._prep_log.add("train", anno_dir, "chunk folder missing; skipped")
                continue
            videos = sorted(p.stem for p in anno_dir.glob("*.txt"))
            specs += [trackingnet_sequence(root, s, v) for v in tqdm(videos, desc=f"trackingnet TRAIN_{s}: annotations",
                                                                      mininterval=1.0)]
        if not specs:
            raise FileNotFoundError(f"no TrackingNet annotations under {root}/TRAIN_*/anno")
        return {"train": specs}
