"""Bridges to other inverse-problem libraries (optional dependencies).

Each bridge is its own module and imports its library only when that module is imported, so
``import invdiff`` and ``import invdiff.interop`` never need them:

* ``invdiff.interop.deepinv`` — invdiff priors as deepinv denoisers, invdiff operators as deepinv
  physics and back, and deepinv's DPS, DiffPIR and DDRM on invdiff priors. Needs ``deepinv`` and
  ``torchvision`` (``pip install -e ".[bench]"``).
"""

__all__: list[str] = []
