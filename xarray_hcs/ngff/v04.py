"""OME-NGFF 0.4 codec: ``.zattrs`` of a zarr v2 group ⇄ the version-neutral ``ome`` dict.

In 0.4 the OME keys sit at the top level of ``.zattrs`` and each object carries its own
``version`` (``plate.version``, ``well.version``, ``multiscales[].version``,
``image-label.version``). Decoding lifts those into one ``ome["version"]``; encoding puts them
back where 0.4 wants them.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import HcsMetadataError

VERSION = "0.4"
#: top-level ``.zattrs`` keys that belong to OME-NGFF (everything else is kept as other attrs)
OME_KEYS = ("plate", "well", "multiscales", "omero", "labels", "image-label",
            "bioformats2raw.layout", "series")
#: objects that carry a ``version`` key of their own in 0.4
_VERSIONED = ("plate", "well", "image-label")


def lift_versions(ome: dict[str, Any], path: str | None = None) -> set[Any]:
    """Bring ``ome`` (in place) to the neutral form: per-object ``version`` keys removed (their
    values returned, each checked to be a string) and empty image-label lists dropped."""
    versions = _Versions(path)
    for key in _VERSIONED:
        obj = ome.get(key)
        if isinstance(obj, dict) and "version" in obj:
            obj = dict(obj)
            versions.add(obj.pop("version"))
            ome[key] = obj
    ms = ome.get("multiscales")
    if isinstance(ms, list):
        new = []
        for m in ms:
            if isinstance(m, dict) and "version" in m:
                m = dict(m)
                versions.add(m.pop("version"))
            new.append(m)
        ome["multiscales"] = new
    versions.discard(None)
    # empty colors/properties lists (iohub) say nothing and break the schema (minItems 1)
    il = ome.get("image-label")
    if isinstance(il, dict) and any(il.get(k) == [] for k in ("colors", "properties")):
        ome["image-label"] = {k: v for k, v in il.items()
                              if not (k in ("colors", "properties") and v == [])}
    return versions


class _Versions(set):
    """The versions a node's objects state: strings only (a version is compared and shown)."""

    def __init__(self, path: str | None) -> None:
        super().__init__()
        self.path = path

    def add(self, v: Any) -> None:
        if v is not None and not isinstance(v, str):
            raise HcsMetadataError(f"an OME-NGFF version must be a string, got {v!r}",
                                   self.path)
        super().add(v)


def decode(attrs: dict[str, Any], path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split 0.4 ``.zattrs`` into (version-neutral ome dict, other attrs)."""
    ome: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for k, v in attrs.items():
        (ome if k in OME_KEYS else other)[k] = v
    versions = lift_versions(ome, path)
    if len(versions) > 1:
        raise HcsMetadataError(f"objects of one node disagree on the NGFF version: "
                               f"{sorted(map(str, versions))}", path)
    if ome:
        ome = {"version": versions.pop() if versions else None, **ome}
    return ome, other


def encode(ome: dict[str, Any], other: dict[str, Any] | None = None) -> dict[str, Any]:
    """Version-neutral ome dict → 0.4 ``.zattrs`` (a new dict; inputs untouched)."""
    out: dict[str, Any] = dict(other or {})
    for k, v in ome.items():
        if k == "version":
            continue
        v = copy.deepcopy(v)
        if k in _VERSIONED and isinstance(v, dict):
            v = {**v, "version": VERSION}
        elif k == "multiscales" and isinstance(v, list):
            v = [{**m, "version": VERSION} if isinstance(m, dict) else m for m in v]
        out[k] = v
    return out
