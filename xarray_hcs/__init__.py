"""xarray_hcs: OME-Zarr High Content Screening plates as lazy xarray DataTrees.

>>> import xarray as xr
>>> dt = xr.open_datatree("plate.zarr", engine="ome-hcs")   # doctest: +SKIP
>>> dt.hcs.wells                                             # doctest: +SKIP
"""

from __future__ import annotations

from . import accessor as _accessor  # noqa: F401  registers the ``.hcs`` accessor
from .errors import (
    HcsError,
    HcsExistsError,
    HcsMetadataError,
    HcsMissingWarning,
    HcsNotAPlateError,
    HcsNotFoundError,
    HcsPathError,
    HcsReadError,
    HcsWriteError,
    HcsSelectionError,
    HcsMetadataWarning,
    HcsTableError,
    HcsTypeError,
    HcsValueError,
    HcsVersionError,
    HcsWarning,
)
from .ondisk import add_image, create_plate, remove_image, write_field
from .open import open_plate

__version__ = "0.1.0.dev0"

__all__ = [
    "open_plate",
    "add_image",
    "remove_image",
    "create_plate",
    "write_field",
    "HcsError",
    "HcsExistsError",
    "HcsMetadataError",
    "HcsMissingWarning",
    "HcsNotAPlateError",
    "HcsNotFoundError",
    "HcsPathError",
    "HcsReadError",
    "HcsWriteError",
    "HcsSelectionError",
    "HcsMetadataWarning",
    "HcsTableError",
    "HcsTypeError",
    "HcsValueError",
    "HcsVersionError",
    "HcsWarning",
    "__version__",
]
