"""COCO 2017 train as one-frame tracking sequences, a TFDS builder (docs/training.md#training-data).

Root (manual dir) holds ``annotations/instances_train2017.json`` and ``images/train2017/{file_name}``. Every
annotation with ``iscrowd == 0`` is a sequence of one frame: its image and its ``bbox`` (x, y, w, h);
visible = w > 0 and h > 0 and a readable image. (The official ``MSCOCOSeq.get_sequence_info`` marks w > 50 and
h > 50; the sampler ignores visibility for one-frame sequences, so either rule samples the same annotations.)

Sequences are ordered by image, then annotation id; each image's bytes are stored once, in the record of its first
annotation, and the other annotations of that image point at it through ``image_record``.
"""

from __future__ import annotations

import json

import numpy as np

from grm_jax.data.datasets.common import SequenceSpec, TrackingBuilder


def coco_sequences(root, annotation_file="annotations/instances_train2017.json", image_dir="images/train2017"):
    """[SequenceSpec] of the non-crowd annotations, ordered by (image id, annotation id)."""
    path = root / annotation_file
    data = json.loads(path.read_text())
    files = {image["id"]: image["file_name"] for image in data["images"]}
    anns = sorted((a for a in data["annotations"] if not a.get("iscrowd", 0)), key=lambda a: (a["image_id"], a["id"]))
    specs = []
    for a in anns:
        problems = []
        bbox = a.get("bbox")
        box = np.asarray(bbox, np.float64) if bbox is not None and len(bbox) == 4 else np.full(4, np.nan)
        if bbox is None or len(bbox) != 4:
            problems.append((str(path), f"annotation {a['id']}: no x,y,w,h bbox"))
        if a["image_id"] not in files:
            problems.append((str(path), f"annotation {a['id']}: image id {a['image_id']} not listed"))
        image = root / image_dir / files.get(a["image_id"], f"missing-{a['image_id']}.jpg")
        specs.append(SequenceSpec(name=str(a["id"]), boxes=box[None], flags=np.ones(1, bool), paths=[str(image)],
                                  box_file=f"{path} (annotation {a['id']})", problems=problems,
                                  reported_rows={0} if bbox is None or len(bbox) != 4 else set()))
    return specs


class Coco17(TrackingBuilder):
    """COCO 2017 train: one record per non-crowd annotation, each image stored once."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Point the manual dir at the COCO folder holding annotations/ and images/."
    IS_VIDEO = False
    SHARE_IMAGES = True
    CHUNK_FRAMES = 64

    def _list_split_sequences(self, root):
        return {"train": coco_sequences(root)}
