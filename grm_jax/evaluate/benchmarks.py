"""Tracking-benchmark loaders (docs/evaluation.md#benchmarks): frame paths + ground-truth boxes, nothing read at
load time.

``load_benchmark(name, root, sequence_list=None)`` returns a list of :class:`Sequence`, each with the frame paths
(checked to exist, never decoded), the ground truth as an (N, 4) float64 array of (x, y, w, h) pixels, the dataset tag
that selects the metric rules (docs/evaluation.md#metrics; ``'lasot'``, ``'uav'``, ``'avist'``, ...) and, where the
benchmark provides it, the per-frame visibility. The tracker is initialised from ``gt[0]``.

Differences from the official loaders, all deliberate:

* Sequence lists are derived from what is on disk instead of hard-coded tables: LaSOT from ``testing_set.txt`` in the
  root if present (otherwise every ``{class}/{class}-{n}`` folder outside the 15 extension classes -- which on a full
  LaSOT download includes the training videos, so ship ``testing_set.txt`` or pass ``sequence_list``), LaSOT-ext
  from the ``{class}/{class}-{n}`` folders of its 15 classes, UAV123 / NfS / AVisT from their annotation files,
  OTB from the ``{Seq}/img`` folders. ``sequence_list`` (a text file, one name per line, or a list) overrides.
* End frames come from the number of annotation rows; the few start frames that are not 1 (UAV123 sub-sequences,
  four OTB videos) are the small fact tables below.
* TNL2K works (the official loader passes an unsupported argument and has no path); its language description is
  kept in ``Sequence.language``.
* Annotation files are parsed strictly: every non-blank line must hold exactly four numbers. A malformed line, a
  NaN outside UAV123 or a missing file raises :class:`BenchmarkFormatError` naming the file (and the line).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from collections.abc import Sequence as SequenceABC

import numpy as np
from tqdm import tqdm

__all__ = [
    "BENCHMARKS",
    "BenchmarkFormatError",
    "LASOT_EXTENSION_CLASSES",
    "OTB_INIT_OMIT",
    "OTB_START_FRAMES",
    "Sequence",
    "UAV123_START_FRAMES",
    "load_benchmark",
    "parse_uav_config",
    "read_boxes",
    "read_flags",
    "read_sequence_list",
]


class BenchmarkFormatError(ValueError):
    """A benchmark folder does not have the layout its loader expects (missing file, malformed line)."""


@dataclasses.dataclass
class Sequence:
    """One benchmark video.

    ``frames``: image paths in tracking order (``frames[0]`` is the initialisation frame).
    ``gt``: (N, 4) float64 boxes (x, y, w, h) in pixels; GOT-10k test and TrackingNet have only the first row.
    ``dataset``: the metric-rule tag (docs/evaluation.md#metrics; ``'lasot'``, ``'otb'``, ``'uav'``, ``'nfs'``,
    ``'avist'``, ``'got10k'``, ``'trackingnet'``, ``'tnl2k'``).
    ``visible``: (N,) bool (``full_occlusion == 0 & out_of_view == 0``) for LaSOT and AVisT, else ``None``.
    ``language``: TNL2K's description (first line of ``language.txt``, stripped, lower-case), else ``None``.
    ``cover`` / ``resolution``: GOT-10k train/val only (what its toolkit scores with): the per-frame
    ``cover.label`` (0 = target not visible, 1–8 = visible fraction) and the image size (W, H) from
    ``meta_info.ini``; ``None`` elsewhere or where the files are absent.
    ``gt_file``: the annotation file ``gt`` was read from (for messages).
    """

    name: str
    frames: list[str]
    gt: np.ndarray
    dataset: str
    visible: np.ndarray | None = None
    language: str | None = None
    cover: np.ndarray | None = None
    resolution: tuple[int, int] | None = None
    gt_file: str | None = None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def init_box(self) -> np.ndarray:
        """The first ground-truth box, which initialises the tracker."""
        return self.gt[0]


# ----------------------------------------------------------------------------------------------------------------
# Facts about the benchmarks (not code): names and frame offsets that are not derivable from the folders.

#: The 15 classes of the LaSOT extension subset (150 videos, ``{class}-1`` .. ``{class}-10``).
LASOT_EXTENSION_CLASSES = (
    "atv", "badminton", "cosplay", "dancingshoe", "footbag", "frisbee", "jianzi", "lantern", "misc", "opossum",
    "paddle", "raccoon", "rhino", "skatingshoe", "wingsuit",
)

#: UAV123 sub-sequences cut from a longer video: annotation name -> first frame in ``data_seq/UAV123/{video}``
#: (video = the name without its ``_k`` suffix). From the UAV123 ``configSeqs``; every other sequence starts at 1.
UAV123_START_FRAMES = {
    "bird1_1": 1, "bird1_2": 775, "bird1_3": 1573,
    "car1_1": 1, "car1_2": 751, "car1_3": 1627,
    "car16_1": 1, "car16_2": 415,
    "car6_1": 1, "car6_2": 487, "car6_3": 1807, "car6_4": 2953, "car6_5": 3925,
    "car8_1": 1, "car8_2": 1357,
    "group1_1": 1, "group1_2": 1333, "group1_3": 2515, "group1_4": 3925,
    "group2_1": 1, "group2_2": 907, "group2_3": 1771,
    "group3_1": 1, "group3_2": 1567, "group3_3": 2827, "group3_4": 4369,
    "person12_1": 1, "person12_2": 601,
    "person14_1": 1, "person14_2": 847, "person14_3": 1813,
    "person17_1": 1, "person17_2": 1501,
    "person19_1": 1, "person19_2": 1243, "person19_3": 2791,
    "person2_1": 1, "person2_2": 1189,
    "person4_1": 1, "person4_2": 1501,
    "person5_1": 1, "person5_2": 877,
    "person7_1": 1, "person7_2": 1249,
    "person8_1": 1, "person8_2": 1075,
    "truck4_1": 1, "truck4_2": 577,
    "uav1_1": 1, "uav1_2": 1555, "uav1_3": 2473,
}

#: OTB-2015 videos whose annotation starts after frame 1 (first annotated frame number).
OTB_START_FRAMES = {"BlurCar1": 247, "BlurCar3": 3, "BlurCar4": 18, "David": 300}

#: OTB-2015 videos whose first annotation rows are skipped (``initOmit``): frames and GT both start later.
OTB_INIT_OMIT = {"Tiger1": 5}

#: Benchmark name -> metric-rule tag (``Sequence.dataset``).
#: What each loader looks for, for the message when it finds nothing.
LAYOUTS = {
    "lasot": "{class}/{class}-{n}/ folders with groundtruth.txt and img/, or testing_set.txt",
    "got10k": "{split}/list.txt naming {split}/{sequence}/ folders with groundtruth.txt and frames",
    "trackingnet": "TEST/anno/*.txt and TEST/frames/{sequence}/",
    "uav": "anno/UAV123/*.txt and data_seq/UAV123/{video}/ frames",
    "nfs": "anno/nfs_*.txt and sequences/{sequence}/ frames",
    "otb": "{sequence}/ folders with img/ and groundtruth_rect.txt",
    "avist": "anno/*.txt and sequences/{sequence}/ frames",
    "tnl2k": "{sequence}/ folders with groundtruth.txt and imgs/",
}

BENCHMARKS = {
    "lasot": "lasot",
    "lasot_ext": "lasot",
    "got10k_test": "got10k",
    "got10k_val": "got10k",
    "trackingnet": "trackingnet",
    "uav": "uav",
    "nfs": "nfs",
    "otb": "otb",
    "avist": "avist",
    "tnl2k": "tnl2k",
    "itb": "otb",
}

# Result-file name prefixes of the official loaders (docs/evaluation.md#result-files: ``uav_bike1``,
# ``nfs_Gymnastics``, ``otb_Basketball``).
_PREFIX = {"uav": "uav_", "nfs": "nfs_", "otb": "otb_"}


# ----------------------------------------------------------------------------------------------------------------
# Annotation parsing


def _require_file(path: str, what: str = "file") -> None:
    if not os.path.isfile(path):
        raise BenchmarkFormatError(f"{path}: {what} not found")


def _parse_rows(path: str, delimiter: str | None, allow_nan: bool) -> np.ndarray:
    """Four numbers per non-blank line split on ``delimiter`` (``None``: any whitespace); raise at the first bad one."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            fields = text.split() if delimiter is None else text.split(delimiter)
            shown = "whitespace" if delimiter is None else repr(delimiter)
            if len(fields) != 4:
                raise BenchmarkFormatError(
                    f"{path}: line {number}: expected 4 values separated by {shown}, got {len(fields)}: {text!r}")
            try:
                values = [float(field) for field in fields]
            except ValueError:
                raise BenchmarkFormatError(
                    f"{path}: line {number}: not a number in {text!r} (separator {shown})") from None
            if any(np.isinf(values)) or (not allow_nan and any(np.isnan(values))):
                raise BenchmarkFormatError(f"{path}: line {number}: non-finite value in {text!r}")
            rows.append(values)
    if not rows:
        raise BenchmarkFormatError(f"{path}: no annotation rows")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def read_boxes(path: str, delimiters: str | None | tuple = ",", allow_nan: bool = False) -> np.ndarray:
    """(N, 4) float64 boxes from a text file, one ``x<d>y<d>w<d>h`` row per non-blank line.

    ``delimiters`` is one separator or a tuple tried in order **for the whole file**, like the official
    ``load_text(delimiter=(',', None))``: comma (LaSOT, GOT-10k, TrackingNet, UAV123, TNL2K), tab (NfS), a single
    space (AVisT: two spaces make an empty field, an error), ``(',', None)`` (OTB, ITB: comma else whitespace),
    ``('\\t', ',')`` (result files). NaN is accepted only with ``allow_nan`` (UAV123 annotations). When no separator
    fits, the error of the one that parsed furthest into the file is raised (it names the file and line).
    """
    _require_file(path, "annotation file")
    if not isinstance(delimiters, tuple):
        delimiters = (delimiters,)
    errors = []
    for delimiter in delimiters:
        try:
            return _parse_rows(path, delimiter, allow_nan)
        except BenchmarkFormatError as error:
            match = re.search(r": line (\d+):", str(error))
            errors.append((int(match.group(1)) if match else 0, error))
    furthest = max(line for line, _ in errors)
    raise next(error for line, error in errors if line == furthest)


def read_flags(path: str, length: int) -> np.ndarray:
    """(length,) float64 per-frame flags (LaSOT / AVisT occlusion, out-of-view): comma-separated, any line layout.

    The file must hold exactly ``length`` values (one per annotation row).
    """
    _require_file(path, "flag file")
    values = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            for field in line.strip().split(","):
                field = field.strip()
                if not field:
                    continue
                try:
                    values.append(float(field))
                except ValueError:
                    raise BenchmarkFormatError(f"{path}: line {number}: not a number: {field!r}") from None
    if len(values) != length:
        raise BenchmarkFormatError(f"{path}: {len(values)} flags for {length} annotated frames")
    return np.asarray(values, dtype=np.float64)


def read_sequence_list(source: str | os.PathLike | Iterable[str]) -> list[str]:
    """Sequence names from a text file (one per line; blank lines and ``#`` comments skipped) or an iterable."""
    if isinstance(source, (str, os.PathLike)):
        _require_file(os.fspath(source), "sequence list")
        with open(source, encoding="utf-8") as f:
            lines = [line.split("#", 1)[0].strip() for line in f]
        return [line for line in lines if line]
    return [str(name) for name in source]


def parse_uav_config(text: str) -> dict[str, tuple[str, int]]:
    """UAV123 ``configSeqs.m``-style text -> ``{name: (video folder, startFrame)}``.

    Each ``struct('name','bird1_2','path','...\\data_seq\\UAV123\\bird1\\','startFrame',775, ...)`` entry gives the
    sub-sequence's video (last component of ``path``) and first frame.
    """
    table = {}
    for chunk in re.split(r"struct\s*\(", text)[1:]:
        name = re.search(r"'name'\s*,\s*'([^']+)'", chunk)
        start = re.search(r"'startFrame'\s*,\s*(\d+)", chunk)
        if not (name and start):
            continue
        path = re.search(r"'path'\s*,\s*'([^']+)'", chunk)
        video = re.split(r"[\\/]", path.group(1).rstrip("\\/"))[-1] if path else re.sub(r"_\d+$", "", name.group(1))
        table[name.group(1)] = (video, int(start.group(1)))
    return table


# ----------------------------------------------------------------------------------------------------------------
# Frames


def _check_frames(frames: list[str], sequence: str) -> None:
    """Raise naming the first frame file that does not exist (an ``os.path.isfile`` per frame, no decoding)."""
    for index, frame in enumerate(frames):
        if not os.path.isfile(frame):
            raise BenchmarkFormatError(
                f"{frame}: frame file not found (frame {index + 1} of {len(frames)} of sequence {sequence})")


def _numbered_frames(folder: str, first: int, count: int, width: int, prefix: str = "", ext: str = "jpg"):
    """``{folder}/{prefix}{n:0width}.{ext}`` for n = first .. first + count - 1."""
    return [os.path.join(folder, f"{prefix}{n:0{width}d}.{ext}") for n in range(first, first + count)]


def _listed_frames(folder: str, sequence: str) -> list[str]:
    """``*.jpg`` in ``folder`` sorted by integer file name (GOT-10k, TrackingNet)."""
    if not os.path.isdir(folder):
        raise BenchmarkFormatError(f"{folder}: frame folder not found (sequence {sequence})")
    names = [name for name in os.listdir(folder) if name.endswith(".jpg")]
    try:
        names.sort(key=lambda name: int(name[:-4]))
    except ValueError:
        bad = next(name for name in names if not name[:-4].isdigit())
        raise BenchmarkFormatError(f"{os.path.join(folder, bad)}: frame name is not an integer") from None
    if not names:
        raise BenchmarkFormatError(f"{folder}: no .jpg frames (sequence {sequence})")
    return [os.path.join(folder, name) for name in names]


def _visible(occlusion_path: str, out_of_view_path: str, length: int) -> np.ndarray:
    """visible = full_occlusion == 0 & out_of_view == 0."""
    return (read_flags(occlusion_path, length) == 0) & (read_flags(out_of_view_path, length) == 0)


def _subdirs(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name)))


def _strip_prefix(name: str, benchmark: str) -> str:
    prefix = _PREFIX.get(benchmark, "")
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


# ----------------------------------------------------------------------------------------------------------------
# LaSOT / LaSOT extension: {class}/{class}-{n}/img/%08d.jpg, groundtruth.txt, full_occlusion.txt, out_of_view.txt


def _lasot_folders(root: str, extension: bool) -> list[str]:
    names = []
    for cls in _subdirs(root):
        if (cls in LASOT_EXTENSION_CLASSES) != extension:
            continue
        for video in _subdirs(os.path.join(root, cls)):
            match = re.fullmatch(re.escape(cls) + r"-(\d+)", video)
            if match:
                names.append((cls, int(match.group(1)), video))
    return [video for _, _, video in sorted(names)]


def _lasot_names(root: str) -> list[str]:
    """``testing_set.txt`` in the root if present, else every non-extension ``{class}/{class}-{n}`` folder."""
    listing = os.path.join(root, "testing_set.txt")
    if os.path.isfile(listing):
        return read_sequence_list(listing)
    return _lasot_folders(root, extension=False)


def _lasot_ext_names(root: str) -> list[str]:
    """The ``{class}/{class}-{n}`` folders of the 15 extension classes (same root as LaSOT)."""
    return _lasot_folders(root, extension=True)


def _lasot_sequence(root: str, name: str) -> Sequence:
    """GT comma-separated; frames ``img/%08d.jpg`` 1..#rows; visible from the two flag files; tag ``lasot``."""
    folder = os.path.join(root, name.rsplit("-", 1)[0], name)
    gt_file = os.path.join(folder, "groundtruth.txt")
    gt = read_boxes(gt_file, ",")
    visible = _visible(os.path.join(folder, "full_occlusion.txt"), os.path.join(folder, "out_of_view.txt"), len(gt))
    frames = _numbered_frames(os.path.join(folder, "img"), 1, len(gt), 8)
    return Sequence(name, frames, gt, "lasot", visible=visible, gt_file=gt_file)


# ----------------------------------------------------------------------------------------------------------------
# GOT-10k: {split}/list.txt, {split}/{seq}/groundtruth.txt, {split}/{seq}/*.jpg; TrackingNet: TEST/anno, TEST/frames


def _split_dir(root: str, split: str, marker: str) -> str:
    """``root/split`` -- or ``root`` itself when it already is that split (it holds ``marker``)."""
    candidate = os.path.join(root, split)
    if not os.path.exists(os.path.join(candidate, marker)) and os.path.exists(os.path.join(root, marker)):
        return root
    return candidate


def _got10k_names(root: str, split: str) -> list[str]:
    """Names from ``{split}/list.txt``."""
    return read_sequence_list(os.path.join(_split_dir(root, split, "list.txt"), "list.txt"))


def _got10k_sequence(root: str, split: str, name: str) -> Sequence:
    """GT comma-separated (test: first frame only); frames ``*.jpg`` sorted by integer name; tag ``got10k``;
    ``cover.label`` and the ``meta_info.ini`` resolution where present (val, train)."""
    folder = os.path.join(_split_dir(root, split, "list.txt"), name)
    gt_file = os.path.join(folder, "groundtruth.txt")
    gt = read_boxes(gt_file, ",")
    cover_path = os.path.join(folder, "cover.label")
    cover = _read_cover(cover_path, len(gt)) if os.path.isfile(cover_path) else None
    meta_path = os.path.join(folder, "meta_info.ini")
    resolution = _read_resolution(meta_path) if os.path.isfile(meta_path) else None
    return Sequence(name, _listed_frames(folder, name), gt, "got10k", cover=cover, resolution=resolution,
                    gt_file=gt_file)


def _read_cover(path: str, length: int) -> np.ndarray:
    """GOT-10k ``cover.label``: one integer 0–8 per frame."""
    try:
        cover = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as err:
        raise BenchmarkFormatError(f"{path}: not one number per line ({err})") from err
    if len(cover) != length:
        raise BenchmarkFormatError(f"{path}: {len(cover)} labels for {length} annotated frames")
    return cover


def _read_resolution(path: str) -> tuple[int, int] | None:
    """``resolution: (W, H)`` from a GOT-10k ``meta_info.ini`` (``key: value`` lines after a header line);
    ``None`` when it has no such line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f.read().strip().splitlines()[1:]:
            key, _, value = line.partition(": ")
            if key.strip() == "resolution":
                numbers = value.strip().strip("()").split(",")
                try:
                    width, height = (int(float(v)) for v in numbers)
                except ValueError as err:
                    raise BenchmarkFormatError(f"{path}: resolution {value.strip()!r} is not (W, H)") from err
                return width, height
    return None


def _trackingnet_names(root: str) -> list[str]:
    """Every ``TEST/anno/*.txt``."""
    anno = os.path.join(_split_dir(root, "TEST", "anno"), "anno")
    if not os.path.isdir(anno):
        raise BenchmarkFormatError(f"{anno}: annotation folder not found")
    return sorted(name[:-4] for name in os.listdir(anno) if name.endswith(".txt"))


def _trackingnet_sequence(root: str, name: str) -> Sequence:
    """GT ``TEST/anno/{seq}.txt`` (first frame only), frames ``TEST/frames/{seq}/*.jpg`` by integer name."""
    split = _split_dir(root, "TEST", "anno")
    gt_file = os.path.join(split, "anno", f"{name}.txt")
    gt = read_boxes(gt_file, ",")
    frames = _listed_frames(os.path.join(split, "frames", name), name)
    return Sequence(name, frames, gt, "trackingnet", gt_file=gt_file)


# ----------------------------------------------------------------------------------------------------------------
# UAV123: anno/UAV123/{sub}.txt, data_seq/UAV123/{video}/%06d.jpg from the sub-sequence's start frame


def _uav_names(root: str) -> list[str]:
    """Every ``anno/UAV123/*.txt``."""
    anno = os.path.join(root, "anno", "UAV123")
    if not os.path.isdir(anno):
        raise BenchmarkFormatError(f"{anno}: annotation folder not found")
    return sorted(name[:-4] for name in os.listdir(anno) if name.endswith(".txt"))


def _uav_start(root: str, sub: str, config: Mapping) -> tuple[str, int]:
    """(video folder, first frame): the user's config, then the shipped table, then a whole video from frame 1."""
    if sub in config:
        entry = config[sub]
        return entry if isinstance(entry, tuple) else (re.sub(r"_\d+$", "", sub), int(entry))
    if sub in UAV123_START_FRAMES:
        return re.sub(r"_\d+$", "", sub), UAV123_START_FRAMES[sub]
    if os.path.isdir(os.path.join(root, "data_seq", "UAV123", sub)):
        return sub, 1
    raise BenchmarkFormatError(
        f"{os.path.join(root, 'data_seq', 'UAV123', sub)}: no such video folder and no start frame known for "
        f"sub-sequence {sub!r} (pass uav_config)")


def _uav_sequence(root: str, sub: str, config: Mapping) -> Sequence:
    """GT comma-separated, NaN rows allowed; frames start .. start + #rows - 1 (``%06d.jpg``); tag ``uav``."""
    gt_file = os.path.join(root, "anno", "UAV123", f"{sub}.txt")
    gt = read_boxes(gt_file, ",", allow_nan=True)
    video, start = _uav_start(root, sub, config)
    frames = _numbered_frames(os.path.join(root, "data_seq", "UAV123", video), start, len(gt), 6)
    return Sequence(f"uav_{sub}", frames, gt, "uav", gt_file=gt_file)


# ----------------------------------------------------------------------------------------------------------------
# NfS (30 fps): anno/nfs_{X}.txt (tab-separated), sequences/{X}/%05d.jpg


def _nfs_names(root: str) -> list[str]:
    """Every ``anno/nfs_*.txt``."""
    anno = os.path.join(root, "anno")
    if not os.path.isdir(anno):
        raise BenchmarkFormatError(f"{anno}: annotation folder not found")
    return sorted(name[4:-4] for name in os.listdir(anno) if name.startswith("nfs_") and name.endswith(".txt"))


def _nfs_sequence(root: str, name: str) -> Sequence:
    """GT **tab**-separated; frames ``sequences/{X}/%05d.jpg`` 1..#rows; name ``nfs_{X}``; tag ``nfs``."""
    gt_file = os.path.join(root, "anno", f"nfs_{name}.txt")
    gt = read_boxes(gt_file, "\t")
    frames = _numbered_frames(os.path.join(root, "sequences", name), 1, len(gt), 5)
    return Sequence(f"nfs_{name}", frames, gt, "nfs", gt_file=gt_file)


# ----------------------------------------------------------------------------------------------------------------
# OTB-2015: {Seq}/img/%04d.jpg, {Seq}/groundtruth_rect.txt (Jogging, Skating2, Human4: groundtruth_rect.{k}.txt)


def _otb_names(root: str) -> list[str]:
    """Every ``{Seq}`` with an ``img/`` folder: ``Seq`` for ``groundtruth_rect.txt``, ``Seq_k`` for ``.{k}.txt``."""
    names = []
    for video in _subdirs(root):
        folder = os.path.join(root, video)
        if not os.path.isdir(os.path.join(folder, "img")):
            continue
        if os.path.isfile(os.path.join(folder, "groundtruth_rect.txt")):
            names.append(video)
            continue
        for file in sorted(os.listdir(folder)):
            match = re.fullmatch(r"groundtruth_rect\.(\d+)\.txt", file)
            if match:
                names.append(f"{video}_{match.group(1)}")
    return names


def _otb_sequence(root: str, key: str) -> Sequence:
    """GT comma-else-whitespace; frames from the start frame (table, else 1) for #rows, ``initOmit`` rows skipped.

    The zero-padding width is read from the first file name in ``img/`` (4 digits; Board: 5). Name ``otb_{key}``,
    tag ``otb``.
    """
    video, anno = key, "groundtruth_rect.txt"
    match = re.fullmatch(r"(.+)_(\d+)", key)
    if match and not os.path.isdir(os.path.join(root, key)):
        video, anno = match.group(1), f"groundtruth_rect.{match.group(2)}.txt"
    gt_file = os.path.join(root, video, anno)
    gt = read_boxes(gt_file, (",", None))
    image_dir = os.path.join(root, video, "img")
    if not os.path.isdir(image_dir):
        raise BenchmarkFormatError(f"{image_dir}: frame folder not found (sequence {key})")
    images = sorted(name for name in os.listdir(image_dir) if name.endswith(".jpg"))
    if not images:
        raise BenchmarkFormatError(f"{image_dir}: no .jpg frames (sequence {key})")
    width = len(images[0]) - 4
    start, omit = OTB_START_FRAMES.get(video, 1), OTB_INIT_OMIT.get(video, 0)
    frames = _numbered_frames(image_dir, start, len(gt), width)[omit:]
    return Sequence(f"otb_{key}", frames, gt[omit:], "otb", gt_file=gt_file)


# ----------------------------------------------------------------------------------------------------------------
# AVisT: anno/{seq}.txt (single-space), sequences/{seq}/img_%05d.jpg, full_occlusion/, out_of_view/


def _avist_names(root: str) -> list[str]:
    """Every ``anno/*.txt``."""
    anno = os.path.join(root, "anno")
    if not os.path.isdir(anno):
        raise BenchmarkFormatError(f"{anno}: annotation folder not found")
    return sorted(name[:-4] for name in os.listdir(anno) if name.endswith(".txt"))


def _avist_sequence(root: str, name: str) -> Sequence:
    """GT split on a **single space**; flags comma-separated; frames ``img_%05d.jpg`` 1..#rows; tag ``avist``."""
    gt_file = os.path.join(root, "anno", f"{name}.txt")
    gt = read_boxes(gt_file, " ")
    visible = _visible(os.path.join(root, "full_occlusion", f"{name}_full_occlusion.txt"),
                       os.path.join(root, "out_of_view", f"{name}_out_of_view.txt"), len(gt))
    frames = _numbered_frames(os.path.join(root, "sequences", name), 1, len(gt), 5, prefix="img_")
    return Sequence(name, frames, gt, "avist", visible=visible, gt_file=gt_file)


# ----------------------------------------------------------------------------------------------------------------
# TNL2K: {seq}/groundtruth.txt, {seq}/language.txt, {seq}/imgs/* (lexicographic)


def _tnl2k_names(root: str) -> list[str]:
    """Every sub-directory of the root."""
    return _subdirs(root)


def _tnl2k_sequence(root: str, name: str) -> Sequence:
    """GT comma-separated; frames: every file in ``imgs/`` (hidden files skipped) in lexicographic order.

    ``language`` is the first line of ``language.txt`` stripped and lower-cased (``None`` if the file is absent).
    """
    folder = os.path.join(root, name)
    gt_file = os.path.join(folder, "groundtruth.txt")
    gt = read_boxes(gt_file, ",")
    image_dir = os.path.join(folder, "imgs")
    if not os.path.isdir(image_dir):
        raise BenchmarkFormatError(f"{image_dir}: frame folder not found (sequence {name})")
    frames = [os.path.join(image_dir, f) for f in sorted(os.listdir(image_dir)) if not f.startswith(".")]
    language = None
    language_path = os.path.join(folder, "language.txt")
    if os.path.isfile(language_path):
        with open(language_path, encoding="utf-8", errors="replace") as f:
            language = f.readline().strip().lower()
    return Sequence(name, frames, gt, "tnl2k", language=language, gt_file=gt_file)


# ----------------------------------------------------------------------------------------------------------------
# ITB: {scene}/{video}/*.jpg + groundtruth.txt


def _itb_videos(root: str) -> dict[str, str]:
    """``{video: scene}`` for every ``{scene}/{video}`` folder (scenes whose name contains a dot are skipped)."""
    videos = {}
    for scene in sorted(os.listdir(root)):
        if "." in scene or not os.path.isdir(os.path.join(root, scene)):
            continue
        for video in _subdirs(os.path.join(root, scene)):
            videos[video] = scene
    return videos


def _itb_sequence(root: str, scene: str, name: str) -> Sequence:
    """Frames ``%0{nz}d.jpg`` 1..#jpgs (nz = length of the shortest, then first, jpg name); GT comma-else-whitespace.

    The jpgs are counted in the whole ``{scene}/{video}`` tree as the official walk does; tag ``otb``.
    """
    folder = os.path.join(root, scene, name)
    jpgs = sorted((f for _, _, files in os.walk(folder) for f in files if f.endswith(".jpg")),
                  key=lambda f: (len(f), f))
    if not jpgs:
        raise BenchmarkFormatError(f"{folder}: no .jpg frames (sequence {name})")
    gt_file = os.path.join(folder, "groundtruth.txt")
    gt = read_boxes(gt_file, (",", None))
    frames = _numbered_frames(folder, 1, len(jpgs), len(jpgs[0]) - 4)
    return Sequence(name, frames, gt, "otb", gt_file=gt_file)


# ----------------------------------------------------------------------------------------------------------------


def _builders(name: str, root: str, uav_config: Mapping):
    """(list of sequence keys, key -> Sequence) for a benchmark."""
    if name == "lasot":
        return _lasot_names, lambda key: _lasot_sequence(root, key)
    if name == "lasot_ext":
        return _lasot_ext_names, lambda key: _lasot_sequence(root, key)
    if name in ("got10k_test", "got10k_val"):
        split = name.split("_")[1]
        return (lambda r: _got10k_names(r, split)), lambda key: _got10k_sequence(root, split, key)
    if name == "trackingnet":
        return _trackingnet_names, lambda key: _trackingnet_sequence(root, key)
    if name == "uav":
        return _uav_names, lambda key: _uav_sequence(root, key, uav_config)
    if name == "nfs":
        return _nfs_names, lambda key: _nfs_sequence(root, key)
    if name == "otb":
        return _otb_names, lambda key: _otb_sequence(root, key)
    if name == "avist":
        return _avist_names, lambda key: _avist_sequence(root, key)
    if name == "tnl2k":
        return _tnl2k_names, lambda key: _tnl2k_sequence(root, key)
    if name == "itb":
        videos = {}

        def names(r):
            videos.update(_itb_videos(r))
            return list(videos)

        def build(key):
            if not videos:
                videos.update(_itb_videos(root))
            if key not in videos:
                raise BenchmarkFormatError(f"{root}: no ITB video folder {{scene}}/{key}")
            return _itb_sequence(root, videos[key], key)

        return names, build
    raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")


def load_benchmark(name: str, root: str | os.PathLike, sequence_list=None, *, check_frames: bool = True,
                   uav_config: str | os.PathLike | Mapping | None = None) -> list[Sequence]:
    """Load benchmark ``name`` (one of :data:`BENCHMARKS`) from its root folder (layouts in the module docstring).

    ``sequence_list``: a text file (one name per line) or a list of names that replaces the derived list; names
    may carry the result-file prefix (``uav_bike1`` or ``bike1``, ``nfs_bee`` or ``bee``, ``otb_Tiger1`` or
    ``Tiger1``). ``check_frames``: check that every frame file exists (``os.path.isfile``; nothing is decoded) and
    raise naming the first missing one. ``uav_config``: extra UAV123 start frames, a ``configSeqs.m``-style file
    or a mapping ``{sub-sequence: start}`` / ``{sub-sequence: (video, start)}``; it takes precedence over
    :data:`UAV123_START_FRAMES`.
    """
    root = os.fspath(root)
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")
    if not os.path.isdir(root):
        raise BenchmarkFormatError(f"{root}: benchmark root folder not found")
    if isinstance(uav_config, (str, os.PathLike)):
        _require_file(os.fspath(uav_config), "UAV123 config")
        with open(uav_config, encoding="utf-8", errors="replace") as f:
            uav_config = parse_uav_config(f.read())
    names, build = _builders(name, root, dict(uav_config or {}))
    keys = names(root) if sequence_list is None else [_strip_prefix(k, name) for k in read_sequence_list(sequence_list)]
    if not keys:
        raise BenchmarkFormatError(f"no sequences found in {root} for {name} (expected {LAYOUTS[BENCHMARKS[name]]})")
    sequences = []
    progress = _progress(keys, f"loading {name}")
    for key in progress:
        sequence = build(key)
        if check_frames:
            _check_frames(sequence.frames, sequence.name)
        sequences.append(sequence)
    return sequences


def _progress(items: SequenceABC, description: str):
    """tqdm over long lists only (a full benchmark: hundreds of sequences, each an isfile per frame)."""
    if len(items) < 50:
        return items
    return tqdm(items, desc=description, leave=False)
