"""Training input pipeline throughput: samples/s for 0 (in-process), 1, 2 and 4 grain worker processes.

    python benchmarks/input_pipeline.py [--workers 0,1,2,4] [--batches 20] [--batch_size 16]

Two prepared datasets, both built here in a temporary folder (or ``--data_dir``):

* ``synthetic``: the ``synthetic_tracking`` builder (``--sequences`` sequences of 50–300 frames, 320×240);
* ``got10k``: the same kind of sequences written as JPEG files in the GOT-10k layout (``list.txt``,
  ``%08d.jpg``, ``groundtruth.txt``, ``absence.label``, ``cover.label``), then prepared with the ``got10k`` builder.

Each run reads through ``DatasetSource`` (array_record), samples pairs, crops and augments at the official sizes
(template 128, search 256, unless changed) and batches for one device. The first ``--warmup`` batches (worker start,
first reads) are not timed. Prints one table row per (dataset, workers).
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

import cv2

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository root, for grm_jax

from absl import flags  # noqa: E402

from grm_jax import cli  # noqa: E402


def write_got10k_folder(root: pathlib.Path, num_sequences: int, seed: int) -> pathlib.Path:
    """Synthetic sequences as a GOT-10k ``train/`` folder; returns it."""
    from grm_jax.data import synthetic

    train = root / "got10k_layout" / "train"
    if (train / "list.txt").exists():
        return train
    names = []
    for k in range(num_sequences):
        s = synthetic.split_sequence_seed(seed, "train", k)
        frames, boxes, visible = synthetic.generate_sequence(s, synthetic.sequence_length(s, 50, 300))
        name = f"GOT-10k_Train_{k + 1:06d}"
        folder = train / name
        folder.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(frames):
            cv2.imwrite(str(folder / f"{t + 1:08d}.jpg"), frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        (folder / "groundtruth.txt").write_text("".join(",".join(f"{v:.4f}" for v in b) + "\n" for b in boxes))
        (folder / "absence.label").write_text("".join(f"{int(not v)}\n" for v in visible))
        (folder / "cover.label").write_text("".join("8\n" for _ in visible))
        names.append(name)
    (train / "list.txt").write_text("".join(n + "\n" for n in names))
    return train


def measure(config, source, workers: int, batches: int, warmup: int, threads: int) -> float:
    """Samples per second over ``batches`` batches after ``warmup`` untimed ones."""
    from grm_jax.data.pipeline import make_train_batches

    iterator = make_train_batches(config, [source], 0, num_devices=1, process_index=0, process_count=1,
                                  num_workers=workers, num_threads=threads, buffer_size=2)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    if hasattr(iterator, "close"):
        iterator.close()
    return batches * config.train.batch_size / elapsed


def define_flags(fv: flags.FlagValues) -> None:
    """The command line's flags."""
    flags.DEFINE_string("workers", "0,1,2,4", "worker process counts to try, comma-separated", flag_values=fv)
    flags.DEFINE_integer("batches", 20, "timed batches", flag_values=fv)
    flags.DEFINE_integer("warmup", 4, "untimed batches first", flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "samples per batch", flag_values=fv)
    flags.DEFINE_integer("threads", 1, "threads per process computing batches", flag_values=fv)
    flags.DEFINE_integer("template_size", 128, "template crop size", flag_values=fv)
    flags.DEFINE_integer("search_size", 256, "search crop size", flag_values=fv)
    flags.DEFINE_integer("sequences", 12, "sequences per dataset", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "where to build the datasets (default: a temp folder)", flag_values=fv)


def run_benchmark(fv: flags.FlagValues, argv: list[str]) -> None:
    """Builds the two datasets and prints samples/s per dataset and worker count."""
    cli.no_arguments(argv)
    args = cli.namespace(fv)

    from grm_jax.config import base_config
    from grm_jax.data.datasets import make_builder, prepare, prepare_dataset, synthetic_config
    from grm_jax.data.source import DatasetSource

    config = base_config()
    config.model.template_size = args.template_size
    config.model.search_size = args.search_size
    config.train.batch_size = args.batch_size
    config.data.datasets = ("BENCH",)
    config.data.ratios = (1.0,)

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(args.data_dir or tmp)
        data_dir = root / "prepared"
        print(f"preparing datasets in {root} ...", flush=True)
        synthetic = prepare(make_builder("synthetic_tracking", data_dir,
                                         config=synthetic_config(args.sequences, 1, seed=0)))
        got10k = prepare_dataset("got10k/full", write_got10k_folder(root, args.sequences, seed=1), data_dir)
        sources = {"synthetic": DatasetSource(synthetic.data_dir), "got10k": DatasetSource(got10k.data_dir)}

        print(f"\nbatch {args.batch_size}, template {args.template_size}, search {args.search_size}, "
              f"{args.threads} thread(s) per process, {os.cpu_count()} CPUs; {args.batches} timed batches\n")
        print("| dataset | workers | samples/s |\n|---|---|---|")
        for name, source in sources.items():
            for workers in (int(w) for w in args.workers.split(",")):
                rate = measure(config, source, workers, args.batches, args.warmup, args.threads)
                print(f"| {name} | {workers} | {rate:.1f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/input_pipeline.py [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run_benchmark, __doc__)


if __name__ == "__main__":
    sys.exit(main())
