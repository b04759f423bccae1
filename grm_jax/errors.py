"""Errors shared by modules that must not import each other, or that :mod:`grm_jax.cli` reports in one line without
importing JAX (a leaf: imports nothing of grm_jax)."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or written: an Orbax directory that is missing, empty or cannot be restored
    (:mod:`grm_jax.checkpoints`), or a PyTorch file that is damaged or unsafe (:mod:`grm_jax.convert.pth_io`, which
    raises subclasses). The message names the path."""


class StaleResultsError(RuntimeError):
    """The results folder holds results of another run (the message says what differs and what to do); raised by
    :mod:`grm_jax.evaluate.provenance`."""
