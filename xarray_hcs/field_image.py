"""One field's level (or one of its label images) as a DataArray, whatever the writer called
things: ``dt.hcs.image("B/03/0", level=0)``.

Writers name levels ``0`` (ome-zarr-py, ngio), ``scale0`` (ngff-zarr) or ``s0``, and axes
``c``/``z``/``y``/``x`` or ``C``/``Z``/``Y``/``X`` (iohub). The multiscales metadata says
which is which; this reads it, so that code written once runs on every plate: the level is
found by its index in ``datasets`` (or its path), and the dimensions are named by their
role (``t``, ``c``, ``z``, ``y``, ``x``) where the writer's names differ from those only in
case, or are the sole axis of their type (time, channel).
"""

from __future__ import annotations

from typing import Any

import xarray as xr

from .errors import HcsSelectionError, HcsTypeError
from .metadata import node_at

__all__ = ["field_image"]

_ROLES = ("t", "c", "z", "y", "x")


def _field_path(tree: xr.DataTree, field: Any) -> str:
    """``"B/03/0"``, ``"B3/0"`` or ``("B", 3, "0")`` as the tree's field path."""
    from .tree import select_wells

    parts = list(field) if isinstance(field, tuple | list) else str(field).strip("/").split("/")
    if len(parts) == 3:
        well, fld = (parts[0], parts[1]), str(parts[2])
    elif len(parts) == 2:
        well, fld = parts[0], str(parts[1])
    else:
        raise HcsSelectionError(f"cannot read {field!r} as a field: use 'B/03/0', 'B3/0' or "
                                "('B', 3, '0')", "/")
    (w,) = select_wells(tree.hcs.plate, [well], "/")
    path = f"{w.path}/{fld}"
    if node_at(tree, path) is None:
        have = [fp.rsplit("/", 1)[1] for fp in tree.hcs.field_paths
                if fp.rsplit("/", 1)[0] == w.path]
        raise HcsSelectionError(f"well {w.path} holds no field {fld!r} (fields: {have})", "/")
    return path


def _role_names(axes: list[dict[str, Any]], dims: tuple[Any, ...]) -> dict[Any, str]:
    """Renames of ``dims`` to their roles, where unambiguous."""
    by_name = {str(a.get("name")): a for a in axes if isinstance(a, dict)}
    types = [str(a.get("type", "")).lower() for a in by_name.values()]
    out: dict[Any, str] = {}
    for d in dims:
        name = str(d)
        ax = by_name.get(name, {})
        kind = str(ax.get("type", "")).lower()
        role = name.lower() if name.lower() in _ROLES else None
        if role is None and kind in ("channel", "time") and types.count(kind) == 1:
            role = "c" if kind == "channel" else "t"
        if role is not None and role != name:
            out[d] = role
    taken = [str(d) for d in dims if d not in out]
    if len(set(out.values())) != len(out) or set(out.values()) & set(taken):
        return {}  # two axes would take one name: keep the writer's names
    return out


def field_image(tree: xr.DataTree, field: Any, level: int | str = 0,
                label: str | None = None, variable: str | None = None) -> xr.DataArray:
    """See :meth:`xarray_hcs.accessor.HcsAccessor.image`."""
    from .stack import level_path

    fp = _field_path(tree, field)
    node = node_at(tree, fp)
    assert node is not None
    if label is not None and not isinstance(label, str):
        raise HcsTypeError(f"label must be the name of one label image, got {label!r}",
                           f"/{fp}")
    if label is not None:
        labels = node.children.get("labels")
        if labels is None or label not in labels.children:
            have = [] if labels is None else list(labels.children)
            raise HcsSelectionError(f"has no label image {label!r} (labels: {have})",
                                    f"/{fp}")
        node = labels.children[label]
    lp = level_path(node, level)
    lnode = node_at(node, lp)
    if lnode is None:
        raise HcsSelectionError(f"level {lp!r} is not in the tree (opened with levels=?)",
                                f"{node.path}")
    names = list(lnode.data_vars)
    if variable is None:
        variable = "labels" if label is not None and "labels" in names else (
            "image" if "image" in names else (names[0] if len(names) == 1 else None))
    if variable not in names:
        raise HcsSelectionError(f"no variable {variable!r} at this level (it has {names})",
                                lnode.path)
    da = lnode[variable]
    axes = node.attrs.get("ome", {}).get("multiscales", [{}])[0].get("axes", [])
    renames = _role_names(axes, da.dims)
    return da.rename(renames) if renames else da
