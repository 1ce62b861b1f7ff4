"""invdiff.pipelines: scans in and out, MONAI transforms and bundles, and the ``invdiff`` CLI.

Importing it stays light: pydicom, nibabel, h5py and MONAI are imported where they are used.
"""

from .dicom_writer import save_dicom_series
from .io import Scan, load_scan, save_nifti, save_npy, save_scan
from .kspace_io import (
    KSpace,
    load_kspace,
    load_kspace_h5,
    load_kspace_nifti,
    load_kspace_npy,
    save_kspace_h5,
    save_kspace_npy,
)

__all__ = [
    "KSpace",
    "Scan",
    "load_kspace",
    "load_kspace_h5",
    "load_kspace_nifti",
    "load_kspace_npy",
    "load_scan",
    "save_dicom_series",
    "save_kspace_h5",
    "save_kspace_npy",
    "save_nifti",
    "save_npy",
    "save_scan",
]
