"""``dt.hcs.map_fields``: a function of one field, run over every field with dask.

Each field becomes one dask task that loads the field's level (from the store, in whichever
worker runs it: the arrays pickle with their store, never their pixels) and calls the
function. The results are collected by kind: numbers and labelled arrays into one Dataset
indexed ``(well, field)``, DataFrames into one DataFrame with ``row``, ``column`` and
``field`` columns. The same code runs on dask's threads, processes or a
``distributed.Client``: the default scheduler is whatever dask would use.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import HcsMetadataError, HcsSelectionError, HcsValueError
from .ngff.omero import MADE_UP

__all__ = ["map_fields"]


def _field_input(tree: xr.DataTree, fp: str, level: int | str, variable: str | None
                 ) -> xr.Dataset | xr.DataArray:
    from .stack import level_path

    field = tree[fp]
    node = field[level_path(field, level)]
    ds = node.to_dataset()
    if variable is None:
        return ds
    if variable not in ds.data_vars:
        raise HcsSelectionError(f"level has no variable {variable!r}", node.path)
    return ds[variable]


def _call(func: Callable[..., Any], obj: Any, load: bool, kwargs: Mapping[str, Any]) -> Any:
    if load:
        obj = obj.load()
    return func(obj, **kwargs)


def map_fields(tree: xr.DataTree, func: Callable[..., Any], level: int | str = 0,
               variable: str | None = "image", load: bool = True, compute: bool = True,
               field_paths: Sequence[str] | None = None, channels: str = "exact",
               **kwargs: Any) -> Any:
    """See :meth:`xarray_hcs.accessor.HcsAccessor.map_fields`."""
    import dask

    from .stack import CHANNELS, check_level_index

    if channels not in CHANNELS:
        raise HcsValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
    paths = list(tree.hcs.field_paths if field_paths is None else field_paths)
    check_level_index(tree, paths, level)
    inputs = [_field_input(tree, fp, level, variable) for fp in paths]
    acquisitions = [tree[fp].attrs.get("acquisition") for fp in paths]
    # channel names made up per field (no labels of their own): never aligned by name
    made_up = [{str(k): list(c.attrs[MADE_UP]) for k, c in tree[fp].coords.items()
                if MADE_UP in c.attrs} for fp in paths]
    run = uuid.uuid4().hex[:8]  # task names say which field, and never collide across calls
    tasks = [dask.delayed(_call, pure=False)(func, obj, load, kwargs,
                                             dask_key_name=f"map_fields-{run}-{fp}")
             for fp, obj in zip(paths, inputs, strict=True)]
    if not compute:
        return dask.delayed(_collect, pure=False)(tree.hcs.wells, paths, tasks, channels,
                                                  acquisitions, made_up)
    (results,) = dask.compute(tasks)
    return _collect(tree.hcs.wells, paths, results, channels, acquisitions, made_up)


def _collect(wells: Sequence[str], paths: Sequence[str], results: Sequence[Any],
             channels: str = "exact", acquisitions: Sequence[int | None] | None = None,
             made_up: Sequence[dict[str, list[str]]] | None = None) -> Any:
    kinds = {_kind(r) for r in results}
    if not results:
        return xr.Dataset()
    if kinds == {"frame"}:
        return _frames(paths, results)
    if "frame" in kinds:
        raise HcsValueError("the function returned DataFrames for some fields and other values "
                       "for others: return one kind")
    return _dataset(wells, paths, results, channels, acquisitions, made_up)


def _kind(r: Any) -> str:
    if isinstance(r, pd.DataFrame):
        return "frame"
    return "array"


def _as_vars(r: Any) -> dict[str, xr.DataArray]:
    if isinstance(r, xr.Dataset):
        return {str(k): v for k, v in r.data_vars.items()}
    if isinstance(r, Mapping):
        return {str(k): _as_array(v) for k, v in r.items()}
    if isinstance(r, xr.DataArray):
        return {str(r.name) if r.name is not None else "result": r}
    if isinstance(r, pd.Series):
        return {str(r.name) if r.name is not None else "result": xr.DataArray(r)}
    return {"result": _as_array(r)}


def _as_array(v: Any) -> xr.DataArray:
    if isinstance(v, xr.DataArray):
        return v
    if isinstance(v, pd.Series):
        return xr.DataArray(v)
    arr = np.asarray(v)
    return xr.DataArray(arr, dims=[f"dim_{i}" for i in range(arr.ndim)])


def _result_dtype(arrays: Sequence[xr.DataArray]) -> np.dtype:
    """Numbers as floats (NaN marks what a field did not return), anything else as objects."""
    dtype = np.result_type(*(a.dtype for a in arrays))
    if dtype.kind in "iub":
        dtype = np.result_type(dtype, np.float64)
    return dtype if dtype.kind in "fc" else np.dtype(object)


def _dataset(wells: Sequence[str], paths: Sequence[str], results: Sequence[Any],
             channels: str = "exact", acquisitions: Sequence[int | None] | None = None,
             made_up: Sequence[dict[str, list[str]]] | None = None) -> xr.Dataset:
    """Per-field values stacked into ``(well, field, ...)``, with the stacked view's
    coordinates and its rules (:func:`~xarray_hcs.stack.plan_stack`): labels along a
    dimension (channels) must agree or are aligned by label, positions are shared or
    relative to each field's origin. Absent fields, and variables a field did not return,
    are NaN."""
    from .stack import FieldEntry, StackedLevelArray, VariableSource, plan_stack

    per_well: dict[str, list[str]] = {w: [] for w in wells}  # wells without fields too
    for fp in paths:
        w, f = fp.rsplit("/", 1)
        per_well.setdefault(w, []).append(f)
    well_names = list(per_well)
    layout = [per_well[w] for w in well_names]
    acq = dict(zip(paths, acquisitions or [None] * len(paths), strict=True))
    invented = dict(zip(paths, made_up or [{}] * len(paths), strict=True))
    as_vars = [_as_vars(r) for r in results]
    names = list(dict.fromkeys(k for v in as_vars for k in v))
    out: dict[str, xr.DataArray] = {}
    coords: dict[str, Any] = {}
    for name in names:
        got = [(fp, v[name]) for fp, v in zip(paths, as_vars, strict=True) if name in v]
        dtype = _result_dtype([a for _, a in got])
        fill = np.nan if dtype.kind in "fc" else None
        entries = []
        for fp, a in got:
            w, f = fp.rsplit("/", 1)
            var = a.variable.astype(dtype) if a.dtype != dtype else a.variable
            dim_coords = {str(d): _marked(a.coords[d].variable, invented[fp].get(str(d)))
                          for d in a.dims if d in a.coords}
            entries.append(FieldEntry(w, f, acq[fp], var, dim_coords, fill))
        try:
            plan = plan_stack(entries, well_names, pad=None, channels=channels,  # type: ignore
                              where=f"the function's {name!r}", dtype=dtype, layout=layout)
        except HcsMetadataError as e:
            raise HcsMetadataError(f"{e.message} (return the same shape for every field)"
                                   if "same shape" in e.message else e.message) from None
        stacked = StackedLevelArray(plan, [VariableSource(e.variable) for e in entries])
        data = stacked._getitem(tuple(slice(None) for _ in plan.full_shape))
        first = got[0][1]
        # other coordinates (scalars, non-index) only where every field returned the same
        extra = {k: c.variable for k, c in first.coords.items()
                 if k not in first.dims and set(c.dims) <= set(first.dims)
                 and all(k in a.coords and a.coords[k].variable.equals(c.variable)
                         for _, a in got)}
        out[name] = xr.DataArray(data, dims=("well", "field", *plan.dims),
                                 coords=extra, attrs=first.attrs)
        for k, v in plan.coords.items():
            coords.setdefault(k, v)
    return xr.Dataset(out).assign_coords(coords)


def _marked(coord: xr.Variable, made_up: list[str] | None) -> xr.Variable:
    """``coord`` with the field's made-up labels it holds listed in its attributes (a
    function's result may rebuild the coordinate without them)."""
    if not made_up or coord.attrs.get(MADE_UP):
        return coord
    hit = [lab for lab in map(str, np.asarray(coord.values).ravel()) if lab in made_up]
    if not hit:
        return coord
    out = coord.copy(deep=False)
    out.attrs = {**coord.attrs, MADE_UP: hit}
    return out


def _frames(paths: Sequence[str], results: Sequence[pd.DataFrame]) -> pd.DataFrame:
    from .plate_tables import _labelled

    keys = [(*fp.split("/"), None) for fp in paths]
    blocks = [([i], [len(df)], df) for i, df in enumerate(results)]
    return _labelled(keys, blocks, with_acq=False)  # type: ignore[arg-type]
