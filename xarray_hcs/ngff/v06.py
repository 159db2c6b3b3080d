"""OME-NGFF 0.6 (rc0) reading: ``coordinateSystems`` multiscales → the neutral 0.5-style form.

0.6 names axes through coordinate systems and lets dataset transforms be a ``sequence`` of
scale and translation with ``input``/``output`` references. Plates and wells are unchanged from
0.5. We read what maps cleanly onto scale + translation per level (the common case, and every
example of the spec); anything else (affine, rotation, displacement fields...) is refused with
a clear error rather than guessed at. Writing 0.6 is not supported.
"""

from __future__ import annotations

from typing import Any

from ..errors import HcsMetadataError

VERSIONS = ("0.6rc0", "0.6.dev0", "0.6.dev1", "0.6.dev2", "0.6.dev3", "0.6")


def _flatten(t: Any, what: str, path: str | None) -> list[dict[str, Any]]:
    if not isinstance(t, dict):
        raise HcsMetadataError(f"{what}: a coordinate transformation must be an object", path)
    if t.get("type") == "sequence":
        out: list[dict[str, Any]] = []
        for s in t.get("transformations", []):
            out.extend(_flatten(s, what, path))
        return out
    if t.get("type") in ("scale", "translation", "identity"):
        return [{k: v for k, v in t.items() if k not in ("input", "output", "name")}]
    raise HcsMetadataError(
        f"{what}: 0.6 coordinate transformation {t.get('type')!r} cannot be read as "
        "scale + translation", path)


def _simple(cts: Any, what: str, path: str | None) -> list[dict[str, Any]] | None:
    if cts is None:
        return None
    if not isinstance(cts, list):
        raise HcsMetadataError(f"{what}: coordinateTransformations must be a list", path)
    flat: list[dict[str, Any]] = []
    for t in cts:
        flat.extend(_flatten(t, what, path))
    flat = [t for t in flat if t.get("type") != "identity"] or [{"type": "identity"}]
    if len(flat) == 1 and flat[0]["type"] == "identity":
        return None
    return flat


def upgrade_multiscale(m: Any, path: str | None) -> Any:
    """Rewrite one 0.6 multiscales entry with ``axes`` and plain scale/translation lists."""
    if not isinstance(m, dict) or "coordinateSystems" not in m:
        return m
    systems = m["coordinateSystems"]
    if not isinstance(systems, list) or not systems:
        raise HcsMetadataError("multiscales coordinateSystems must be a non-empty list", path)
    by_name = {s.get("name"): s for s in systems if isinstance(s, dict)}
    datasets = m.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise HcsMetadataError("multiscales datasets must be a non-empty list", path)
    # the datasets map into one coordinate system: it names the axes of the arrays
    first = datasets[0].get("coordinateTransformations") if isinstance(datasets[0], dict) else None
    target = None
    if isinstance(first, list) and first and isinstance(first[0], dict):
        target = (first[0].get("output") or {}).get("name")
    system = by_name.get(target) if target is not None else systems[-1]
    if system is None or not isinstance(system.get("axes"), list):
        raise HcsMetadataError(f"coordinate system {target!r} of the datasets is not declared",
                               path)
    out = {k: v for k, v in m.items() if k not in ("coordinateSystems", "datasets",
                                                    "coordinateTransformations")}
    out["axes"] = system["axes"]
    out["datasets"] = []
    for ds in datasets:
        if not isinstance(ds, dict):
            raise HcsMetadataError("multiscales dataset must be an object", path)
        new = {k: v for k, v in ds.items() if k != "coordinateTransformations"}
        cts = _simple(ds.get("coordinateTransformations"), f"dataset {ds.get('path')!r}", path)
        new["coordinateTransformations"] = cts or [
            {"type": "scale", "scale": [1.0] * len(system["axes"])}]
        out["datasets"].append(new)
    outer = _simple(m.get("coordinateTransformations"), "multiscales", path)
    if outer:
        if outer[0].get("type") != "scale":
            outer = [{"type": "scale", "scale": [1.0] * len(system["axes"])}, *outer]
        out["coordinateTransformations"] = outer
    return out


def decode(attrs: dict[str, Any], path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split 0.6 attributes into (neutral ome dict, other attrs)."""
    from . import v05

    ome, other = v05.decode(attrs, path)
    if isinstance(ome.get("multiscales"), list):
        ome["multiscales"] = [upgrade_multiscale(m, path) for m in ome["multiscales"]]
    return ome, other
