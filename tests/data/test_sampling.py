"""Tests of grm_jax/data/sampling.py: the official causal sampler's rules (docs/training.md#pair-sampling)."""

from __future__ import annotations

import numpy as np
import pytest

from grm_jax.data import sampling
from grm_jax.data.source import MemorySource


def fake_source(visibles, is_video=True):
    """A MemorySource with 1x1 frames and the given visibility masks (frames are never read here)."""
    sequences = [(np.zeros((len(v), 1, 1, 3), np.uint8), np.ones((len(v), 4)), np.asarray(v, bool)) for v in visibles]
    return MemorySource(sequences, is_video=is_video)


def test_choose_dataset_follows_ratios():
    rng = np.random.default_rng(0)
    draws = np.array([sampling.choose_dataset(rng, (1.0, 3.0, 0.0)) for _ in range(4000)])
    assert not np.any(draws == 2)  # ratio 0: never
    # P(1) = 0.75; binomial σ = sqrt(0.75·0.25/4000) ≈ 0.007, so ±0.03 is over 4σ.
    assert abs(np.mean(draws == 1) - 0.75) < 0.03


@pytest.mark.parametrize("ratios", [(), (0.0, 0.0), (1.0, -1.0)])
def test_choose_dataset_rejects_bad_ratios(ratios):
    with pytest.raises(ValueError):
        sampling.choose_dataset(np.random.default_rng(0), ratios)


def test_sample_visible_range_and_cap():
    visible = np.array([1, 0, 1, 1, 0, 1], bool)
    rng = np.random.default_rng(1)
    picks = {sampling.sample_visible(rng, visible, 1, 4) for _ in range(200)}
    assert picks == {2, 3}  # [1, 4) ∩ visible; end exclusive
    picks = {sampling.sample_visible(rng, visible, -5, 100) for _ in range(200)}
    assert picks == {0, 2, 3, 5}  # bounds clipped to [0, len)
    assert sampling.sample_visible(rng, visible, 4, 5) is None
    assert sampling.sample_visible(rng, visible, 3, 3) is None


def test_sequence_filter_for_video_sources():
    """Only the sequence with > 4 visible frames and length ≥ 20 is ever chosen."""
    few_visible = np.zeros(30, bool)
    few_visible[:4] = True
    short = np.ones(19, bool)
    good = np.zeros(20, bool)
    good[[0, 5, 9, 12, 19]] = True
    source = fake_source([few_visible, short, good])
    rng = np.random.default_rng(2)
    assert {sampling.choose_sequence(rng, source) for _ in range(100)} == {2}


def test_image_source_takes_any_sequence_and_frame_zero_twice():
    source = fake_source([[False], [True], [True]], is_video=False)
    rng = np.random.default_rng(3)
    pairs = [sampling.sample_pair(rng, [source], (1.0,), 200) for _ in range(100)]
    assert {p.sequence for p in pairs} == {0, 1, 2}
    assert all(p.template_frame == 0 and p.search_frame == 0 for p in pairs)


def test_causal_pairs_respect_the_interval():
    """All visible, len 1000: template in [0, 999), search in [template + 1, template + 200)."""
    rng = np.random.default_rng(4)
    visible = np.ones(1000, bool)
    pairs = np.array([sampling.causal_frames(rng, visible, 200) for _ in range(3000)])
    gaps = pairs[:, 1] - pairs[:, 0]
    assert pairs[:, 0].min() >= 0 and pairs[:, 0].max() <= 998
    assert gaps.min() >= 1 and gaps.max() <= 199
    assert gaps.max() >= 190  # the whole interval is used (P(max < 190) over 3000 draws ≈ 0)


def test_causal_gap_grows_when_no_later_frame_is_close():
    """Visible frames {0, 250} (len 260): the only pair is (0, 250), reachable once gap_inc ≥ 55 (250 < 0 + 200 +
    gap_inc); base 250 never has a later frame. Without the growth the loop would never return."""
    visible = np.zeros(260, bool)
    visible[[0, 250]] = True
    rng = np.random.default_rng(5)
    assert {sampling.causal_frames(rng, visible, 200) for _ in range(20)} == {(0, 250)}


def test_causal_pairs_are_visible_and_ordered():
    visible = np.random.default_rng(9).random(300) < 0.3
    rng = np.random.default_rng(6)
    for _ in range(500):
        template, search = sampling.causal_frames(rng, visible, 50)
        assert visible[template] and visible[search] and template <= 298 and template < search < 300


def test_causal_needs_two_visible_frames():
    with pytest.raises(ValueError):
        sampling.causal_frames(np.random.default_rng(0), np.array([0, 1, 0], bool), 200)


def test_sample_pair_is_a_function_of_the_generator_seed():
    source = fake_source([np.ones(40, bool), np.ones(60, bool)])
    other = fake_source([np.ones(25, bool)])
    a = [sampling.sample_pair(np.random.default_rng([7, i]), [source, other], (1.0, 1.0), 200) for i in range(50)]
    b = [sampling.sample_pair(np.random.default_rng([7, i]), [source, other], (1.0, 1.0), 200) for i in range(50)]
    assert a == b
    assert len(set(a)) > 40  # and not constant
