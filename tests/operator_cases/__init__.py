"""Every operator configuration the contract battery runs over.

Each family module defines ``CASES: dict[str, Callable[[int], Operator]]``: a factory that
takes a seed (for the operator's random parameters) and builds a small operator with
float32 buffers. The battery moves it to float64 itself.
"""

from __future__ import annotations

from collections.abc import Callable

from invdiff.operators import Operator

from . import blur, composed, downsampling, hyperspectral, masking, mri, wavelet

CASES: dict[str, Callable[[int], Operator]] = {}
for _module in (masking, blur, downsampling, mri, hyperspectral, composed, wavelet):
    for _name, _factory in _module.CASES.items():
        CASES[f"{_module.__name__.rsplit('.', 1)[-1]}/{_name}"] = _factory
