"""GOT-10k training set as a TFDS builder (docs/training.md#training-data: ``GOT10K_train`` = ``full``,
``GOT10K_vot_train`` = ``vot``).

Root (manual dir) = GOT-10k's ``train/`` folder: ``list.txt`` (one sequence folder per line), ``{seq}/%08d.jpg``
(1-based file names: frame t is ``{t+1:08d}.jpg``), ``groundtruth.txt`` (x,y,w,h per frame, its line count is the
sequence length), ``absence.label`` and ``cover.label`` (one integer per line).
visible[t] = absence == 0 and cover > 0 and w > 0 and h > 0 (and a readable image).

Sequence selection: ``split_file`` (constructor keyword) is a text file of integer indices into ``list.txt``, one per
line, as the official ``got10k_train_split.txt`` / ``got10k_vot_train_split.txt``. Config ``full`` without it takes
every sequence of ``list.txt`` (the official 9,335-sequence split is all of them); config ``vot`` needs it, or
``{root}/got10k_vot_train_split.txt``.
"""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds
from tqdm import tqdm

from grm_jax.data.datasets.common import SequenceSpec, TrackingBuilder, parse_box_lines, parse_flag_values

MANUAL = "Point the manual dir at GOT-10k's train/ folder (the one holding list.txt)."


def read_index_file(path) -> list[int]:
    """Integer indices, one per line (blank lines ignored)."""
    return [int(float(line)) for line in pathlib.Path(path).read_text().split() if line.strip()]


def got10k_sequence(root: pathlib.Path, name: str) -> SequenceSpec:
    """One GOT-10k sequence: boxes from ``groundtruth.txt``, flags = (absence == 0) & (cover > 0)."""
    folder = root / name
    gt = folder / "groundtruth.txt"
    boxes, problems, bad_rows = parse_box_lines(gt)
    n = len(boxes)
    absence, p1 = parse_flag_values(folder / "absence.label", n, one_line=False)
    cover, p2 = parse_flag_values(folder / "cover.label", n, one_line=False)
    flags = (absence == 0) & (cover > 0)
    paths = [str(folder / f"{t + 1:08d}.jpg") for t in range(n)]
    return SequenceSpec(name=name, boxes=boxes, flags=flags, paths=paths, box_file=str(gt),
                        problems=problems + p1 + p2, reported_rows=bad_rows)


class Got10k(TrackingBuilder):
    """GOT-10k train (``full`` or the VOT-free ``vot`` subset); one record per frame."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="full", description="list.txt (or the given split file)"),
        tfds.core.BuilderConfig(name="vot", description="the sequences of got10k_vot_train_split.txt"),
    ]

    def __init__(self, *, split_file=None, **kwargs):
        self._split_file = split_file
        super().__init__(**kwargs)

    def _list_split_sequences(self, root):
        names = [line.split(",")[0].strip() for line in (root / "list.txt").read_text().splitlines() if line.strip()]
        split_file = self._split_file
        if split_file is None and self.builder_config.name == "vot":
            split_file = root / "got10k_vot_train_split.txt"
            if not split_file.is_file():
                raise FileNotFoundError(f"config 'vot' needs split_file= (indices into list.txt); {split_file} "
                                        "does not exist")
        if split_file is not None:
            names = [names[i] for i in read_index_file(split_file)]
        specs = [got10k_sequence(root, name) for name in tqdm(names, desc="got10k: annotations", mininterval=1.0)]
        return {"train": specs}
