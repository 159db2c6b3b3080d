"""The stacked view: every field of one level as one array ``(well, field, <image dims>)``.

Plate-wide computation wants one array, not thousands of nodes. Whatever a tree holds (the
plate's own lazy arrays however xarray wrapped them, arrays read into memory, arrays the user
computed or edited), the stack is made in two steps with one job each:

1. :func:`plan_stack` decides the layout and the coordinates from the fields' own metadata:
   which field sits in which ``(well, field)`` slot, the image shape (padded or not), the
   channel labels (refused when they differ, or aligned by label), each field's position
   (shared coordinates, or relative ones with ``<dim>_origin``). Nothing here looks at pixels,
   and no field is ever called by another's label or placed at another's position.
2. The data follows the plan: one :class:`StackedLevelArray` (an xarray ``BackendArray``)
   over the fields' sources, whose dask graph, when chunked, is one layer whatever the number
   of fields; only fields that are themselves dask graphs of the user's own making are
   stacked with dask operations.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from ._xarray_internals import node_coord, node_data_var
from .arrays import ZarrLevelArray, _DaskSource, dask_chunked
from .errors import HcsMetadataError, HcsSelectionError, HcsValueError
from .ngff.omero import MADE_UP
from .store import run_sync

__all__ = ["FieldEntry", "StackPlan", "StackedLevelArray", "backend_of", "level_path",
           "plan_stack", "stack_tree", "stacked_dataset", "well_field_coords", "CHANNELS"]

#: axes longer than this are not stacked (their positions would be compared element-wise)
MAX_STACKED_AXIS = 2**24
#: how fields whose labels (channel names) differ are stacked
Channels = Literal["exact", "union"]
CHANNELS = ("exact", "union")


# ----------------------------------------------------------------------------- sources


class VariableSource:
    """A field that is not (or no longer) the stored array: read through its Variable."""

    __slots__ = ("variable", "shape", "dtype")

    def __init__(self, variable: xr.Variable) -> None:
        self.variable = variable
        self.shape = variable.shape
        self.dtype = variable.dtype

    def read_inline(self, key: tuple[Any, ...]) -> np.ndarray:
        return self._getitem(key)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        # Variable indexing with 1-d integer arrays is outer indexing, as asked for here
        return np.asarray(self.variable[key].values)


def _full_key(key: Any, shape: tuple[int, ...]) -> bool:
    return all(isinstance(k, slice) and k.indices(n) == (0, n, 1)
               for k, n in zip(key, shape, strict=True))


_WRAPPERS = (indexing.ImplicitToExplicitIndexingAdapter, indexing.CopyOnWriteArray,
             indexing.MemoryCachedArray)


def _unwrap(data: Any, shape: tuple[int, ...]) -> ZarrLevelArray | None:
    """The stored array behind xarray's lazy wrappers, if they show all of it unchanged."""
    for _ in range(8):
        if isinstance(data, ZarrLevelArray):
            return data if data.shape == shape else None
        if isinstance(data, indexing.LazilyIndexedArray):
            inner = data.array
            if not _full_key(data.key.tuple, getattr(inner, "shape", ())):
                return None
        elif not isinstance(data, _WRAPPERS):
            return None  # in memory (read, edited) or some other lazy array
        data = data.array
    return None


def _dask_backend(data: Any) -> ZarrLevelArray | None:
    """The stored array a dask array reads, if it is nothing but a chunked read of it: ours
    (``open_plate``) or xarray's ``from_array`` of our lazy array (``chunks={}``, ``-1``,
    ``"auto"``, any chunking). Any operation on it adds a layer and is not recognised."""
    layers = data.dask.layers
    if len(layers) == 1 and data.name.startswith("ome-hcs-"):
        task = next(iter(dict(next(iter(layers.values()))).values()))
        src = task[1] if isinstance(task, tuple) and len(task) == 3 else None
        if isinstance(src, _DaskSource) and isinstance(src.backend, ZarrLevelArray):
            return src.backend if src.backend.shape == data.shape else None
        return None
    if len(layers) == 2 and data.name in layers:
        original = layers.get(f"original-{data.name}")
        if original is None:
            return None
        held = list(dict(original).values())
        if len(held) == 1:
            return _unwrap(held[0], data.shape)
    return None


def _is_dask(data: Any) -> bool:
    return hasattr(data, "dask") and hasattr(data, "chunks")


def backend_of(var: xr.Variable) -> ZarrLevelArray | None:
    """The zarr array behind ``var`` if ``var`` still shows all of it, unmodified; else None.

    Recognised whichever way the tree was opened: lazily (before any read), with
    ``chunks=...`` (xarray's dask arrays), or with :func:`~xarray_hcs.open_plate` (ours).
    """
    data: Any = var._data
    if _is_dask(data):
        return _dask_backend(data)
    return _unwrap(data, var.shape)


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class FieldEntry:
    """One field to stack: where it belongs, its array, and its coordinates.

    ``coords`` maps the variable's dimension names to the coordinate the field sees along
    them (its level's own, or inherited from the field: channels, time); a dimension
    without one is positional.
    """

    well: str
    field: str
    acquisition: int | None
    variable: xr.Variable
    coords: dict[str, xr.Variable]
    fill: Any = None

    @property
    def name(self) -> str:
        return f"{self.well}/{self.field}"


@dataclass(slots=True)
class StackPlan:
    """The layout of a stack, decided from metadata only (see the module docstring)."""

    wells: list[str]
    dims: tuple[str, ...]
    shape: tuple[int, ...]  # the image part
    dtype: np.dtype
    n_fields: int
    positions: list[tuple[int, int]]  # per entry: (well index, field index)
    #: per entry, per image dim: None (the field's own index) or an index into the field per
    #: stacked position (-1: the field has none there)
    maps: list[tuple[np.ndarray | None, ...]]
    fills: list[Any]  # per entry
    fill: Any  # of slots without a field
    coords: dict[str, Any] = field(default_factory=dict)

    @property
    def full_shape(self) -> tuple[int, ...]:
        return (len(self.wells), self.n_fields, *self.shape)


def _listing(items: Sequence[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def _is_label_coord(coord: xr.Variable | None) -> bool:
    """Labels (channel names, object ids) rather than positions: text, or numbers that are
    no physical coordinate (neither an ``axis`` nor ``units``: a function's own index)."""
    if coord is None:
        return False
    if coord.dtype.kind in "OUST":
        return True
    return coord.dtype.kind in "biu" and not (coord.attrs.get("axis") or
                                               coord.attrs.get("units"))


def _labels_of(coord: xr.Variable) -> tuple[Any, ...]:
    values = np.asarray(coord.values)
    if values.dtype.kind in "OUST":
        return tuple(str(v) for v in values.tolist())
    return tuple(values.tolist())


def _fill_of(value: Any, dtype: np.dtype) -> Any:
    if value is None:
        value = 0 if dtype.kind != "O" else None
    try:
        return np.asarray(value, dtype=dtype)[()]
    except (TypeError, ValueError, OverflowError):
        return np.zeros((), dtype=dtype)[()]


def plan_stack(entries: Sequence[FieldEntry], wells: Sequence[str], *, pad: bool | None = False,
               channels: Channels = "exact", where: str = "", dtype: np.dtype | None = None,
               layout: Sequence[Sequence[str]] | None = None) -> StackPlan:
    """Decide the layout and coordinates of a stack of ``entries`` (in well order).

    Parameters
    ----------
    entries
        The fields, grouped by well in plate order.
    wells
        Well paths in order (wells without fields still get a row, every slot absent).
    pad
        Fields of different sizes are padded at the end of each axis to the largest (with
        their fill value) instead of refused; ``<dim>_size`` coordinates give each extent.
        None: refused, and padding is not offered.
    channels
        Fields whose labels along a dimension (channel names) differ: ``"exact"`` refuses
        them, ``"union"`` aligns them by label; a label a field lacks reads as its fill value
        and ``channel_present`` (``(well, field, <dim>)``) is False there.
    where
        What the stack is of, for messages (``"level '0'"``).
    dtype
        Stack fields of any dtype as this one (map_fields' results); default: all fields
        must share one.
    layout
        The field paths of each well, in order, when some have no entry (map_fields'
        variables that some fields did not return); default: the entries'.

    Raises
    ------
    HcsMetadataError
        Fields whose dimensions, dtypes, sizes (without ``pad``), labels (without
        ``channels="union"``) or pixel spacing differ, or whose coordinates are missing in
        some fields; the message lists the fields.
    """
    if channels not in CHANNELS:
        raise HcsValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
    if not entries:
        raise HcsSelectionError("there are no fields to stack", None)
    first = entries[0]
    dims = tuple(str(d) for d in first.variable.dims)
    odd = [f"{e.name} {tuple(e.variable.dims)}" for e in entries
           if tuple(str(d) for d in e.variable.dims) != dims]
    if odd:
        raise HcsMetadataError(
            f"fields do not share the dimensions {dims} of {first.name} at {where}: "
            f"{_listing(odd)}; select fields whose axes agree", None)
    if dtype is None:
        dtype = first.variable.dtype
        odd = [f"{e.name} {e.variable.dtype}" for e in entries if e.variable.dtype != dtype]
        if odd:
            raise HcsMetadataError(
                f"fields do not have the same shape {first.variable.shape} and dtype "
                f"{dtype} at {where} (first field {first.name}); outliers: {_listing(odd)}. "
                "Select matching fields or levels first", None)
    dtype = np.dtype(dtype)
    label_dims = [d for d in dims if _is_label_coord(first.coords.get(d))
                  or any(_is_label_coord(e.coords.get(d)) for e in entries)]
    maps: list[list[np.ndarray | None]] = [[None] * len(dims) for _ in entries]
    coords: dict[str, Any] = {}
    union_sizes: dict[str, int] = {}
    presence: dict[str, list[np.ndarray]] = {}
    for d in label_dims:
        coords.update(_plan_labels(entries, dims.index(d), d, channels, maps, union_sizes,
                                   presence, where))
    # sizes: equal, or padded to the largest
    sized = [i for i, d in enumerate(dims) if d not in union_sizes]
    ref = first.variable.shape
    odd = [f"{e.name} {e.variable.shape} {e.variable.dtype}" for e in entries
           if any(e.variable.shape[i] != ref[i] for i in sized)]
    if odd and not pad:
        raise HcsMetadataError(
            f"fields do not have the same shape {ref} and dtype {dtype} at {where} (first "
            f"field {first.name}); outliers: {_listing(odd)}. Select matching fields or "
            "levels first" + ("" if pad is None else ", or pass pad=True to pad smaller "
                              "fields"), None)
    shape = tuple(union_sizes[d] if d in union_sizes else
                  max(e.variable.shape[i] for e in entries) for i, d in enumerate(dims))
    # the layout
    if layout is None:
        by_well: dict[str, list[str]] = {w: [] for w in wells}
        for e in entries:
            if e.well not in by_well:
                raise HcsSelectionError(f"field {e.name} is not in a stacked well", None)
            by_well[e.well].append(e.field)
        layout = [by_well[w] for w in wells]
    slot = {f"{w}/{f}": (wi, fi) for wi, (w, fs) in enumerate(zip(wells, layout, strict=True))
            for fi, f in enumerate(fs)}
    nf = max((len(fs) for fs in layout), default=0)
    positions = [slot[e.name] for e in entries]
    coords.update(well_field_coords(list(wells), layout))
    acq = np.full((len(wells), nf), -1, dtype=np.int64)
    for k, e in enumerate(entries):
        acq[positions[k]] = -1 if e.acquisition is None else e.acquisition
    coords["acquisition"] = (("well", "field"), acq)
    for i in sized:
        if any(e.variable.shape[i] != shape[i] for e in entries):
            size = np.zeros((len(wells), nf), dtype=np.int64)
            for k, e in enumerate(entries):
                size[positions[k]] = e.variable.shape[i]
            coords[f"{dims[i]}_size"] = (("well", "field"), size)
    for d, rows in presence.items():
        present = np.zeros((len(wells), nf, union_sizes[d]), dtype=bool)
        for k, row in enumerate(rows):
            present[positions[k]] = row
        coords["channel_present" if len(presence) == 1 else f"{d}_present"] = (
            ("well", "field", d), present)
    for i, d in enumerate(dims):
        if d not in label_dims:
            coords.update(_plan_positions(entries, i, d, positions, (len(wells), nf), where))
    fills = [_fill_of(e.fill, dtype) for e in entries]
    common = fills[0]
    return StackPlan(list(wells), dims, shape, dtype, nf, positions,
                     [tuple(m) for m in maps], fills, common, coords)


def _plan_labels(entries: Sequence[FieldEntry], axis: int, dim: str, channels: Channels,
                 maps: list[list[np.ndarray | None]], union_sizes: dict[str, int],
                 presence: dict[str, list[np.ndarray]], where: str) -> dict[str, Any]:
    """The coordinate of a label dimension (channels), and the fields' maps onto it."""
    lacking = [e.name for e in entries if e.coords.get(dim) is None]
    if lacking:
        raise HcsMetadataError(f"some fields have no labels along {dim!r}: "
                               f"{_listing(lacking)}", None)
    labels: list[tuple[str, ...]] = []
    cache: dict[int, tuple[str, ...]] = {}
    for e in entries:
        data = e.coords[dim]._data
        got = cache.get(id(data))
        if got is None:
            got = cache[id(data)] = _labels_of(e.coords[dim])
        labels.append(got)
    first = entries[0].coords[dim]
    distinct = list(dict.fromkeys(labels))
    if channels == "exact":
        if len(distinct) > 1:
            groups = [f"[{', '.join(map(str, ls))}] in " + _listing(
                [e.name for e, got in zip(entries, labels, strict=True) if got == ls], 3)
                for ls in distinct]
            raise HcsMetadataError(
                f"fields have different labels along {dim!r} at {where}: "
                f"{'; '.join(groups[:6])}{'; ...' if len(groups) > 6 else ''}. Stacking "
                "them by position would call one channel by another's name: select fields "
                "that agree, or pass channels='union' to align them by label (a channel a "
                "field lacks is filled and marked in channel_present)", None)
        return {dim: first}
    if len(distinct) > 1:
        for e in entries:
            made_up = e.coords[dim].attrs.get(MADE_UP)
            if made_up:
                raise HcsMetadataError(
                    f"field {e.name} has channels without a label of their own (no omero "
                    f"label, or a repeated one), called {list(made_up)} here: aligning them "
                    "by label with other fields' channels would be a guess. Select fields "
                    "with the same channels, or give every channel its own label", None)
    union = list(dict.fromkeys(lab for ls in distinct for lab in ls))
    rows: list[np.ndarray] = []
    plans: dict[tuple[str, ...], tuple[np.ndarray | None, np.ndarray]] = {}
    for k, ls in enumerate(labels):
        hit = plans.get(ls)
        if hit is None:
            pos = {lab: j for j, lab in enumerate(ls)}
            idx = np.array([pos.get(lab, -1) for lab in union], dtype=np.int64)
            identity = len(ls) == len(union) and bool(np.all(idx == np.arange(len(union))))
            hit = plans[ls] = (None if identity else idx, idx >= 0)
        maps[k][axis] = hit[0]
        rows.append(hit[1])
    union_sizes[dim] = len(union)
    presence[dim] = rows
    kind = np.asarray(first.values).dtype.kind
    values = np.asarray(union, dtype=object) if kind in "OUST" else np.asarray(union)
    attrs = {k: v for k, v in first.attrs.items() if k != MADE_UP}
    return {dim: xr.Variable((dim,), values, attrs)}


def _plan_positions(entries: Sequence[FieldEntry], axis: int, dim: str,
                    positions: list[tuple[int, int]], grid: tuple[int, int], where: str
                    ) -> dict[str, Any]:
    """The coordinate of a physical dimension: shared by every field, or relative to each
    field's origin (``<dim>_origin``) when the fields sit at different positions on grids
    of the same spacing; in the unit of the largest field, the others converted exactly
    (micrometer beside nanometer); anything else is refused."""
    from .ngff.units import conversion

    have = [e.coords.get(dim) for e in entries]
    if all(c is None for c in have):
        return {}
    lacking = [e.name for e, c in zip(entries, have, strict=True) if c is None]
    if lacking:
        raise HcsMetadataError(f"some fields have no coordinate along {dim!r}: "
                               f"{_listing(lacking)}", None)
    ref_k = max(range(len(entries)), key=lambda k: entries[k].variable.shape[axis])
    ref_var = have[ref_k]
    if entries[ref_k].variable.shape[axis] > MAX_STACKED_AXIS:
        raise HcsMetadataError(
            f"{entries[ref_k].name} is {entries[ref_k].variable.shape[axis]} long along "
            f"{dim!r}: a stacked view takes at most {MAX_STACKED_AXIS} (select a level or a "
            "region of it first)", None)
    unit = ref_var.attrs.get("units")
    factors = [conversion(c.attrs.get("units"), unit) for c in have]
    odd = [f"{e.name} ({c.attrs.get('units') or 'no unit'})"
           for e, c, f in zip(entries, have, factors, strict=True) if f is None]
    if odd:
        raise HcsMetadataError(
            f"fields state their {dim!r} positions in units that do not convert to "
            f"{unit or 'no unit'!r} ({entries[ref_k].name}): {_listing(odd)}; one stacked "
            "coordinate cannot describe them", None)
    ref = np.asarray(ref_var.values)
    if ref.dtype.kind not in "iuf" or ref.ndim != 1:
        raise HcsMetadataError(f"coordinate {dim!r} of {entries[ref_k].name} is neither "
                               "numbers nor labels", None)
    ref = ref.astype(np.float64)
    converted = any(f != 1.0 for f in factors)

    def values(k: int) -> np.ndarray:
        v = np.asarray(have[k].values, dtype=np.float64)
        return v * factors[k] if factors[k] != 1.0 else v

    shared = not converted
    if shared:
        for c in have:
            if c is ref_var or c._data is ref_var._data:
                continue
            v = np.asarray(c.values, dtype=np.float64)
            if not np.array_equal(v, ref[:v.size]):
                shared = False
                break
    if shared:
        return {dim: ref_var}
    rel = ref - ref[0] if ref.size else ref
    step = float(np.max(np.abs(np.diff(ref)))) if ref.size > 1 else 1.0
    origin = np.full(grid, np.nan)
    odd = []
    for k in range(len(entries)):
        v = values(k)
        if not v.size:
            continue
        if not np.allclose(v - v[0], rel[:v.size], rtol=1e-9, atol=1e-9 * step):
            odd.append(entries[k].name)
            continue
        origin[positions[k]] = v[0]
    if odd:
        raise HcsMetadataError(
            f"fields differ in pixel spacing along {dim!r} at {where} (unlike "
            f"{entries[ref_k].name}): {_listing(odd)}; one stacked coordinate cannot "
            "describe them: select fields of one pixel size", None)
    attrs = dict(ref_var.attrs)
    if converted and np.allclose(origin[~np.isnan(origin)], ref[0], rtol=1e-9,
                                 atol=1e-9 * step):
        # the same place in other units: one shared coordinate (in the reference's unit)
        return {dim: ref_var}
    return {dim: xr.Variable((dim,), rel, {**attrs, "comment": "relative to the field's "
                                           f"origin, see {dim}_origin"}),
            f"{dim}_origin": xr.Variable(("well", "field"), origin, attrs)}


def well_field_coords(wells: Sequence[str], fields: Sequence[Sequence[str]]
                      ) -> dict[str, Any]:
    """The coordinates of a ``(well, field)`` layout: ``well``, ``row`` and ``column`` on
    ``well``; ``field`` (position in the well); ``field_path`` and ``present`` on
    ``(well, field)``, for wells holding ``fields[i]`` (padded to the longest)."""
    nf = max((len(f) for f in fields), default=0)
    field_path = np.full((len(wells), nf), "", dtype=object)
    for i, names in enumerate(fields):
        field_path[i, :len(names)] = names
    # fixed-width strings, not objects: dask can chunk them ("auto" included), as
    # xr.open_dataset(..., chunks=...) does with every variable it is given
    return {
        "well": ("well", np.asarray(wells, dtype=object)),
        "row": ("well", np.asarray([w.split("/")[0] for w in wells], dtype=str)),
        "column": ("well", np.asarray([w.split("/")[1] for w in wells], dtype=str)),
        "field": ("field", np.arange(nf)),
        "field_path": (("well", "field"), field_path.astype(str)),
        "present": (("well", "field"), field_path != ""),
    }


# ----------------------------------------------------------------------------- reading


@dataclass(slots=True)
class _Slot:
    source: Any  # ZarrLevelArray or VariableSource
    maps: tuple[np.ndarray | None, ...]
    fill: Any

    @property
    def plain(self) -> bool:
        return all(m is None for m in self.maps)


class StackedLevelArray(BackendArray):
    """``(well, field, *image)`` over a grid of field sources; absent fields read as fill."""

    def __init__(self, plan: StackPlan, sources: Sequence[Any]) -> None:
        self.shape = plan.full_shape
        self.dtype = np.dtype(plan.dtype)
        self.fill = plan.fill
        self.grid: list[list[_Slot | None]] = [[None] * plan.n_fields for _ in plan.wells]
        self.sources = list(sources)
        for (wi, fi), src, maps, fill in zip(plan.positions, sources, plan.maps, plan.fills,
                                             strict=True):
            self.grid[wi][fi] = _Slot(src, maps, fill)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem)

    def read_inline(self, key: tuple[Any, ...]) -> np.ndarray:
        return self._getitem(key)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        wsel = np.arange(self.shape[0])[key[0]]
        fsel = np.arange(self.shape[1])[key[1]]
        rest = key[2:]
        image = self.shape[2:]
        w_iter = np.atleast_1d(wsel)
        f_iter = np.atleast_1d(fsel)
        out_img_shape = _outer_shape(image, rest)
        out = np.empty((len(w_iter), len(f_iter), *out_img_shape), dtype=self.dtype)
        todo = []
        for i, w in enumerate(w_iter):
            for j, f in enumerate(f_iter):
                slot = self.grid[w][f]
                if slot is None:
                    out[i, j] = self.fill
                    continue
                src = slot.source
                if not slot.plain or src.shape != image:  # padded, or channels aligned
                    out[i, j] = _mapped_read(slot, rest, image, out_img_shape, self.dtype)
                    continue
                data = src.read_inline(rest)  # local files: in this thread, in parallel
                if data is None:
                    todo.append(((i, j), src))
                else:
                    out[i, j] = np.asarray(data).reshape(out_img_shape)
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


def _as_index(positions: np.ndarray) -> slice | np.ndarray:
    """Increasing consecutive positions as a slice (a cheap read), else the array."""
    if positions.size and np.all(np.diff(positions) == 1):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _mapped_read(slot: _Slot, key: tuple[Any, ...], full: tuple[int, ...],
                 out_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``key`` of one field in the stack's frame: its own pixels where it has them (padding,
    aligned labels), its fill value elsewhere."""
    out = np.full(out_shape, slot.fill, dtype=dtype)
    own = slot.source.shape
    inner: list[Any] = []
    place: list[Any] = []
    for n, k, m, size in zip(full, key, slot.maps, own, strict=True):
        picks = np.arange(n)[k]
        idx = np.asarray(picks if m is None else m[picks])
        valid = (idx >= 0) & (idx < size)
        if np.ndim(picks) == 0:
            if not bool(valid):
                return out  # the selection lies wholly where the field has nothing
            inner.append(int(idx))
            continue
        keep = np.flatnonzero(valid)
        if not keep.size:
            return out
        inner.append(_as_index(idx[keep]))
        place.append(_as_index(keep))
    data = np.asarray(slot.source._getitem(tuple(inner)))
    if sum(isinstance(p, np.ndarray) for p in place) > 1:  # outer placement
        grids = [np.arange(p.start, p.stop) if isinstance(p, slice) else p for p in place]
        out[np.ix_(*grids)] = data
    else:
        out[tuple(place)] = data
    return out


async def _read_all(arrays: Sequence[ZarrLevelArray], key: tuple[Any, ...]) -> list[Any]:
    import asyncio

    return await asyncio.gather(*(a.aread(key) for a in arrays))


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


# ----------------------------------------------------------------------------- assembly


def _image_chunks(entry: FieldEntry, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk edges for the image part: the first field's dask chunks if regular, else its
    stored chunks, else whole."""
    data = entry.variable._data
    chunks: Any = None
    if _is_dask(data) and all(len(set(c[:-1])) <= 1 for c in data.chunks):
        chunks = data.chunksize
    if chunks is None:
        enc = entry.variable.encoding.get("preferred_chunks") or {}
        chunks = [enc.get(d) for d in entry.variable.dims]
        if any(c is None for c in chunks):
            stored = entry.variable.encoding.get("chunks")
            chunks = stored if stored is not None and len(stored) == len(shape) else shape
    return tuple(max(1, min(int(c), n)) if n else 1 for c, n in zip(chunks, shape,
                                                                    strict=True))


def _token(plan: StackPlan, sources: Sequence[Any], chunks: tuple[int, ...]) -> str | None:
    """A name for the stack's dask graph: from the stored arrays it reads, or None (then a
    unique one) when it holds data only this process has."""
    h = hashlib.blake2b(digest_size=12)
    for src, maps, fill, pos in zip(sources, plan.maps, plan.fills, plan.positions,
                                    strict=True):
        if not isinstance(src, ZarrLevelArray):
            return None
        h.update(f"{src.plate_store.source}\0{src.plate_store.root}\0{src.info.path}\0"
                 f"{pos}\0{fill!r}\0".encode())
        for m in maps:
            h.update(b"-" if m is None else m.tobytes())
    h.update(f"{plan.full_shape}{plan.dtype}{chunks}{plan.fill!r}".encode())
    return h.hexdigest()


def _dask_assembly(plan: StackPlan, entries: Sequence[FieldEntry], sources: Sequence[Any]
                   ) -> Any:
    """The stack with dask operations, for fields that are the user's own dask graphs."""
    import dask.array as da

    from .arrays import dask_array

    grid: list[list[Any]] = [[None] * plan.n_fields for _ in plan.wells]
    for k, (e, src) in enumerate(zip(entries, sources, strict=True)):
        data = e.variable._data
        if isinstance(src, ZarrLevelArray):
            a = dask_array(src, f"stack\0{src.plate_store.source}\0{src.info.path}",
                           None, label=src.info.path)
        elif _is_dask(data):
            a = data
        else:
            a = da.from_array(np.asarray(e.variable.values), chunks=-1)
        a = a.astype(plan.dtype, copy=False)
        fill = plan.fills[k]
        for axis, (m, n) in enumerate(zip(plan.maps[k], plan.shape, strict=True)):
            if m is not None:
                taken = da.take(a, np.where(m >= 0, m, 0), axis=axis)
                mask = (m >= 0).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
                a = da.where(mask, taken, fill)
            elif a.shape[axis] < n:
                widths = [(0, n - a.shape[axis]) if i == axis else (0, 0)
                          for i in range(a.ndim)]
                a = da.pad(a, widths, mode="constant", constant_values=fill)
        grid[plan.positions[k][0]][plan.positions[k][1]] = a
    chunks = _image_chunks(entries[0], plan.shape)
    rows = [da.stack([a if a is not None else da.full(plan.shape, plan.fill,
                                                      dtype=plan.dtype, chunks=chunks)
                      for a in row]) for row in grid]
    return da.stack(rows)


def _dask_chunks(chunks: Any, dims: tuple[str, ...], preferred: tuple[int, ...]) -> Any:
    """``chunks`` (``{}``, ``-1``, ``"auto"``, a dict by dimension name) for dask."""
    if isinstance(chunks, dict):
        for d, edge in chunks.items():
            if edge is not None and edge != "auto" and (
                    not isinstance(edge, int | np.integer) or isinstance(edge, bool)
                    or edge < -1 or edge == 0):
                raise HcsValueError(f"chunks[{d!r}] must be an integer >= 1, -1 (the whole "
                                    f"axis) or 'auto', got {edge!r}")
        unknown = set(chunks) - set(dims)
        if unknown:
            raise HcsSelectionError(f"chunks names dimensions {sorted(unknown)} the stack "
                                    f"does not have (it has {list(dims)})", None)
        return tuple(chunks.get(d, c) for d, c in zip(dims, preferred, strict=True))
    if not (chunks == -1 or chunks == "auto") or isinstance(chunks, bool):
        raise HcsValueError(f"chunks must be {{}} (a block per well), -1, 'auto' or a dict by "
                            f"dimension, got {chunks!r}")
    return chunks


def stacked_dataset(entries: Sequence[FieldEntry], wells: Sequence[str], var_name: str,
                    where: str, *, pad: bool = False, channels: Channels = "exact",
                    chunks: Any = None, attrs: dict[str, Any] | None = None) -> xr.Dataset:
    """The stacked Dataset of ``entries`` (fields in well order); see :func:`plan_stack`.

    The result is lazy either way. ``chunks=None`` follows the fields: a dask array of one
    layer if they were dask arrays (``chunks=`` when opening,
    :func:`~xarray_hcs.open_plate`), else an xarray lazy array. ``chunks={}`` (a block per
    well, the fields' stored chunks), ``-1``, ``"auto"`` or a dict by dimension make it a
    dask array of one layer in any case. Fields that are dask graphs of the user's own
    (computed, edited) are stacked with dask operations.
    """
    plan = plan_stack(entries, wells, pad=pad, channels=channels, where=where)
    sources: list[Any] = []
    dask_in = generic = False
    for e in entries:
        backend = backend_of(e.variable)
        is_dask = _is_dask(e.variable._data)
        dask_in |= is_dask
        if backend is not None:
            sources.append(backend)
        elif is_dask:
            generic = True
            sources.append(None)
        else:
            sources.append(VariableSource(e.variable))
    image_chunks = _image_chunks(entries[0], plan.shape)
    full_chunks = (1, plan.n_fields, *image_chunks)
    full_dims = ("well", "field", *plan.dims)
    wanted = None if chunks is None else _dask_chunks(chunks, full_dims, full_chunks)
    if generic:
        data = _dask_assembly(plan, entries, sources)
        if wanted is not None:
            data = data.rechunk(wanted)
    else:
        stacked = StackedLevelArray(plan, sources)
        if dask_in or wanted is not None:
            token = _token(plan, sources, image_chunks) or uuid.uuid4().hex
            data = dask_chunked(stacked, token, full_chunks if wanted is None else wanted,
                                label="stack")
        else:
            data = indexing.LazilyIndexedArray(stacked)
    # a dask block holds all fields of one well: the natural unit of screening analysis, and
    # their chunks are read concurrently in one go
    enc = {"preferred_chunks": dict(zip(full_dims, full_chunks, strict=True)),
           "chunks": full_chunks, "dtype": plan.dtype, "fill_value": plan.fill}
    var = xr.Variable(full_dims, data, encoding=enc)
    return xr.Dataset({var_name: var}, coords=plan.coords, attrs=dict(attrs or {}))


# ----------------------------------------------------------------------------- from a tree


def level_path(field: xr.DataTree, level: int | str) -> str:
    """The path of ``level`` (an index or a path) below a field node, per its multiscales."""
    datasets = field.attrs.get("ome", {}).get("multiscales", [{}])[0].get("datasets", [])
    paths = [d.get("path") for d in datasets]
    if isinstance(level, str):
        if level not in paths:
            raise HcsSelectionError(f"level {level!r} does not exist (levels: {paths})",
                                    field.path)
        return level
    if isinstance(level, bool) or not isinstance(level, int | np.integer):
        raise HcsSelectionError(f"level must be an index or a level path, got {level!r}",
                                field.path)
    if not -len(paths) <= level < len(paths):
        raise HcsSelectionError(f"level {level} does not exist ({len(paths)} levels)",
                                field.path)
    return paths[level]


def field_entry(tree: xr.DataTree, fp: str, level: int | str, var_name: str
                ) -> tuple[FieldEntry, str]:
    """The :class:`FieldEntry` of field ``fp`` at ``level``, and the level's path."""
    from .metadata import node_at

    fnode = node_at(tree, fp)
    if fnode is None:
        raise HcsSelectionError("no such field in the tree", f"/{fp}")
    lname = level_path(fnode, level)
    node = node_at(fnode, lname)
    var = node_data_var(node, var_name) if node is not None else None
    if var is None:
        raise HcsSelectionError(f"level {lname!r} has no {var_name!r} variable",
                                f"/{fp}/{lname}")
    coords = {}
    for d in var.dims:
        found = node_coord(node, str(d))
        if found is not None:
            coords[str(d)] = found[0]
    well, fname = fp.rsplit("/", 1)
    acq = fnode.attrs.get("acquisition")
    return FieldEntry(well, fname, acq, var, coords, fill_of(var, fnode, lname)), lname


def fill_of(var: xr.Variable, image: xr.DataTree, level: str) -> Any:
    """The fill value of a level: its array's, else the one the image recorded when it was
    read (a level computed anew keeps its stored fill value), else None."""
    fill = var.encoding.get("fill_value")
    if fill is None:
        fill = (image.encoding.get("fill_values") or {}).get(level)
    return fill


def check_level_index(tree: xr.DataTree, field_paths: Sequence[str], level: int | str
                      ) -> None:
    """A negative level index counts from each pyramid's end: refuse it where pyramids differ
    in length, since it would name levels of different resolutions (the coarsest of a
    3-level field beside the middle of a 4-level one)."""
    if isinstance(level, str) or isinstance(level, bool) or level >= 0:
        return
    from .metadata import node_at

    counts: dict[int, list[str]] = {}
    for fp in field_paths:
        fnode = node_at(tree, fp)
        ms = (fnode.attrs.get("ome", {}).get("multiscales") or [{}])[0] if fnode else {}
        counts.setdefault(len(ms.get("datasets", [])), []).append(fp)
    if len(counts) > 1:
        groups = "; ".join(f"{n} levels: {_listing(fps, 3)}" for n, fps in counts.items())
        raise HcsMetadataError(
            f"level {level} names different levels of fields whose pyramids differ in length "
            f"({groups}): name the level by its path or by a non-negative index", None)


def stack_tree(tree: xr.DataTree, field_paths: Sequence[str], wells: Sequence[str],
               level: int | str = 0, var_name: str = "image", pad: bool = False,
               channels: Channels = "exact", chunks: Any = None) -> xr.Dataset:
    """The stacked Dataset of the given fields of ``tree`` (see :func:`stacked_dataset`)."""
    check_level_index(tree, field_paths, level)
    entries = []
    names = set()
    for fp in field_paths:
        entry, lname = field_entry(tree, fp, level, var_name)
        entries.append(entry)
        names.add(lname)
    where = f"level {sorted(names)[0]!r}" if len(names) == 1 else f"levels {sorted(names)}"
    return stacked_dataset(entries, wells, var_name, where, pad=pad, channels=channels,
                           chunks=chunks)
