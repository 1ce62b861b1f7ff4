"""invdiff: inverse problems with diffusion priors for medical imaging.

Layers (imports point one way): ``invdiff.pipelines -> invdiff -> invdiff.operators -> torch``.
Importing ``invdiff`` stays light: MONAI, Lightning and pydicom are imported where used.
"""

__version__ = "0.1.0"
