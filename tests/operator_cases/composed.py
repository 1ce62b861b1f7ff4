"""Contract-battery cases for cropping and for compositions across families."""

from __future__ import annotations

from invdiff.operators.cropping import CenterCrop

CASES = {
    "crop_2d_odd": lambda seed: CenterCrop((2, 40, 36), (37, 31)),
    "crop_3d_complex": lambda seed: CenterCrop((1, 8, 10, 12), (5, 10, 9), is_complex=True),
}
