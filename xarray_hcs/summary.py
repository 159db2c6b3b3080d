"""``dt.hcs.summary()``: a plate in a few lines, with whatever differs between its fields.

Quick on any plate size: it reads metadata the tree already holds (no pixel, no store read),
one look per field at its own multiscales, level-0 array and channel labels, so a plate whose
fields differ (levels, shapes, dtypes, axes, channels) says so instead of showing the first
field as if it were every field.
"""

from __future__ import annotations

from typing import Any

import xarray as xr

from ._xarray_internals import node_coord, node_data_var
from .metadata import node_at
from .ngff import Plate

__all__ = ["summary"]


def _multiscale(node: xr.DataTree | None) -> dict[str, Any]:
    ms = (node.attrs.get("ome", {}).get("multiscales") or [{}]) if node is not None else [{}]
    return ms[0] if isinstance(ms[0], dict) else {}


def _field_facts(tree: xr.DataTree, fp: str) -> tuple[tuple[Any, ...], tuple[Any, ...], str]:
    """(layout: level paths, axes, level-0 shape and dtype; channel labels; channel axis)."""
    fnode = node_at(tree, fp)
    ms = _multiscale(fnode)
    levels = tuple(d.get("path") for d in ms.get("datasets", []) if isinstance(d, dict))
    axes = tuple(a.get("name") if isinstance(a, dict) else a for a in ms.get("axes", []))
    chan = next((a.get("name") for a in ms.get("axes", []) if isinstance(a, dict) and (
        a.get("type") == "channel" or str(a.get("name")).lower() == "c")), None)
    level0 = node_at(fnode, levels[0]) if fnode is not None and levels and isinstance(
        levels[0], str) else None
    var = node_data_var(level0, "image") if level0 is not None else None
    shape = (tuple(var.shape), str(var.dtype)) if var is not None else ((), "")
    found = node_coord(fnode, chan) if chan and fnode is not None else None
    labels = tuple(map(str, found[0].values)) if found is not None else ()
    return (len(levels), axes, *shape), labels, chan or ""


def _level_lines(node: xr.DataTree) -> list[str]:
    out = []
    for d in _multiscale(node).get("datasets", []):
        name = d.get("path") if isinstance(d, dict) else None
        lv = node_at(node, name) if isinstance(name, str) else None
        for vname, var in (lv.data_vars.items() if lv is not None else ()):
            dims = ", ".join(f"{k}: {n}" for k, n in zip(var.dims, var.shape, strict=True))
            out.append(f"    {name:>6}  {vname} ({dims}) {var.dtype}")
    return out


def summary(tree: xr.DataTree) -> str:
    """The text of ``dt.hcs.summary()`` (see :meth:`HcsAccessor.summary`)."""
    acc = tree.hcs
    plate: Plate = acc.plate
    wells, fields = acc.wells, acc.field_paths
    per_well: dict[str, int] = {}
    for f in fields:
        w = f.rsplit("/", 1)[0]
        per_well[w] = per_well.get(w, 0) + 1
    counts = sorted(set(per_well.values()))
    lines = [
        f"OME-Zarr HCS plate {plate.name or ''!s}".rstrip() + f" (OME-NGFF {acc.version})",
        f"  layout:       {len(plate.rows)} rows x {len(plate.columns)} columns "
        f"({plate.rows[0]}..{plate.rows[-1]}, {plate.columns[0]}..{plate.columns[-1]})"
        if plate.rows and plate.columns else "  layout:       empty",
        f"  wells:        {len(wells)}",
        f"  fields:       {len(fields)} ({'/'.join(map(str, counts)) or 0} per well)",
    ]
    if plate.acquisitions:
        acqs = ", ".join(f"id {a.id}" + (f" ({a.name})" if a.name else "")
                         for a in plate.acquisitions)
        lines.append(f"  acquisitions: {acqs}")
    if fields:
        facts = {fp: _field_facts(tree, fp) for fp in fields}
        layouts: dict[tuple[Any, ...], list[str]] = {}
        sets: dict[tuple[str, ...], list[str]] = {}
        for fp, (layout, labels, _) in facts.items():
            layouts.setdefault(layout, []).append(fp)
            sets.setdefault(labels, []).append(fp)
        first = node_at(tree, fields[0])
        n_levels = facts[fields[0]][0][0]
        lines.append(f"  levels:       {n_levels} (first field {fields[0]})")
        lines.extend(_level_lines(first) if first is not None else [])
        if len(layouts) > 1:
            lines.append(f"  fields differ: {len(layouts)} layouts (levels, axes, level-0 "
                         "shape and dtype)")
            for (nl, axes, shape, dtype), fps in layouts.items():
                lines.append(f"    {len(fps):>6}  fields like {fps[0]}: {nl} level"
                             f"{'s' * (nl != 1)}, axes {', '.join(map(str, axes))}, "
                             f"{shape} {dtype}")
        if len(sets) == 1:
            only = next(iter(sets))
            if only:
                lines.append(f"  channels:     {', '.join(only)}")
        else:
            same_axes = len({layout[1] for layout in layouts}) == 1
            advice = " (stack with channels='union' to align them)" if same_axes else ""
            lines.append(f"  channels:     {len(sets)} different sets{advice}")
            for labels, fps in sets.items():
                lines.append(f"    {len(fps):>6}  fields like {fps[0]}: "
                             f"{', '.join(labels) or '(no channel axis)'}")
        if first is not None and "labels" in first.children:
            lines.append("  labels:       " + ", ".join(first["labels"].children))
    from .plate_tables import _fields, list_tables, table_nodes

    per_field = [list(table_nodes(node)) for *_, node in _fields(tree, None)]
    per_image = list(dict.fromkeys(n for names in per_field for n in names))
    common = set(per_field[0]).intersection(*per_field[1:]) if per_field else set()
    if per_image:
        lines.append("  tables:       " + ", ".join(
            n if n in common else f"{n} (some fields)" for n in per_image))
    plate_level = list_tables(tree, path="")
    if plate_level:
        lines.append("  plate tables: " + ", ".join(plate_level))
    return "\n".join(lines)
