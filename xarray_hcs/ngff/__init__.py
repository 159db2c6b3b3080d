"""OME-NGFF metadata: version-neutral models, 0.4 / 0.5 / 0.6rc0 codecs and validation.

This layer knows nothing of xarray. :func:`decode_attrs` is the single door from a node's raw
attributes to the neutral ``ome`` dict; :func:`encode_attrs` is the door back.
"""

from __future__ import annotations

from typing import Any

from ..errors import HcsMetadataError, HcsVersionError
from . import v04, v05, v06, validate
from .models import (
    Acquisition,
    Axis,
    ImageLabel,
    Multiscale,
    Omero,
    Plate,
    PlateWell,
    ScaleLevel,
    Well,
    WellImage,
    check_name,
    check_relative_path,
    parse_labels_list,
)

__all__ = [
    "Acquisition", "Axis", "ImageLabel", "Multiscale", "Omero", "Plate", "PlateWell",
    "ScaleLevel", "Well", "WellImage", "check_name", "check_relative_path", "parse_labels_list",
    "decode_attrs", "encode_attrs", "READ_VERSIONS", "WRITE_VERSIONS", "validate",
]

#: versions we read, per zarr format
READ_VERSIONS = {2: ("0.4",), 3: ("0.5", *v06.VERSIONS)}
#: versions we write
WRITE_VERSIONS = ("0.4", "0.5")


def decode_attrs(attrs: Any, zarr_format: int, path: str | None,
                 default_version: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(ome, other)`` for a node's raw attributes.

    ``ome`` is the version-neutral OME dict (``{}`` when the node has no OME metadata) with a
    ``"version"`` key; ``other`` the remaining attributes, kept so that writing back loses
    nothing. ``default_version`` fills in a version the node does not state (0.4 wells and
    fields often rely on the plate's).
    """
    if not isinstance(attrs, dict):
        raise HcsMetadataError(f"attributes must be a JSON object, got {type(attrs).__name__}",
                               path)
    if zarr_format == 3 and "ome" in attrs:
        version = attrs["ome"].get("version") if isinstance(attrs["ome"], dict) else None
        if version is not None and not isinstance(version, str):
            raise HcsVersionError(f"the OME-NGFF version must be a string, got {version!r}",
                                  path)
        if version is None:
            version = default_version
        if version in v06.VERSIONS:
            ome, other = v06.decode(attrs, path)
        elif version == "0.5":
            ome, other = v05.decode(attrs, path)
        else:
            raise HcsVersionError(f"unknown OME-NGFF version {version!r} in zarr v3 metadata "
                                  f"(readable: {', '.join(READ_VERSIONS[3])})", path)
        ome["version"] = version
        return ome, other
    ome, other = v04.decode(attrs, path)
    if ome:
        version = ome.get("version") or default_version or "0.4"
        if version not in READ_VERSIONS[2]:
            doc = ".zattrs" if zarr_format == 2 else "zarr.json"
            raise HcsVersionError(f"unknown OME-NGFF version {version!r} in {doc} "
                                  "(readable: 0.4 on zarr v2, 0.5/0.6 on zarr v3)", path)
        ome["version"] = version
    return ome, other


def encode_attrs(ome: dict[str, Any], other: dict[str, Any] | None,
                 version: str) -> dict[str, Any]:
    """Return the raw attributes of a node for ``version`` ("0.4" or "0.5")."""
    if version == "0.4":
        return v04.encode(ome, other)
    if version == "0.5":
        return v05.encode(ome, other)
    raise HcsVersionError(f"cannot write OME-NGFF version {version!r} "
                          f"(writable: {', '.join(WRITE_VERSIONS)})")
