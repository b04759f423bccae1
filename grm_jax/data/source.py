"""Random access to tracking sequences: prepared TFDS datasets and in-memory sequences, one interface.

A *source* has ``name``, ``is_video`` (False for image datasets such as COCO: template and search come from the
same image), ``num_sequences``, ``sequence_info(i) -> SequenceInfo(length, visible)`` (cheap: no image is read) and
``frame(i, t) -> (image uint8 (H, W, 3) RGB, box (4,) float64 x, y, w, h)``. ``frame`` raises
``FrameUnavailableError`` for a frame whose image was not stored (unreadable at preparation, or a frame the builder
does not keep); the sampler treats that like the official loader's exceptions (resample).

Sources are picklable and cheap to pickle (a prepared dataset reopens its files lazily in each process), as grain's
worker processes need.
"""

from __future__ import annotations

import os
import pathlib
from typing import NamedTuple

import cv2
import numpy as np
import tensorflow_datasets as tfds

from grm_jax.data import synthetic
from grm_jax.data.datasets import make_builder
from grm_jax.data.records import INDEX_FILE, encode_jpeg

__all__ = ["DatasetSource", "FrameUnavailableError", "MemorySource", "SequenceInfo", "decode_rgb", "encode_jpeg",
           "open_sources"]


class SequenceInfo(NamedTuple):
    length: int
    visible: np.ndarray  # (length,) bool


class FrameUnavailableError(LookupError):
    """The frame has no stored image."""


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes → uint8 RGB (H, W, 3), decoded by OpenCV (BGR) and converted BGR→RGB, as the official
    ``opencv_loader`` (docs/training.md#training-data)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameUnavailableError("OpenCV cannot decode the stored image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class DatasetSource:
    """A prepared dataset split (``grm_jax.data.datasets``): the sequence index in memory, frames read by index.

    ``path`` is the prepared version directory (``{data_dir}/{name}/{config}/{version}``). The frame records are
    read through ``tfds.builder_from_directory(path).as_data_source(split)`` (array_record, no TensorFlow),
    opened on first use in each process.
    """

    def __init__(self, path, split: str = "train"):
        self.path = pathlib.Path(path)
        self.split = split
        index_file = self.path / INDEX_FILE.format(split=split)
        if not index_file.is_file():
            raise FileNotFoundError(f"{index_file} does not exist: is {self.path} a prepared grm_jax dataset with "
                                    f"a {split!r} split?")
        with np.load(index_file) as index:
            self.names = index["names"]
            self._first = index["first"].astype(np.int64)
            self._length = index["length"].astype(np.int64)
            self._visible = index["visible"].astype(bool)
            self.is_video = bool(index["is_video"])
        self.name = f"{self.path.parent.parent.name}/{self.path.parent.name}"
        self._records = None

    @classmethod
    def open(cls, name: str, data_dir, split: str = "train") -> DatasetSource:
        """The prepared dataset ``name`` (``builder[/config]`` or a ``config.data.datasets`` name) in ``data_dir``."""
        builder = make_builder(name, data_dir)
        if not pathlib.Path(builder.data_dir).is_dir():
            raise FileNotFoundError(f"{name} is not prepared in {data_dir} (no {builder.data_dir}); prepare it with "
                                    "grm_jax.data.datasets.prepare_dataset")
        return cls(builder.data_dir, split)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_records"] = None
        return state

    def _reader(self):
        if self._records is None:
            self._records = tfds.builder_from_directory(os.fspath(self.path)).as_data_source(split=self.split)
        return self._records

    @property
    def num_sequences(self) -> int:
        return len(self._first)

    def sequence_info(self, i: int) -> SequenceInfo:
        first, length = int(self._first[i]), int(self._length[i])
        return SequenceInfo(length, self._visible[first:first + length])

    def record(self, i: int, t: int) -> dict:
        """The raw frame record (see ``grm_jax.data.datasets.common``)."""
        return self._reader()[int(self._first[i]) + int(t)]

    def frame(self, i: int, t: int):
        index = int(self._first[i]) + int(t)
        reader = self._reader()
        record = reader[index]
        data = record["image"] if int(record["image_record"]) == index else reader[int(record["image_record"])]["image"]
        if not data:
            raise FrameUnavailableError(f"{self.name} sequence {i} frame {t}: no stored image")
        return decode_rgb(data), np.asarray(record["box"], np.float64)


class MemorySource:
    """Sequences held in memory: ``[(frames, boxes (T,4), visible (T,))]`` with frames a uint8 (T,H,W,3) RGB array
    or a list of encoded images (decoded on access)."""

    def __init__(self, sequences, *, is_video: bool = True, name: str = "memory"):
        self._sequences = [(frames, np.asarray(boxes, np.float64), np.asarray(visible, bool))
                           for frames, boxes, visible in sequences]
        for frames, boxes, visible in self._sequences:
            if not len(frames) == len(boxes) == len(visible):
                raise ValueError("frames, boxes and visible must have the same length")
        self.is_video = is_video
        self.name = name

    @classmethod
    def synthetic(cls, num_sequences: int, seed: int = 0, min_length: int = 50, max_length: int = 300,
                  height: int = 240, width: int = 320, jpeg_quality: int | None = 90,
                  difficulty: synthetic.Difficulty = synthetic.Difficulty()) -> MemorySource:
        """``num_sequences`` sequences of ``grm_jax.data.synthetic`` — the same ones as the ``train`` split of the
        ``synthetic_tracking`` builder with this seed and these sizes. Frames are kept JPEG-encoded unless
        ``jpeg_quality`` is None (raw arrays: exact pixels, ~70 MB per 300-frame 320×240 sequence)."""
        sequences = []
        for k in range(num_sequences):
            s = synthetic.split_sequence_seed(seed, "train", k)
            frames, boxes, visible = synthetic.generate_sequence(s, synthetic.sequence_length(s, min_length,
                                                                                              max_length),
                                                                 height, width, difficulty)
            if jpeg_quality is not None:
                frames = [encode_jpeg(f, jpeg_quality) for f in frames]
            sequences.append((frames, boxes, visible))
        return cls(sequences, name=f"synthetic(seed={seed})")

    @property
    def num_sequences(self) -> int:
        return len(self._sequences)

    def sequence_info(self, i: int) -> SequenceInfo:
        _, boxes, visible = self._sequences[i]
        return SequenceInfo(len(boxes), visible)

    def frame(self, i: int, t: int):
        frames, boxes, _ = self._sequences[i]
        image = frames[t]
        if isinstance(image, (bytes, bytearray)):
            image = decode_rgb(bytes(image))
        return np.asarray(image), boxes[t].copy()


def open_sources(names, data_dir, split: str = "train") -> list:
    """``DatasetSource.open`` for each name of ``config.data.datasets`` (e.g. ``LASOT``, ``GOT10K_vot_train``)."""
    return [DatasetSource.open(name, data_dir, split) for name in names]
