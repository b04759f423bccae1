"""Procedural tracking sequences (``grm_jax.data.synthetic``) as a TFDS builder: train and val splits.

No manual dir. Sequence k of a split is ``generate_sequence(seed_k, length_k)`` with
``seed_k = synthetic.split_sequence_seed(config seed, split, k)`` and ``length_k`` uniform in
[min_length, max_length]; frames are stored as JPEG (quality 90), boxes and visibility exactly as generated.
Both splits draw with the config's :class:`~grm_jax.data.synthetic.Difficulty`, except that ``val_min_contrast``
(when not 0) replaces its ``min_contrast`` for the val split: a held-out benchmark of targets that can be told
from their background, beside a training split of every draw.
Configs: ``default`` (200 train / 20 val sequences of 50–300 frames), ``small`` (16 / 4 of 50–120 frames);
:func:`synthetic_config` makes others (its name encodes the parameters, so different data never share a
directory); :func:`synthetic_builder_config` the one of an experiment config.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from grm_jax.data import synthetic
from grm_jax.data.datasets.common import SequenceSpec, TrackingBuilder
from grm_jax.data.records import encode_jpeg


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
    num_train: int = 200
    num_val: int = 20
    seed: int = 0
    min_length: int = 50
    max_length: int = 300
    height: int = 240
    width: int = 320
    jpeg_quality: int = 90
    difficulty: synthetic.Difficulty = synthetic.Difficulty()
    val_min_contrast: float = 0.0

    def split_difficulty(self, split: str) -> synthetic.Difficulty:
        """The difficulty sequences of ``split`` are drawn with (see the module docstring)."""
        if split == "val" and self.val_min_contrast:
            return dataclasses.replace(self.difficulty, min_contrast=self.val_min_contrast)
        return self.difficulty


def synthetic_config(num_train: int, num_val: int, seed: int = 0, min_length: int = 50, max_length: int = 300,
                     height: int = 240, width: int = 320,
                     difficulty: synthetic.Difficulty = synthetic.Difficulty(),
                     val_min_contrast: float = 0.0) -> SyntheticConfig:
    """A config named after its parameters, e.g. ``n8-2_s0_l50-300_240x320`` (+ ``Difficulty.tag()`` when not
    the default, e.g. ``_d1oo0e0``, + ``_v80`` for a val_min_contrast of 80)."""
    synthetic.Difficulty(min_contrast=val_min_contrast)  # validates the value
    held_out = f"_v{val_min_contrast:g}" if val_min_contrast else ""
    name = f"n{num_train}-{num_val}_s{seed}_l{min_length}-{max_length}_{height}x{width}{difficulty.tag()}{held_out}"
    return SyntheticConfig(name=name, num_train=num_train, num_val=num_val, seed=seed, min_length=min_length,
                           max_length=max_length, height=height, width=width, difficulty=difficulty,
                           val_min_contrast=val_min_contrast)


def synthetic_builder_config(config) -> SyntheticConfig:
    """The builder config of an experiment config's ``config.data.synthetic`` (what ``train.py`` trains on and
    ``eval.py`` evaluates with, the ``train`` and ``val`` splits of one prepared dataset)."""
    s = config.data.synthetic
    difficulty = synthetic.Difficulty(s.max_distractors, s.distractor_palette, s.max_occlusions, s.exit_probability,
                                      s.min_contrast)
    return synthetic_config(s.num_train, s.num_val, s.seed, s.min_length, s.max_length, difficulty=difficulty,
                            val_min_contrast=s.val_min_contrast)


class SyntheticTracking(TrackingBuilder):
    """Seeded synthetic tracking sequences (textured target, distractors, occlusion, exits)."""

    BUILDER_CONFIGS = [
        SyntheticConfig(name="default", description="200 train / 20 val sequences, 50-300 frames, 320x240"),
        SyntheticConfig(name="small", num_train=16, num_val=4, max_length=120,
                        description="16 train / 4 val sequences, 50-120 frames"),
    ]
    CHUNK_FRAMES = None  # one job generates a whole sequence

    def _root(self, dl_manager):
        return None

    def _list_split_sequences(self, root):
        c = self.builder_config
        out = {}
        for split, count in (("train", c.num_train), ("val", c.num_val)):
            specs, difficulty = [], c.split_difficulty(split)
            for k in range(count):
                seed = synthetic.split_sequence_seed(c.seed, split, k)
                n = synthetic.sequence_length(seed, c.min_length, c.max_length)
                specs.append(SequenceSpec(name=f"{split}-{k:05d}", boxes=np.full((n, 4), np.nan),
                                          flags=np.ones(n, bool), payload=(seed, difficulty)))
            out[split] = specs
        return out

    def _frame_bytes(self, spec, frames):
        """Generate the sequence, fill in its boxes and visibility, JPEG-encode the requested frames."""
        c = self.builder_config
        seed, difficulty = spec.payload
        images, boxes, visible = synthetic.generate_sequence(seed, len(spec), c.height, c.width, difficulty)
        spec.boxes[:] = boxes
        spec.flags[:] = visible
        return [(encode_jpeg(images[t], c.jpeg_quality), None) for t in frames]
