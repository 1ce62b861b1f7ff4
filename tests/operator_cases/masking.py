"""Contract-battery cases for the masking operators (Inpainting and its mask generators).

Each factory takes a seed for the random mask; buffers are float32 (the battery moves them).
Sizes keep ``numel(x) <= 1600`` so the dense operator-norm reference runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.operators.masking import (
    Inpainting,
    MaskOperator,
    box_mask,
    brush_stroke_mask,
    half_mask,
    random_pixel_mask,
)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CASES: dict[str, Callable[[int], MaskOperator]] = {
    # 2D, several channels, the same mask for every channel
    "random_2d_c3": lambda seed: Inpainting(random_pixel_mask((8, 10), 0.4, generator=_g(seed)), channels=3),
    "box_random_2d_c2": lambda seed: Inpainting(
        box_mask((12, 12), (5, 4), position="random", generator=_g(seed)), channels=2
    ),
    "half_left_2d_c1": lambda seed: Inpainting(half_mask((9, 11), "left"), channels=1),
    # odd image size 37 x 31, free-form strokes
    "brush_37x31_c1": lambda seed: Inpainting(brush_stroke_mask((37, 31), generator=_g(seed)), channels=1),
    # one mask per channel (channels=None: the mask has the full x shape), given as 0/1 floats
    "per_channel_2d": lambda seed: Inpainting(
        random_pixel_mask((3, 7, 9), 0.6, generator=_g(seed)).float(), channels=None
    ),
    # 3D: a box in a volume, random voxels, strokes as tubes, per-channel volume mask
    "box_3d_c2": lambda seed: Inpainting(box_mask((6, 7, 8), 3, position="random", generator=_g(seed)), channels=2),
    "random_voxels_3d_c1": lambda seed: Inpainting(random_pixel_mask((5, 6, 7), 0.3, generator=_g(seed)), channels=1),
    "brush_3d_c1": lambda seed: Inpainting(brush_stroke_mask((8, 9, 10), generator=_g(seed)), channels=1),
    "half_back_3d_c1": lambda seed: Inpainting(half_mask((5, 6, 7), "back"), channels=1),
    "per_channel_3d": lambda seed: Inpainting(
        random_pixel_mask((2, 4, 5, 6), 0.5, generator=_g(seed)), channels=None
    ),
}
