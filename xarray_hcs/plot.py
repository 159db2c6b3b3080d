"""Pictures of a plate the way screeners look at it: a montage and a plate heatmap.

``montage`` is pure xarray + dask (no plotting library); ``plot_montage`` and ``plot_plate``
draw with matplotlib, an optional dependency (``pip install xarray-hcs[plot]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import (
    HcsError,
    HcsMetadataError,
    HcsSelectionError,
    HcsTypeError,
    HcsValueError,
)

__all__ = ["montage", "plot_montage", "plot_plate", "plate_grid"]

_AGGS: dict[str, Callable[..., Any]] = {"max": np.nanmax, "mean": np.nanmean,
                                         "min": np.nanmin, "median": np.nanmedian}


#: at most this many pixels in a montage (2 GiB of float64): a plate document may declare
#: thousands of rows and columns around a few wells
MAX_MONTAGE_PIXELS = 2**28


def montage(tree: xr.DataTree, level: int | str = -1, channel: Any = None, agg: str = "max",
            gap: int = 2, channels: str = "exact", pad: bool = False) -> xr.DataArray:
    """See :meth:`xarray_hcs.accessor.HcsAccessor.montage`."""
    import dask

    from .stack import stack_tree

    if agg not in _AGGS:
        raise HcsValueError(f"agg must be one of {sorted(_AGGS)}, got {agg!r}")
    if isinstance(gap, bool) or not isinstance(gap, int | np.integer) or gap < 0:
        raise HcsValueError(f"gap must be a number of pixels >= 0, got {gap!r}")
    plate = tree.hcs.plate
    stacked = stack_tree(tree, tree.hcs.field_paths, tree.hcs.wells, level, pad=pad,
                         channels=channels)  # type: ignore[arg-type]
    img = stacked["image"]
    cdim = next((d for d in img.dims if str(d).lower() == "c"), None)
    ydim = next((d for d in img.dims if str(d).lower() == "y"), None)
    xdim = next((d for d in img.dims if str(d).lower() == "x"), None)
    if ydim is None or xdim is None:
        raise HcsMetadataError(f"fields have no y and x dimensions ({img.dims})", "/")
    if channel is not None:
        if cdim is None:
            raise HcsSelectionError("the fields have no channel axis", "/")
        labels = [str(v) for v in img[cdim].values] if cdim in img.coords else []
        if isinstance(channel, str):
            if channel not in labels:
                raise HcsSelectionError(f"no channel {channel!r} (channels: {labels})", "/")
            img = img.isel({cdim: labels.index(channel)})
        else:
            n = img.sizes[cdim]
            if isinstance(channel, bool) or not isinstance(channel, int | np.integer) or not (
                    -n <= int(channel) < n):
                raise HcsSelectionError(f"no channel {channel!r}: give a label ({labels}) or "
                                        f"an index from 0 to {n - 1}", "/")
            img = img.isel({cdim: int(channel)})
    other = [d for d in img.dims if d not in ("well", "field", cdim, ydim, xdim)]
    reduced = img.reduce(_AGGS[agg], dim=other) if other else img
    lead = ["well", "field"] + ([cdim] if cdim in reduced.dims else [])
    reduced = reduced.transpose(*lead, ydim, xdim)
    data = reduced.data
    (values,) = dask.compute(data) if hasattr(data, "dask") else (np.asarray(reduced.values),)
    values = np.asarray(values, dtype=np.float64)
    present = (stacked["present"].values if "present" in stacked.coords
               else np.ones(values.shape[:2], dtype=bool))
    n_well, n_field = present.shape
    fy, fx = values.shape[-2:]
    fcols = math.ceil(math.sqrt(n_field))
    frows = math.ceil(n_field / fcols)
    cell_y, cell_x = frows * fy, fcols * fx
    rows, cols = list(plate.rows), list(plate.columns)
    ny = len(rows) * cell_y + (len(rows) - 1) * gap
    nx = len(cols) * cell_x + (len(cols) - 1) * gap
    nch = values.shape[2] if values.ndim == 5 else None
    if (nch or 1) * ny * nx > MAX_MONTAGE_PIXELS:
        raise HcsValueError(
            f"a montage of {len(rows)} rows x {len(cols)} columns of {cell_y} x {cell_x} "
            f"pixel wells{f' x {nch} channels' if nch else ''} would hold "
            f"{(nch or 1) * ny * nx} pixels, more than {MAX_MONTAGE_PIXELS}: pass a coarser "
            "level= or fewer channels", "/")
    canvas = np.full(((nch,) if nch else ()) + (ny, nx), np.nan)
    wells = [str(w) for w in stacked["well"].values]
    for wi, w in enumerate(wells):
        r, c = w.split("/")
        y0 = rows.index(r) * (cell_y + gap)
        x0 = cols.index(c) * (cell_x + gap)
        for fi in range(n_field):
            if not present[wi, fi]:
                continue
            yy = y0 + (fi // fcols) * fy
            xx = x0 + (fi % fcols) * fx
            canvas[..., yy:yy + fy, xx:xx + fx] = values[wi, fi]
    well_row = np.full(ny, "", dtype=object)
    well_col = np.full(nx, "", dtype=object)
    for i, r in enumerate(rows):
        well_row[i * (cell_y + gap): i * (cell_y + gap) + cell_y] = r
    for i, c in enumerate(cols):
        well_col[i * (cell_x + gap): i * (cell_x + gap) + cell_x] = c
    dims = ((str(cdim),) if nch else ()) + ("y", "x")
    coords: dict[str, Any] = {"y": np.arange(ny), "x": np.arange(nx),
                              "well_row": ("y", well_row), "well_column": ("x", well_col)}
    if nch and cdim in reduced.coords:
        coords[str(cdim)] = reduced[cdim].values
    return xr.DataArray(canvas, dims=dims, coords=coords, name="montage", attrs={
        "level": str(level), "agg": agg, "channel": "" if channel is None else str(channel),
        "cell_shape": [cell_y, cell_x], "gap": gap, "fields_per_well": n_field,
        "long_name": f"plate montage ({agg} over {', '.join(map(str, other)) or 'nothing'})"})


def _pyplot() -> Any:
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline."
                                                            "backend_inline"):
            import os

            if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
                matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'xarray-hcs[plot]'") from None
    return plt


def _label_axes(ax: Any, rows: list[str], cols: list[str], cell: tuple[float, float],
                gap: float) -> None:
    ax.set_yticks([i * (cell[0] + gap) + cell[0] / 2 - 0.5 for i in range(len(rows))])
    ax.set_yticklabels(rows)
    ax.set_xticks([i * (cell[1] + gap) + cell[1] / 2 - 0.5 for i in range(len(cols))])
    ax.set_xticklabels(cols)
    ax.tick_params(length=0)
    ax.xaxis.tick_top()


def plot_montage(tree: xr.DataTree, level: int | str = -1, channel: Any = 0, agg: str = "max",
                 ax: Any = None, cmap: str = "gray", robust: bool = True,
                 title: str | None = None, channels: str = "exact", pad: bool = False) -> Any:
    """See :meth:`xarray_hcs.accessor.HcsAccessor.plot_montage`."""
    plt = _pyplot()
    m = montage(tree, level=level, channel=channel, agg=agg, channels=channels, pad=pad)
    if m.ndim != 2:
        raise HcsSelectionError("plot one channel at a time (channel=...)", "/")
    if ax is None:
        h, w = m.shape
        width = min(16.0, max(6.0, 1.5 + w / 50))
        _, ax = plt.subplots(figsize=(width, min(12.0, max(3.0, 1.5 + width * h / w))),
                             layout="constrained")
    vals = m.values[np.isfinite(m.values)]
    vmin, vmax = (np.percentile(vals, [2, 98]) if robust and vals.size else (None, None))
    cm = plt.get_cmap(cmap).with_extremes(bad="#202020")
    ax.imshow(np.ma.masked_invalid(m.values), cmap=cm, vmin=vmin, vmax=vmax,
              interpolation="nearest")
    plate = tree.hcs.plate
    _label_axes(ax, list(plate.rows), list(plate.columns), tuple(m.attrs["cell_shape"]),
                m.attrs["gap"])
    ax.set_title(title or f"{plate.name or 'plate'}: channel {channel}, level {level}, "
                          f"{agg} projection", fontsize="medium")
    return ax


def plate_grid(tree: xr.DataTree, values: Any) -> xr.DataArray:
    """Per-well ``values`` as a ``(row, column)`` DataArray laid out like the plate (NaN where
    a well has no value). ``values``: a Series or DataArray indexed by well (``"B/03"``), a
    Series with a (row, column) MultiIndex, or a DataFrame with ``row`` and ``column``
    columns and one value column."""
    from .edit import column_name

    plate = tree.hcs.plate
    rows, cols = list(plate.rows), list(plate.columns)
    grid = np.full((len(rows), len(cols)), np.nan)
    name = None
    pairs: list[tuple[Any, Any, Any]] = []
    if isinstance(values, xr.DataArray):
        if values.dims != ("well",):
            raise HcsValueError(f"per-well values must have the one dim 'well', got {values.dims} "
                           "(reduce the others first, e.g. .mean('field'))")
        name = values.name
        pairs = [(*str(w).split("/"), v) for w, v in zip(values["well"].values,
                                                          values.values, strict=True)]
    elif isinstance(values, pd.DataFrame):
        if not {"row", "column"} <= set(values.columns):
            raise HcsValueError("a DataFrame of per-well values needs 'row' and 'column' columns")
        rest = [c for c in values.columns if c not in ("row", "column")]
        if len(rest) != 1:
            raise HcsValueError(f"a DataFrame of per-well values needs one value column, got "
                                f"{rest}")
        name = rest[0]
        pairs = list(zip(values["row"], values["column"], values[name], strict=True))
    elif isinstance(values, pd.Series):
        name = values.name
        if isinstance(values.index, pd.MultiIndex):
            pairs = [(r, c, v) for (r, c), v in values.items()]
        else:
            pairs = [(*str(w).replace("/", " ").split(), v) for w, v in values.items()]
    else:
        raise HcsTypeError(f"per-well values must be a Series, DataFrame or DataArray, got "
                       f"{type(values).__name__}")
    for r, c, v in pairs:
        r = str(r)
        try:
            cname = column_name(plate, c)
        except (HcsError, ValueError):
            cname = str(c)
        if r not in rows or cname not in cols:
            raise HcsSelectionError(f"well {r}/{c} is not on the plate", "/")
        grid[rows.index(r), cols.index(cname)] = float(v)
    return xr.DataArray(grid, dims=("row", "column"), coords={"row": rows, "column": cols},
                        name=name)


def plot_plate(tree: xr.DataTree, values: Any, ax: Any = None, cmap: str = "viridis",
               title: str | None = None, label: str | None = None) -> Any:
    """See :meth:`xarray_hcs.accessor.HcsAccessor.plot_plate`."""
    plt = _pyplot()
    grid = plate_grid(tree, values)
    if ax is None:
        ncol, nrow = grid.sizes["column"], grid.sizes["row"]
        _, ax = plt.subplots(figsize=(min(16.0, max(5.0, 2.5 + 0.45 * ncol)),
                                      min(11.0, max(3.0, 1.5 + 0.45 * nrow))),
                             layout="constrained")
    cm = plt.get_cmap(cmap).with_extremes(bad="#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(grid.values), cmap=cm, interpolation="nearest")
    _label_axes(ax, list(grid["row"].values), list(grid["column"].values), (1, 1), 0)
    ax.figure.colorbar(im, ax=ax, label=label or (str(grid.name) if grid.name else None),
                       shrink=0.8)
    ax.set_title(title or (tree.hcs.plate.name or "plate"))
    return ax
