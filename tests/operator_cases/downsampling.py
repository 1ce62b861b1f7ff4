"""Contract-battery cases for the downsampling operators and the separable (Kronecker) machinery.

Each factory takes a seed (used only where the operator has random parameters: the generic
separable cases). Sizes keep ``numel(x) <= 1600`` so the dense operator-norm reference runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.operators.base import Operator
from invdiff.operators.downsampling import BicubicDownsampling, BoxDownsampling
from invdiff.operators.separable import KroneckerOperator, SeparableOperator


def _random_matrices(seed: int, shapes: list[tuple[int, int]], rank: list[int | None]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for (m, n), r in zip(shapes, rank, strict=True):
        if r is None:
            out.append(torch.randn(m, n, generator=g))
        else:  # an exactly rank-deficient factor: null space in the SVD
            out.append(torch.randn(m, r, generator=g, dtype=torch.float64) @ torch.randn(r, n, generator=g, dtype=torch.float64))
    return out


CASES: dict[str, Callable[[int], Operator]] = {
    "box_2d_f2_c3": lambda seed: BoxDownsampling((3, 8, 10), 2),
    "box_2d_odd_21x15_f3_c2": lambda seed: BoxDownsampling((2, 21, 15), 3),
    "box_3d_f2_c2": lambda seed: BoxDownsampling((2, 6, 8, 4), 2),
    "box_3d_inplane_f122": lambda seed: BoxDownsampling((1, 5, 8, 6), (1, 2, 2)),
    "bicubic_2d_f2_c3_reflect": lambda seed: BicubicDownsampling((3, 12, 10), 2),
    "bicubic_2d_odd_21x15_f3_truncate": lambda seed: BicubicDownsampling((1, 21, 15), 3, boundary="truncate"),
    "bicubic_2d_f4_periodic_c2": lambda seed: BicubicDownsampling((2, 16, 20), 4, boundary="periodic"),
    "bicubic_3d_f2": lambda seed: BicubicDownsampling((1, 8, 8, 6), 2),
    "bicubic_3d_mixed_f(1,2,3)_c2": lambda seed: BicubicDownsampling((2, 3, 8, 9), (1, 2, 3)),
    # generic separable operators with random 1-D factors: wide, tall (m > n) and rank-deficient
    "separable_random_2d_c2": lambda seed: SeparableOperator(_random_matrices(seed, [(5, 9), (7, 4)], [None, None]), channels=2),
    "separable_rank_deficient_3d": lambda seed: SeparableOperator(
        _random_matrices(seed, [(4, 5), (6, 6), (3, 7)], [None, 2, None]), channels=1
    ),
    "kronecker_channel_mixing": lambda seed: KroneckerOperator(
        (4, 6, 5), _random_matrices(seed, [(3, 4), (6, 5)], [None, None])[:1] + [None] + _random_matrices(seed + 1, [(2, 5)], [None])
    ),
}
