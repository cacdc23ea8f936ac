"""Patch tiling and voting for whole-image toolchains: non-overlapping patches from the top-left,
leftover borders ignored, majority vote with deterministic ties, small images, per-patch PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio

from restore_cli.ops.patches import extract_patches, majority_vote, patch_origins, patch_psnr, voting_patches


@given(h=st.integers(1, 40), w=st.integers(1, 40), size=st.integers(1, 12), n=st.integers(1, 2))
@settings(max_examples=40, deadline=None)
def test_patches_are_the_non_overlapping_grid_from_the_top_left(h: int, w: int, size: int, n: int) -> None:
    x = torch.arange(n * 2 * h * w, dtype=torch.float32).reshape(n, 2, h, w)
    origins = patch_origins(h, w, size)
    assert len(origins) == (h // size) * (w // size)
    patches = extract_patches(x, size)
    expected = [x[i, :, r:r + size, c:c + size] for i in range(n) for r, c in origins]  # loops, image-major
    assert patches.shape == (len(expected), 2, size, size)
    for got, want in zip(patches, expected):
        assert torch.equal(got, want)


def test_leftover_borders_take_no_part() -> None:
    x = torch.rand(1, 3, 130, 140)  # 2×2 patches of 63; rows 126.. and columns 126.. are left over
    changed = x.clone()
    changed[..., 126:, :] = 0.0
    changed[..., :, 126:] = 1.0
    assert torch.equal(extract_patches(x, 63), extract_patches(changed, 63))
    assert extract_patches(x, 63).shape[0] == 4
    changed[..., 125, 0] += 0.5  # inside the last patch row: it matters
    assert not torch.equal(extract_patches(x, 63), extract_patches(changed, 63))


def test_small_images_vote_with_one_padded_patch() -> None:
    x = torch.rand(1, 3, 40, 70)  # too short for a 63×63 patch
    patches = voting_patches(x, 63)
    assert patches.shape == (1, 3, 63, 63)
    assert torch.equal(patches[..., :40, :63], x[..., :40, :63])
    assert torch.equal(patches[..., 40:, :], patches[..., 39:40, :].expand(-1, -1, 23, -1))  # replicated rows
    assert voting_patches(torch.rand(1, 1, 126, 64), 63).shape == (2, 1, 63, 63)
    assert extract_patches(x, 63).shape == (0, 3, 63, 63)


def test_majority_vote_counts_and_picks_the_most_common_action() -> None:
    vote = majority_vote([3, 1, 3, 12, 3, 1], 13)
    assert vote.winner == 3 and vote.voters == 6
    assert vote.counts[3] == 3 and vote.counts[1] == 2 and vote.counts[12] == 1 and sum(vote.counts) == 6
    assert majority_vote(torch.tensor([12, 12, 0]), 13).winner == 12


def test_ties_go_to_the_larger_summed_score_then_the_lowest_index() -> None:
    assert majority_vote([5, 2, 5, 2], 13).winner == 2  # no scores: lowest index
    scores = torch.zeros(4, 13)
    scores[:, 5] = 1.0  # action 5 has the larger Q-value sum
    assert majority_vote([5, 2, 5, 2], 13, scores).winner == 5
    scores[:, 2] = 1.0  # equal sums again: lowest index
    assert majority_vote([5, 2, 5, 2], 13, scores).winner == 2
    # Scores of actions that are not tied play no part.
    five = torch.zeros(5, 13)
    five[:, 7] = 100.0
    five[:, 5] = 1.0
    assert majority_vote([5, 2, 5, 2, 7], 13, five).winner == 5
    # Deterministic: the same votes give the same winner whatever their order.
    rng = np.random.default_rng(0)
    votes = [4, 4, 9, 9, 1]
    assert {majority_vote(list(rng.permutation(votes)), 13).winner for _ in range(5)} == {4}


def test_vote_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        majority_vote([], 13)
    with pytest.raises(ValueError):
        majority_vote([13], 13)
    with pytest.raises(ValueError):
        majority_vote([1, 2], 13, torch.zeros(3, 13))


def test_patch_psnr_matches_scikit_image_and_guards_identity() -> None:
    rng = np.random.default_rng(1)
    clean = rng.random((3, 3, 9, 9))
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1)
    ours = patch_psnr(torch.from_numpy(noisy), torch.from_numpy(clean))
    for i in range(3):
        # float32 inside patch_psnr; the 1e-10 guard is far below these MSEs
        assert ours[i].item() == pytest.approx(peak_signal_noise_ratio(clean[i], noisy[i], data_range=1.0), abs=1e-3)
    same = patch_psnr(torch.from_numpy(clean), torch.from_numpy(clean))
    assert torch.allclose(same, torch.full((3,), 100.0))  # 10·log10(1 / 1e-10)
    assert math.isfinite(float(same[0]))
