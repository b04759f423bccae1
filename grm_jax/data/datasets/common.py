"""What every tracking-dataset builder shares: the record schema, the sequence index, bad-frame reports.

Prepared layout (``{data_dir}/{name}/{config}/{version}/``):

* ``{name}-{split}.array_record-*`` — **one record per frame**, in sequence order (sequence 0 frames 0..n−1, then
  sequence 1, ...), so the frames of a sequence are consecutive records. Features:
  ``image`` (encoded JPEG bytes as found on disk; ``b""`` when not stored — an unreadable file, or a frame the
  builder does not keep, see ``STORE_INVISIBLE_IMAGES``), ``image_record`` (index of the record that holds this
  frame's bytes: itself, except for COCO annotations of an image already stored), ``box`` (x, y, w, h pixels,
  float32; a non-finite box is stored as zeros), ``visible`` (bool, the dataset's visibility rule and a readable
  image and a valid box), ``sequence`` (sequence id), ``frame`` (index in the sequence).
* ``sequences_{split}.npz`` — the per-sequence index the sampler needs without touching the images:
  ``names`` (str), ``first`` (record index of frame 0), ``length``, ``visible`` (bool, all frames of the split
  concatenated in record order), ``is_video`` (False for image datasets such as COCO).
* ``preparation_report.txt`` — one line per problem found while preparing (``split<TAB>path<TAB>reason``):
  unreadable or missing image, NaN/negative box, missing or malformed annotation line. Problems never stop the
  preparation; the frame is stored as not visible.

Records are written with ``disable_shuffling`` and keys spread evenly over TFDS's 128-bit key space, so the record
order is the generation order and TFDS's temporary buckets stay small (about 1/1000 of the data each).

Preparation is resumable the TFDS way: a finished ``{version}`` directory is reused as is, and an interrupted one
only ever exists as ``incomplete.*`` (removed on an exception, ignored otherwise), so a crashed run is simply re-run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import inspect
import logging
import os
import pathlib
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.utils import py_utils
from tqdm import tqdm

from grm_jax.data.records import INDEX_FILE, REPORT_FILE

log = logging.getLogger(__name__)

_KEY_SPACE = 2**128  # TFDS hashes keys to 128 bits; with disable_shuffling the key itself is used


def frame_features() -> tfds.features.FeaturesDict:
    """The per-frame record schema (module docstring)."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(), dtype=np.object_),
        "image_record": tfds.features.Scalar(dtype=np.int64),
        "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "visible": tfds.features.Scalar(dtype=np.bool_),
        "sequence": tfds.features.Scalar(dtype=np.int64),
        "frame": tfds.features.Scalar(dtype=np.int32),
    })


@dataclasses.dataclass
class SequenceSpec:
    """One sequence as listed from the annotations, before any image is read.

    ``paths[t]`` is frame t's image file (None for generated frames); ``boxes`` (n, 4) x, y, w, h pixels as parsed
    (NaN where a line was missing or malformed); ``flags`` (n,) the dataset's own visibility flags (absence,
    occlusion, annotated-frame rules), without the box and image checks the builder adds; ``problems`` the
    ``(path, reason)`` pairs found while parsing.
    """

    name: str
    boxes: np.ndarray
    flags: np.ndarray
    paths: Sequence[str] | None = None
    box_file: str = ""  # where the boxes come from, for reports ("{box_file} line {t+1}")
    problems: list = dataclasses.field(default_factory=list)
    reported_rows: set = dataclasses.field(default_factory=set)  # box rows whose problem is already in `problems`
    payload: object = None  # builder-specific (e.g. the synthetic seed)

    def __len__(self) -> int:
        return len(self.boxes)


@dataclasses.dataclass
class PreparationLog:
    """Problems found while preparing one dataset, split by split."""

    lines: list = dataclasses.field(default_factory=list)

    def add(self, split: str, path, reason: str) -> None:
        line = f"{split}\t{path}\t{reason}"
        self.lines.append(line)
        if len(self.lines) <= 20:
            tqdm.write(f"[prepare] {path}: {reason}")
        elif len(self.lines) == 21:
            tqdm.write(f"[prepare] more problems; see {REPORT_FILE} beside the prepared data")


# ---------------------------------------------------------------------------------------------------------------
# Annotation parsing (pure helpers, shared by the builders).


def parse_box_lines(path: pathlib.Path, expected: int | None = None):
    """``(boxes (n,4) float64, problems, bad_rows)`` from a text file of x,y,w,h lines (comma, tab or space separated).

    n = ``expected`` if given, else the number of lines up to the last non-empty one. A line that does not hold
    four numbers, or is missing (file shorter than ``expected``), gives a NaN row, a problem ``(path, reason)`` and
    its row in ``bad_rows``;
    a line holding NaN/negative values is parsed as is (the builder reports it when writing the frame).
    """
    problems = []
    try:
        text = pathlib.Path(path).read_text()
    except OSError as e:
        n = expected or 0
        return np.full((n, 4), np.nan), [(str(path), f"cannot read annotation file: {e.strerror or e}")], set(range(n))
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    n = len(lines) if expected is None else expected
    boxes = np.full((n, 4), np.nan)
    bad_rows = set()
    for t in range(n):
        if t >= len(lines):
            problems.append((str(path), f"line {t + 1}: missing annotation line (file has {len(lines)})"))
            bad_rows.add(t)
            continue
        fields = lines[t].replace(",", " ").replace("\t", " ").split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != 4:
            problems.append((str(path), f"line {t + 1}: cannot parse {lines[t]!r} as x,y,w,h"))
            bad_rows.add(t)
            continue
        boxes[t] = values
    return boxes, problems, bad_rows


def parse_flag_values(path: pathlib.Path, n: int, *, one_line: bool):
    """``(values (n,) int64 or -1, problems)``: integer flags, one per line or comma-separated on one line.

    A missing or unparsable entry gives −1 and a problem; extra entries are ignored.
    """
    try:
        text = pathlib.Path(path).read_text()
    except OSError as e:
        return np.full(n, -1, np.int64), [(str(path), f"cannot read flag file: {e}")]
    tokens = text.replace(",", " ").split() if one_line else [line.strip() for line in text.splitlines()
                                                              if line.strip()]
    values = np.full(n, -1, np.int64)
    problems = []
    for t in range(n):
        if t >= len(tokens):
            problems.append((str(path), f"missing entry {t + 1} (file has {len(tokens)})"))
            break
        try:
            values[t] = int(float(tokens[t]))
        except ValueError:
            problems.append((str(path), f"entry {t + 1}: cannot parse {tokens[t]!r}"))
    return values, problems


def box_problem(box: np.ndarray) -> str | None:
    """Why a box cannot be used at all (non-finite or negative size), or None. Zero size is not a problem: the
    official rule simply makes such frames not visible."""
    if not np.all(np.isfinite(box)):
        return f"non-finite box {box.tolist()}"
    if box[2] < 0 or box[3] < 0:
        return f"negative box size {box.tolist()}"
    return None


def usable_box(box: np.ndarray) -> bool:
    """visible needs w > 0 and h > 0 (official rule) and finite values."""
    return bool(np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0)


def read_image_bytes(path: str, verify: bool) -> tuple[bytes, str | None]:
    """``(bytes, problem)``: the file's bytes and, if ``verify``, whether OpenCV can decode them.

    Decoding uses ``IMREAD_REDUCED_GRAYSCALE_8`` (libjpeg's 1/8 DCT scaling): it parses the whole entropy-coded
    stream, so it fails where a full decode fails, at a fraction of the cost.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return b"", f"cannot read image: {e.strerror or e}"
    if not data:
        return b"", "empty image file"
    if verify:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        if decoded is None or decoded.size == 0:
            return b"", "OpenCV cannot decode the image"
    return data, None


def ordered_parallel_map(fn: Callable, items: Iterable, workers: int, window: int) -> Iterator:
    """``map(fn, items)`` on a thread pool, results in order, at most ``window`` items in flight (bounded memory).

    Threads suit this work: file reads and OpenCV decoding release the GIL.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


# ---------------------------------------------------------------------------------------------------------------


class TrackingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the tracking builders: subclasses list sequences, this class reads, checks and writes the frames.

    Subclasses implement ``_list_split_sequences(root) -> {split: [SequenceSpec]}`` and may override
    ``_frame_bytes`` (generated data). Constructor keywords: ``verify_images`` (decode-check every stored JPEG,
    default True), ``num_threads`` (parallel file reading, default min(16, CPUs)).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    IS_VIDEO = True
    STORE_INVISIBLE_IMAGES = True  # False: frames that are not visible keep a record but no image bytes
    SHARE_IMAGES = False  # True: frames with the same image path reference one stored copy (COCO)
    CHUNK_FRAMES = 32  # frames per reading job

    @py_utils.classproperty
    @classmethod
    def code_path(cls):
        """This module's file. TFDS's own lookup needs ``importlib_resources`` (not installed) for a package."""
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, verify_images: bool = True, num_threads: int | None = None, **kwargs):
        self._verify_images = verify_images
        self._num_threads = num_threads or min(16, os.cpu_count() or 1)
        self._prep_log = PreparationLog()
        self._indices = {}
        super().__init__(**kwargs)

    # -- TFDS hooks ---------------------------------------------------------------------------------------------

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=frame_features(),
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        listed = self._list_split_sequences(root)
        for split, specs in listed.items():
            for spec in specs:
                for path, reason in spec.problems:
                    self._prep_log.add(split, path, reason)
        return {split: self._generate_split(split, specs) for split, specs in listed.items()}

    def _generate_examples(self, *args, **kwargs):  # the splits come from _generate_split
        raise NotImplementedError

    def _download_and_prepare(self, dl_manager, download_config=None):
        self._prep_log = PreparationLog()
        self._indices = {}
        super()._download_and_prepare(dl_manager, download_config)
        # Still inside TFDS's incomplete.* directory: these files appear atomically with the records.
        out = pathlib.Path(self.data_dir)
        for split, index in self._indices.items():
            np.savez(out / INDEX_FILE.format(split=split), **index)
        (out / REPORT_FILE).write_text(
            f"# {self.info.full_name}: "
            f"{len(self._prep_log.lines)} problem(s); split<TAB>path<TAB>reason\n"
            + "".join(line + "\n" for line in self._prep_log.lines))
        # The warning naming the report is logged by prepare(), once the folder has its final name.

    # -- subclass interface -----------------------------------------------------------------------------------

    def _root(self, dl_manager) -> pathlib.Path | None:
        """The dataset root (TFDS's manual dir)."""
        return pathlib.Path(dl_manager.manual_dir)

    def _list_split_sequences(self, root) -> dict:
        raise NotImplementedError

    def _frame_bytes(self, spec: SequenceSpec, frames: Sequence[int]) -> list:
        """``[(bytes, problem or None)]`` for ``frames`` of ``spec``; default: read ``spec.paths``."""
        return [read_image_bytes(spec.paths[t], self._verify_images) for t in frames]

    # -- generation -------------------------------------------------------------------------------------------

    def _plan(self, specs: Sequence[SequenceSpec]):
        """Per frame, in record order: (seq id, t, record index, image_record, read?) and the reading jobs."""
        first_record = {}
        jobs = []  # (seq id, [frames to read])
        plan = []
        index = 0
        for s, spec in enumerate(specs):
            to_read = []
            for t in range(len(spec)):
                wanted = self.STORE_INVISIBLE_IMAGES or bool(spec.flags[t])
                image_record, read = index, wanted
                if self.SHARE_IMAGES and spec.paths is not None:
                    key = spec.paths[t]
                    if key in first_record:
                        image_record, read = first_record[key], False
                    elif wanted:
                        first_record[key] = index
                plan.append((s, t, index, image_record, read))
                if read:
                    to_read.append(t)
                index += 1
            chunk = self.CHUNK_FRAMES or max(len(to_read), 1)
            for i in range(0, len(to_read), chunk):
                jobs.append((s, to_read[i:i + chunk]))
        return plan, jobs

    def _generate_split(self, split: str, specs: Sequence[SequenceSpec]):
        plan, jobs = self._plan(specs)
        total = len(plan)
        stride = _KEY_SPACE // max(total, 1)
        results = ordered_parallel_map(lambda job: (job, self._frame_bytes(specs[job[0]], job[1])), jobs,
                                       self._num_threads, window=2 * self._num_threads)
        pending = {}  # (s, t) → (bytes, problem) for the current job
        readable = {}  # record index → image readable (for shared images)
        visible_all = np.zeros(total, bool)
        first = np.zeros(len(specs), np.int64)
        progress = tqdm(total=total, desc=f"{self.name} {split}", unit=" frames", mininterval=1.0)
        for s, t, index, image_record, read in plan:
            spec = specs[s]
            if t == 0:
                first[s] = index
            data, problem = b"", None
            if read:
                if (s, t) not in pending:
                    (job_s, job_frames), loaded = next(results)
                    pending = {(job_s, f): r for f, r in zip(job_frames, loaded)}
                data, problem = pending.pop((s, t))
                readable[index] = problem is None
                if problem is not None:
                    self._prep_log.add(split, spec.paths[t] if spec.paths is not None else f"{spec.name}#{t}",
                                       problem)
            box = np.asarray(spec.boxes[t], np.float64)
            bad_box = box_problem(box)
            if bad_box is not None and t not in spec.reported_rows:  # parser already named missing lines
                self._prep_log.add(split, spec.box_file or spec.name, f"line {t + 1}: {bad_box}")
            has_image = readable.get(image_record, False)
            visible = bool(spec.flags[t]) and usable_box(box) and has_image
            visible_all[index] = visible
            yield index * stride, dict(
                image=data, image_record=image_record,
                box=np.where(np.isfinite(box), box, 0.0).astype(np.float32),
                visible=visible, sequence=s, frame=t)
            progress.update(1)
        progress.close()
        self._indices[split] = dict(
            names=np.array([spec.name for spec in specs], dtype=str),
            first=first,
            length=np.array([len(spec) for spec in specs], np.int64),
            visible=visible_all,
            is_video=np.array(self.IS_VIDEO))


def remove_stale_incomplete(builder: tfds.core.DatasetBuilder) -> list:
    """Delete ``incomplete.*`` folders a killed preparation of this builder/config left behind; returns them.

    TFDS removes its temporary folder when preparation fails with an exception, but not when the process is
    killed. Do not call this while another process prepares the same dataset.
    """
    parent = pathlib.Path(builder.data_dir).parent
    stale = sorted(p for p in parent.glob("incomplete.*") if p.is_dir()) if parent.is_dir() else []
    for path in stale:
        log.warning("removing %s, left by an interrupted preparation", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale


def prepare(builder: tfds.core.DatasetBuilder, root=None, *, clean_incomplete: bool = True) -> tfds.core.DatasetBuilder:
    """Prepare ``builder`` (array_record) from the dataset folder ``root`` (TFDS manual dir); never downloads.

    A finished preparation is reused; an interrupted one is started again (with ``clean_incomplete``, after
    deleting what a killed run left, see :func:`remove_stale_incomplete`). Returns the builder.
    """
    if clean_incomplete and not pathlib.Path(builder.data_dir).is_dir():
        remove_stale_incomplete(builder)
    config = tfds.download.DownloadConfig(manual_dir=None if root is None else os.fspath(root),
                                          try_download_gcs=False)
    fresh = not pathlib.Path(builder.data_dir).is_dir()
    builder.download_and_prepare(download_config=config, file_format="array_record")
    report = pathlib.Path(builder.data_dir) / REPORT_FILE
    problems = problem_count(report)
    if fresh and problems:
        log.warning("%s: %d problem(s) while preparing, see %s", builder.name, problems, report)
    return builder


def problem_count(report: pathlib.Path) -> int:
    """Lines after the header of a preparation report (0 if there is none)."""
    if not report.is_file():
        return 0
    return max(len([line for line in report.read_text().splitlines() if line.strip()]) - 1, 0)
