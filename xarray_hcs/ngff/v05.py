"""OME-NGFF 0.5 codec: ``zarr.json`` ``attributes`` of a zarr v3 group ⇄ the neutral ``ome`` dict.

0.5 already keeps everything under ``attributes["ome"]`` with one ``version``; the neutral form
*is* that dict, so this codec only separates it from the non-OME attributes.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import HcsMetadataError

VERSION = "0.5"


def decode(attrs: dict[str, Any], path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split 0.5 attributes into (ome dict, other attrs)."""
    other = {k: v for k, v in attrs.items() if k != "ome"}
    ome = attrs.get("ome", {})
    if not isinstance(ome, dict):
        raise HcsMetadataError(f"attributes['ome'] must be an object, got {type(ome).__name__}",
                               path)
    ome = dict(ome)
    # some 0.5 writers repeat the version inside plate, well, image-label or multiscales:
    # the neutral form has one version, at the top
    from .v04 import lift_versions

    lift_versions(ome, path)
    return ome, other


def encode(ome: dict[str, Any], other: dict[str, Any] | None = None) -> dict[str, Any]:
    """Neutral ome dict → 0.5 attributes (``{"ome": {"version": "0.5", ...}, **other}``)."""
    body = {k: copy.deepcopy(v) for k, v in ome.items() if k != "version"}
    return {**(other or {}), "ome": {"version": VERSION, **body}}
