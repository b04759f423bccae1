"""TFDS builders of the training datasets (prepared once to array_record; read with ``tfds.data_source``).

Importing this package registers the builders ``synthetic_tracking``, ``got10k``, ``lasot``, ``trackingnet`` and
``coco17``. ``prepare_dataset(name, root, data_dir)`` prepares one from its folder (TFDS manual dir; nothing is ever
downloaded). The layout of the prepared data is described in :mod:`grm_jax.data.datasets.common`.

``CONFIG_DATASETS`` maps the official ``DATASETS_NAME`` values used in ``config.data.datasets`` to
``builder/config`` names.
"""

from __future__ import annotations

from absl import logging as absl_logging

from grm_jax.data.datasets.coco17 import Coco17
from grm_jax.data.datasets.common import TrackingBuilder, prepare
from grm_jax.data.datasets.got10k import Got10k
from grm_jax.data.datasets.lasot import Lasot
from grm_jax.data.datasets.synthetic_tracking import (
    SyntheticConfig,
    SyntheticTracking,
    synthetic_builder_config,
    synthetic_config,
)
from grm_jax.data.datasets.trackingnet import Trackingnet, TrackingNetConfig
from grm_jax.data.records import INDEX_FILE, REPORT_FILE

CONFIG_DATASETS = {
    "LASOT": "lasot",
    "GOT10K_vot_train": "got10k/vot",
    "GOT10K_train": "got10k/full",
    "COCO17": "coco17",
    "TRACKINGNET": "trackingnet/all",
    "SYNTHETIC": "synthetic_tracking/default",
    "SYNTHETIC_SMALL": "synthetic_tracking/small",
}


BUILDERS = {cls.name: cls for cls in (Coco17, Got10k, Lasot, SyntheticTracking, Trackingnet)}


def make_builder(name: str, data_dir, **kwargs) -> TrackingBuilder:
    """The builder for a ``builder[/config]`` name or a ``CONFIG_DATASETS`` key, writing array_record.

    Looked up in :data:`BUILDERS` directly (``tfds.builder`` would consult TFDS's community index on the network).
    ``config`` in ``kwargs`` (a name or a BuilderConfig) overrides the one in ``name``.
    """
    name = CONFIG_DATASETS.get(name, name)
    builder_name, _, config = name.partition("/")
    if builder_name not in BUILDERS:
        raise KeyError(f"unknown dataset {name!r}; builders: {sorted(BUILDERS)}, config names: "
                       f"{sorted(CONFIG_DATASETS)}")
    if config:
        kwargs.setdefault("config", config)
    _quiet_custom_config_warning()
    return BUILDERS[builder_name](data_dir=str(data_dir), file_format="array_record", **kwargs)


def _custom_config_notice(record) -> bool:
    return "Using custom data configuration" not in record.getMessage()


def _quiet_custom_config_warning() -> None:
    """TFDS warns 'Using custom data configuration ...' for every builder made from a config object, which is how
    every builder here is made; the filter drops that one message from absl's logger (installed once)."""
    logger = absl_logging.get_absl_logger()
    if _custom_config_notice not in logger.filters:
        logger.addFilter(_custom_config_notice)


def prepare_dataset(name: str, root, data_dir, **kwargs) -> TrackingBuilder:
    """Prepare ``name`` from the dataset folder ``root`` into ``data_dir`` (reused if already prepared)."""
    return prepare(make_builder(name, data_dir, **kwargs), root)


__all__ = ["BUILDERS", "CONFIG_DATASETS", "Coco17", "Got10k", "INDEX_FILE", "Lasot", "REPORT_FILE", "SyntheticConfig",
           "SyntheticTracking", "TrackingBuilder", "Trackingnet", "TrackingNetConfig", "make_builder", "prepare",
           "prepare_dataset", "synthetic_builder_config", "synthetic_config"]
