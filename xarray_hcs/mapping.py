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

from .errors import HcsError

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
        raise HcsError(f"level has no variable {variable!r}", node.path)
    return ds[variable]


def _call(func: Callable[..., Any], obj: Any, load: bool, kwargs: Mapping[str, Any]) -> Any:
    if load:
        obj = obj.load()
    return func(obj, **kwargs)


def map_fields(tree: xr.DataTree, func: Callable[..., Any], level: int | str = 0,
               variable: str | None = "image", load: bool = True, compute: bool = True,
               field_paths: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """See :meth:`xarray_hcs.accessor.HcsAccessor.map_fields`."""
    import dask

    paths = list(tree.hcs.field_paths if field_paths is None else field_paths)
    inputs = [_field_input(tree, fp, level, variable) for fp in paths]
    run = uuid.uuid4().hex[:8]  # task names say which field, and never collide across calls
    tasks = [dask.delayed(_call, pure=False)(func, obj, load, kwargs,
                                             dask_key_name=f"map_fields-{run}-{fp}")
             for fp, obj in zip(paths, inputs, strict=True)]
    if not compute:
        return dask.delayed(_collect, pure=False)(tree.hcs.wells, paths, tasks)
    (results,) = dask.compute(tasks)
    return _collect(tree.hcs.wells, paths, results)


def _collect(wells: Sequence[str], paths: Sequence[str], results: Sequence[Any]) -> Any:
    kinds = {_kind(r) for r in results}
    if not results:
        return xr.Dataset()
    if kinds == {"frame"}:
        return _frames(paths, results)
    if "frame" in kinds:
        raise HcsError("the function returned DataFrames for some fields and other values "
                       "for others: return one kind")
    return _dataset(wells, paths, results)


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


def _dataset(wells: Sequence[str], paths: Sequence[str], results: Sequence[Any]
             ) -> xr.Dataset:
    """Per-field values stacked into ``(well, field, ...)``; absent fields are NaN."""
    per_well: dict[str, list[int]] = {w: [] for w in wells}
    for i, fp in enumerate(paths):
        per_well.setdefault(fp.rsplit("/", 1)[0], []).append(i)
    well_names = [w for w, idx in per_well.items() if idx]
    n_field = max(len(idx) for idx in per_well.values())
    pos = {i: (wi, fi) for wi, w in enumerate(well_names) for fi, i in enumerate(per_well[w])}
    as_vars = [_as_vars(r) for r in results]
    names = list(dict.fromkeys(k for v in as_vars for k in v))
    out: dict[str, xr.DataArray] = {}
    for name in names:
        first = next(v[name] for v in as_vars if name in v)
        template = first.variable
        shape = (len(well_names), n_field, *template.shape)
        dtype = np.result_type(template.dtype, np.float64) if template.dtype.kind in "iub" \
            else template.dtype
        if dtype.kind not in "fc":
            dtype = np.dtype(object)
        data = np.full(shape, np.nan if dtype.kind in "fc" else None, dtype=dtype)
        for i, v in enumerate(as_vars):
            if name not in v:
                continue
            arr = v[name]
            if arr.dims != first.dims or arr.shape != first.shape:
                raise HcsError(f"the function returned {name!r} with dims {arr.dims} "
                               f"{arr.shape} for {paths[i]} but {first.dims} {first.shape} "
                               "for the first field: return the same shape for every field")
            wi, fi = pos[i]
            data[wi, fi] = arr.values
        coords = {k: c.variable for k, c in first.coords.items()
                  if set(c.dims) <= set(first.dims)}
        out[name] = xr.DataArray(data, dims=("well", "field", *first.dims), coords=coords,
                                 attrs=first.attrs)
    from .stack import well_field_coords

    fields = [[paths[i].rsplit("/", 1)[1] for i in per_well[w]] for w in well_names]
    return xr.Dataset(out).assign_coords(well_field_coords(well_names, fields))


def _frames(paths: Sequence[str], results: Sequence[pd.DataFrame]) -> pd.DataFrame:
    from .plate_tables import _labelled

    keys = [(*fp.split("/"), None) for fp in paths]
    blocks = [([i], [len(df)], df) for i, df in enumerate(results)]
    return _labelled(keys, blocks, with_acq=False)  # type: ignore[arg-type]
