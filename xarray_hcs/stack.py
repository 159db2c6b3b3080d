"""The stacked view: every field of one level as one lazy array ``(well, field, <image dims>)``.

Plate-wide computation wants one array, not thousands of nodes: ``ds.image.mean(["y", "x"])``
over all fields is one dask graph layer per operation instead of one per field. The stack is a
single :class:`StackedLevelArray` (an xarray ``BackendArray``) over the fields' zarr arrays, so
building it reads no pixel and its dask graph, when chunked, is one layer whatever the number
of fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from .arrays import ZarrLevelArray, _DaskSource
from .errors import HcsMetadataError, HcsSelectionError
from .store import run_sync

__all__ = ["StackedLevelArray", "FieldSlot", "stacked_dataset", "backend_of"]


@dataclass(frozen=True, slots=True)
class FieldSlot:
    """One field of the stack: where it sits and what it holds."""

    well: str
    field: str
    acquisition: int | None
    array: ZarrLevelArray
    coords: dict[str, xr.Variable]  # the level's own coordinates (space, time)


class StackedLevelArray(BackendArray):
    """``(well, field, *image)`` over a grid of zarr arrays; absent fields read as fill."""

    def __init__(self, grid: Sequence[Sequence[ZarrLevelArray | None]],
                 image_shape: tuple[int, ...], dtype: np.dtype, fill: Any = 0) -> None:
        self.grid = [list(row) for row in grid]
        nf = max((len(r) for r in self.grid), default=0)
        self.shape = (len(self.grid), nf, *image_shape)
        self.dtype = np.dtype(dtype)
        self.fill = fill

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        wsel = np.arange(self.shape[0])[key[0]]
        fsel = np.arange(self.shape[1])[key[1]]
        rest = key[2:]
        w_iter = np.atleast_1d(wsel)
        f_iter = np.atleast_1d(fsel)
        out_img_shape = _outer_shape(self.shape[2:], rest)
        out = np.empty((len(w_iter), len(f_iter), *out_img_shape), dtype=self.dtype)
        todo = []
        for i, w in enumerate(w_iter):
            for j, f in enumerate(f_iter):
                arr = self.grid[w][f] if f < len(self.grid[w]) else None
                if arr is None:
                    out[i, j] = self.fill
                    continue
                if arr.shape != self.shape[2:]:  # a smaller field of a padded stack
                    out[i, j] = _padded_read(arr, rest, self.shape[2:], self.fill
                                             ).reshape(out_img_shape)
                    continue
                data = arr.read_inline(rest)  # local files: in this thread, in parallel
                if data is None:
                    todo.append(((i, j), arr))
                else:
                    out[i, j] = data.reshape(out_img_shape)
        if todo:
            # one trip to zarr's event loop for the rest of the block: the fields' chunks are
            # fetched and decoded concurrently, the sync bridge's cost is paid once
            for (i, j), data in zip((ij for ij, _ in todo),
                                    run_sync(_read_all([a for _, a in todo], rest)),
                                    strict=True):
                out[i, j] = np.asarray(data).reshape(out_img_shape)
        if np.ndim(wsel) == 0:
            out = out[0]
            if np.ndim(fsel) == 0:
                out = out[0]
        elif np.ndim(fsel) == 0:
            out = out[:, 0]
        return out


def _padded_read(arr: ZarrLevelArray, key: tuple[Any, ...], full: tuple[int, ...],
                 fill: Any) -> np.ndarray:
    """``key`` of a field padded to ``full`` (its own pixels, then the fill value)."""
    picks = [np.arange(n)[k] for n, k in zip(full, key, strict=True)]
    out = np.full([np.size(p) for p in picks if np.ndim(p)], fill, dtype=arr.dtype)
    inner, place = [], []
    for p, own in zip(picks, arr.shape, strict=True):
        p1 = np.atleast_1d(p)
        keep = np.flatnonzero(p1 < own)
        if not keep.size:
            return out  # the selection lies wholly in the padding
        sel = p1[keep]
        contiguous = bool(np.all(np.diff(sel) == 1))
        inner.append(int(sel[0]) if np.ndim(p) == 0 else
                     slice(int(sel[0]), int(sel[-1]) + 1) if contiguous else sel)
        if np.ndim(p):
            place.append(slice(int(keep[0]), int(keep[-1]) + 1) if contiguous else keep)
    data = arr._getitem(tuple(inner))
    out[tuple(place)] = data
    return out


async def _read_all(arrays: Sequence[ZarrLevelArray], key: tuple[Any, ...]) -> list[Any]:
    import asyncio

    basic = all(isinstance(k, slice | int | np.integer) for k in key)

    async def one(a: ZarrLevelArray) -> Any:
        aa = a.array._async_array
        if basic:
            return await aa.getitem(key)
        return await aa.get_orthogonal_selection(key)

    return await asyncio.gather(*(one(a) for a in arrays))


def _outer_shape(full: tuple[int, ...], key: tuple[Any, ...]) -> tuple[int, ...]:
    """The shape an outer-indexing ``key`` selects from an array of shape ``full``."""
    shape = []
    for n, k in zip(full, key, strict=True):
        if isinstance(k, slice):
            shape.append(len(range(*k.indices(n))))
        elif isinstance(k, int | np.integer):
            continue
        else:
            shape.append(len(np.asarray(k)))
    return tuple(shape)


def backend_of(var: xr.Variable) -> ZarrLevelArray | None:
    """The zarr array behind ``var`` if ``var`` still shows all of it, unmodified; else None."""
    data: Any = var._data
    if hasattr(data, "dask") and hasattr(data, "chunks"):  # our own one-layer dask arrays
        layers = data.dask.layers
        if len(layers) == 1 and data.name.startswith("ome-hcs-"):
            task = next(iter(dict(next(iter(layers.values()))).values()))
            src = task[1] if isinstance(task, tuple) and len(task) == 3 else None
            if isinstance(src, _DaskSource) and src.shape == data.shape:
                return src.backend
        return None
    for _ in range(6):  # MemoryCachedArray(CopyOnWriteArray(LazilyIndexedArray(backend)))
        if isinstance(data, ZarrLevelArray):
            return data if data.shape == var.shape else None
        if isinstance(data, indexing.LazilyIndexedArray):
            full = all(isinstance(k, slice) and k == slice(None) for k in data.key.tuple)
            if not full:
                return None
        data = getattr(data, "array", None)
        if data is None:
            return None
    return None


def well_field_coords(wells: Sequence[str], fields: Sequence[Sequence[str]]
                      ) -> dict[str, Any]:
    """The coordinates of a ``(well, field)`` layout: ``well``, ``row`` and ``column`` on
    ``well``; ``field`` (position in the well); ``field_path`` and ``present`` on
    ``(well, field)``, for wells holding ``fields[i]`` (padded to the longest)."""
    nf = max((len(f) for f in fields), default=0)
    field_path = np.full((len(wells), nf), "", dtype=object)
    for i, names in enumerate(fields):
        field_path[i, :len(names)] = names
    return {
        "well": ("well", np.asarray(wells, dtype=object)),
        "row": ("well", np.asarray([w.split("/")[0] for w in wells], dtype=object)),
        "column": ("well", np.asarray([w.split("/")[1] for w in wells], dtype=object)),
        "field": ("field", np.arange(nf)),
        "field_path": (("well", "field"), field_path),
        "present": (("well", "field"), field_path != ""),
    }


def stacked_dataset(slots: Sequence[FieldSlot], wells: Sequence[str], dims: Sequence[str],
                    var_name: str, level: str, attrs: dict[str, Any] | None = None,
                    shared_coords: dict[str, xr.Variable] | None = None,
                    pad: bool = False) -> xr.Dataset:
    """The stacked Dataset of ``slots`` (fields in well order); errors name the outliers.

    Parameters
    ----------
    slots
        Every field to stack, grouped by well in plate order.
    wells
        Well paths in order (wells without fields still get a row of fill).
    dims
        The image dimension names.
    var_name
        Name of the data variable (``"image"``).
    level
        The level the slots come from (for messages and attrs).
    shared_coords
        Coordinates (``c``, ``t``...) that every field shares, e.g. channel labels.
    pad
        Fields of different shapes are padded at the end of each axis to the largest shape
        (with the fill value) instead of refused; ``<dim>_size`` coordinates on
        ``(well, field)`` give each field's own extent.
    """
    if not slots:
        raise HcsSelectionError("there are no fields to stack", level)
    ref = slots[0].array
    if pad:
        outliers = [f"{s.well}/{s.field} {s.array.shape} {s.array.dtype}" for s in slots
                    if len(s.array.shape) != len(ref.shape) or s.array.dtype != ref.dtype]
    else:
        outliers = [f"{s.well}/{s.field} {s.array.shape} {s.array.dtype}" for s in slots
                    if s.array.shape != ref.shape or s.array.dtype != ref.dtype]
    if outliers:
        some = ", ".join(outliers[:10]) + (", ..." if len(outliers) > 10 else "")
        raise HcsMetadataError(
            f"fields do not share shape {ref.shape} and dtype {ref.dtype} at level {level!r} "
            f"(first field {slots[0].well}/{slots[0].field}); outliers: {some}. Select "
            "matching fields or levels first" + ("" if pad else ", or pass pad=True to pad "
                                                  "smaller fields"), level)
    shape = tuple(max(s.array.shape[d] for s in slots) for d in range(len(ref.shape)))
    padded = any(s.array.shape != shape for s in slots)
    by_well: dict[str, list[FieldSlot]] = {w: [] for w in wells}
    for s in slots:
        by_well[s.well].append(s)
    nf = max(len(v) for v in by_well.values())
    grid = [[s.array for s in by_well[w]] for w in wells]
    fill = ref.info.doc.get("fill_value", 0)
    try:
        fill = np.asarray(0 if fill is None else fill, dtype=ref.dtype)
    except (TypeError, ValueError):
        fill = np.zeros((), dtype=ref.dtype)
    backend = StackedLevelArray(grid, shape, ref.dtype, fill)
    full_dims = ("well", "field", *dims)
    # a dask block holds all fields of one well: the natural unit of screening analysis, and
    # their chunks are read concurrently in one go
    enc = {"preferred_chunks": {"well": 1, "field": nf,
                                **dict(zip(dims, ref.info.chunks, strict=True))},
           "chunks": (1, nf, *ref.info.chunks), "dtype": ref.dtype}
    var = xr.Variable(full_dims, indexing.LazilyIndexedArray(backend), encoding=enc)
    acq = np.full((len(wells), nf), -1, dtype=np.int64)
    for i, w in enumerate(wells):
        for j, s in enumerate(by_well[w]):
            acq[i, j] = -1 if s.acquisition is None else s.acquisition
    coords = well_field_coords(wells, [[s.field for s in by_well[w]] for w in wells])
    coords["acquisition"] = (("well", "field"), acq)
    if padded:
        for d, name in enumerate(dims):
            if any(s.array.shape[d] != shape[d] for s in slots):
                size = np.zeros((len(wells), nf), dtype=np.int64)
                for i, w in enumerate(wells):
                    for j, s in enumerate(by_well[w]):
                        size[i, j] = s.array.shape[d]
                coords[f"{name}_size"] = (("well", "field"), size)
    # physical coordinates: shared when every field sits on the same grid, else per field
    for name in slots[0].coords:
        # the longest field's coordinate covers the padded axis (fields differ only in size)
        first = max((s.coords[name] for s in slots), key=lambda v: v.size)
        values = first.values
        if all(s.coords[name] is first or np.array_equal(s.coords[name].values,
                                                         values[:s.coords[name].size])
               for s in slots):
            coords[name] = first
        else:  # fields at different stage positions: coordinates relative to each origin
            origin = np.full((len(wells), nf), np.nan)
            for i, w in enumerate(wells):
                for j, s in enumerate(by_well[w]):
                    origin[i, j] = s.coords[name].values[0]
            coords[name] = xr.Variable((name,), values - values[0],
                                       {**first.attrs, "comment": "relative to the field's "
                                        f"origin, see {name}_origin"})
            coords[f"{name}_origin"] = xr.Variable(("well", "field"), origin, first.attrs)
    for name, v in (shared_coords or {}).items():
        coords[name] = v
    ds = xr.Dataset({var_name: var}, coords=coords, attrs=dict(attrs or {}))
    return ds


def level_path(field: xr.DataTree, level: int | str) -> str:
    """The path of ``level`` (an index or a path) below a field node, per its multiscales."""
    datasets = field.attrs.get("ome", {}).get("multiscales", [{}])[0].get("datasets", [])
    paths = [d.get("path") for d in datasets]
    if isinstance(level, str):
        if level not in paths:
            raise HcsSelectionError(f"level {level!r} does not exist (levels: {paths})",
                                    field.path)
        return level
    if not -len(paths) <= level < len(paths):
        raise HcsSelectionError(f"level {level} does not exist ({len(paths)} levels)",
                                field.path)
    return paths[level]


def stack_tree(tree: xr.DataTree, field_paths: Sequence[str], wells: Sequence[str],
               level: int | str = 0, var_name: str = "image", pad: bool = False
               ) -> xr.Dataset:
    """The stacked Dataset of the given fields of ``tree`` (see :func:`stacked_dataset`).

    Fields whose arrays are still the plate's own (lazy or as opened) stack without reading;
    anything else (computed, sliced, in memory) is stacked with dask.
    """
    slots: list[FieldSlot] = []
    generic: list[tuple[str, str, xr.Variable]] = []
    dims: tuple[str, ...] = ()
    shared: dict[str, xr.Variable] = {}
    lname = ""
    for fp in field_paths:
        field = tree[fp]
        lname = level_path(field, level)
        node = field[lname]
        var = node.variable if isinstance(node, xr.DataArray) else node[var_name].variable
        well, fname = fp.rsplit("/", 1)
        own = {k: node.coords[k].variable for k in node.to_dataset(inherit=False).coords}
        if not slots and not generic:
            dims = tuple(var.dims)
            shared = {k: v.variable for k, v in field.coords.items() if k not in own}
        backend = backend_of(var)
        acq = field.attrs.get("acquisition")
        if backend is not None:
            slots.append(FieldSlot(well, fname, acq, backend, own))
        else:
            generic.append((well, fname, var))
    if generic:
        return _stack_generic(tree, field_paths, wells, lname, var_name)
    return stacked_dataset(slots, wells, dims, var_name, lname, shared_coords=shared, pad=pad)


def _stack_generic(tree: xr.DataTree, field_paths: Sequence[str], wells: Sequence[str],
                   lname: str, var_name: str) -> xr.Dataset:
    """Stack with xarray for trees whose arrays are no longer the stored ones."""
    per_well: dict[str, list[xr.DataArray]] = {w: [] for w in wells}
    for fp in field_paths:
        per_well[fp.rsplit("/", 1)[0]].append(tree[f"{fp}/{lname}"][var_name])
    counts = {w: len(v) for w, v in per_well.items()}
    if len(set(counts.values())) != 1:
        raise HcsMetadataError(
            "wells hold different numbers of fields "
            f"({dict(list(counts.items())[:5])}...): stacking computed or edited arrays "
            "needs the same number in every well (select fields first)", lname)
    kw: dict[str, Any] = {"coords": "minimal", "compat": "override", "join": "override"}
    rows = [xr.concat(v, dim="field", **kw) for v in per_well.values()]
    out = xr.concat(rows, dim="well", **kw)
    nf = next(iter(counts.values()))
    out = out.assign_coords(
        well=("well", np.asarray(list(per_well), dtype=object)),
        row=("well", np.asarray([w.split("/")[0] for w in per_well], dtype=object)),
        column=("well", np.asarray([w.split("/")[1] for w in per_well], dtype=object)),
        field=("field", np.arange(nf)))
    return out.to_dataset(name=var_name)
