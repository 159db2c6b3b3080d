"""The index of a pixel axis: xarray's ``RangeIndex`` with label selection.

An image's x, y, z (and t) coordinates are regular grids, ``start + i * step``: a
``RangeIndex`` holds them without materialising anything and slices exactly. xarray's own
``RangeIndex.sel`` takes only ``method="nearest"``, so ``img.sel(x=slice(0, 10))`` and
``img.sel(x=1.3)``, the first things an xarray user types, would raise. ``PixelIndex``
answers them as a ``PandasIndex`` over the same values would:

- a slice ``sel(x=slice(a, b))`` takes every pixel whose coordinate lies in ``[a, b]``
  (both ends included, as pandas does), and stays a ``PixelIndex``;
- a label or an array of labels takes the pixels at exactly those coordinates (within 1e-9
  of a pixel, so that a value printed and typed back, or read back from the coordinate,
  always matches); any other value is a ``KeyError``, as in pandas;
- ``method="nearest"``, ``"pad"``/``"ffill"`` or ``"backfill"``/``"bfill"`` (with an
  optional ``tolerance``) take the nearest, previous or next pixel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from xarray.core.indexing import IndexSelResult
from xarray.indexes import RangeIndex
from xarray.indexes.range_index import RangeCoordinateTransform

__all__ = ["PixelIndex", "GridTransform", "grid_of"]

#: how far, in units of the step, a label may lie from a pixel's coordinate and still be it
_EXACT = 1e-9


class GridTransform(RangeCoordinateTransform):
    """``origin + (offset + i * stride) * unit``: the values of a slice of a grid are the
    grid's own values at those pixels, to the last bit. (xarray's transform restarts a
    slice at ``start + lo * step``, whose values then differ from the unsliced ones in the
    last place, and exact comparisons with them fail.)"""

    __slots__ = ("origin", "unit", "offset", "stride")

    def __init__(self, origin: float, unit: float, size: int, name: str, offset: int = 0,
                 stride: int = 1) -> None:
        start = origin + offset * unit
        super().__init__(start, start + size * stride * unit, size, name, name,
                         step=stride * unit)
        self.origin, self.unit, self.offset, self.stride = origin, unit, offset, stride

    def forward(self, dim_positions: dict[str, Any]) -> dict[Any, Any]:
        positions = dim_positions[self.dim]
        return {self.coord_name: self.origin + (self.offset + positions * self.stride)
                * self.unit}

    def reverse(self, coord_labels: dict[Any, Any]) -> dict[str, Any]:
        labels = coord_labels[self.coord_name]
        return {self.dim: ((labels - self.origin) / self.unit - self.offset) / self.stride}

    def slice(self, sl: slice) -> GridTransform:
        r = range(self.size)[sl]
        return GridTransform(self.origin, self.unit, len(r), str(self.coord_name),
                             self.offset + r.start * self.stride, self.stride * r.step)


class PixelIndex(RangeIndex):
    """A ``RangeIndex`` that also selects by exact labels and by label slices."""

    @classmethod
    def of(cls, index: RangeIndex) -> PixelIndex:
        return cls(index.transform)

    def isel(self, indexers: Mapping[Any, Any]) -> Any:
        idxer = indexers[self.dim]
        values = idxer.values if isinstance(idxer, xr.Variable) else idxer
        if not isinstance(idxer, slice):
            at = np.asarray(values)
            if at.dtype == bool:
                # xarray's RangeIndex reads a boolean mask (where(..., drop=True)) as the
                # positions 0 and 1: take the positions it marks
                at = np.flatnonzero(at)
            elif at.dtype.kind in "iu" and at.ndim and np.any(at < 0):
                # and a negative position as one before the start (x[-1] would be
                # start - step): count it from the end, as numpy does
                at = np.where(at < 0, at + self.size, at)
            else:
                at = None
            if at is not None:
                indexers = {**indexers, self.dim: xr.Variable(idxer.dims, at) if isinstance(
                    idxer, xr.Variable) else at}
        elif idxer.step is not None and idxer.step < 0 and not len(range(self.size)[idxer]):
            # an empty slice that runs backwards: xarray's transform cannot be empty so
            return PixelIndex(GridTransform(float(self.start), float(self.step), 0,
                                            str(self.transform.coord_name)))
        out = super().isel(indexers)
        return PixelIndex.of(out) if type(out) is RangeIndex else out

    def join(self, other: Any, how: str = "inner") -> Any:
        """Alignment with another grid (``img - img.sel(x=slice(3, 8))``): the joined
        coordinate values, as pandas joins them (xarray's RangeIndex cannot)."""
        if isinstance(other, RangeIndex) and self.equals(other):
            return self
        theirs = PandasIndex_of(other) if isinstance(other, RangeIndex) else other
        return PandasIndex_of(self).join(theirs, how=how)

    def reindex_like(self, other: Any, method: Any = None, tolerance: Any = None) -> Any:
        theirs = PandasIndex_of(other) if isinstance(other, RangeIndex) else other
        return PandasIndex_of(self).reindex_like(theirs, method, tolerance)

    def _positions(self, values: np.ndarray) -> np.ndarray:
        """Fractional pixel positions of coordinate values."""
        return self.transform.reverse({self.transform.coord_name: np.asarray(
            values, dtype=np.float64)})[self.dim]

    def sel(self, labels: dict[Any, Any], method: Any = None, tolerance: Any = None
            ) -> IndexSelResult:
        label = labels[self.dim]
        if isinstance(label, slice):
            span = self._slice(label.start, label.stop)
            if label.step is not None:  # as pandas: the labels' span, every step-th pixel
                if not isinstance(label.step, int | np.integer) or label.step < 1:
                    raise KeyError(f"the step of a label slice of {self.dim!r} counts pixels "
                                   f"and must be a whole number >= 1, got {label.step!r}")
                span = slice(span.start, span.stop, int(label.step))
            return IndexSelResult({self.dim: span})
        if isinstance(label, xr.DataArray | xr.Variable):
            values = np.asarray(label.values)
        else:
            values = np.asarray(label)
        pos = self._positions(values)
        if np.any(~np.isfinite(pos)):  # NaN is no position, not the first pixel
            raise KeyError(f"{np.atleast_1d(values)[:3].tolist()} is no coordinate of "
                           f"{self.dim!r}")
        if method is None:
            nearest = np.round(pos)
            exact = np.abs(pos - nearest) <= _EXACT * np.maximum(1.0, np.abs(nearest))
            inside = (nearest >= 0) & (nearest < self.size)
            bad = ~(exact & inside)
            if np.any(bad):
                missing = np.atleast_1d(values)[np.atleast_1d(bad)][:3].tolist()
                raise KeyError(
                    f"{missing} not among the coordinates of {self.dim!r} (pixels at "
                    f"{self.start} + i * {self.step}); pass method='nearest' or a slice")
            idx = nearest.astype(np.int64)
        else:
            rounding = {"nearest": np.round, "pad": np.floor, "ffill": np.floor,
                        "backfill": np.ceil, "bfill": np.ceil}.get(method)
            if rounding is None:
                raise ValueError(f"unknown method {method!r} for selecting along "
                                 f"{self.dim!r}")
            # a label within rounding error of a pixel is that pixel, whichever the method
            snapped = np.where(np.abs(pos - np.round(pos)) <= _EXACT, np.round(pos), pos)
            idx = rounding(snapped).astype(np.int64)
            if method != "nearest" and np.any((idx < 0) | (idx >= self.size)):
                raise KeyError(f"no pixel of {self.dim!r} {method} of "
                               f"{np.atleast_1d(values)[:3].tolist()}")
            idx = np.clip(idx, 0, self.size - 1)
            if tolerance is not None:
                far = np.abs(self.start + idx * self.step - values) > tolerance
                if np.any(far):
                    raise KeyError(f"no pixel of {self.dim!r} within {tolerance} of "
                                   f"{np.atleast_1d(values)[np.atleast_1d(far)][:3].tolist()}")
        if isinstance(label, xr.DataArray | xr.Variable) and np.ndim(values):
            return IndexSelResult({self.dim: xr.Variable(label.dims, idx)})
        return IndexSelResult({self.dim: idx if np.ndim(idx) else int(idx)})

    def _slice(self, start: Any, stop: Any) -> slice:
        """The pixels whose coordinates lie between ``start`` and ``stop``, both included
        (either end open if None). With a negative step, as pandas on a decreasing index,
        ``start`` is the larger value: in both cases pixel ``i`` is taken if its fractional
        position lies between those of ``start`` and ``stop``."""
        lo, hi = 0, self.size
        if start is not None:
            lo = int(np.ceil(float(self._positions(np.asarray(start))) - _EXACT))
        if stop is not None:
            hi = int(np.floor(float(self._positions(np.asarray(stop))) + _EXACT)) + 1
        lo, hi = min(max(lo, 0), self.size), max(min(hi, self.size), 0)
        return slice(lo, max(lo, hi))


def PandasIndex_of(index: RangeIndex) -> Any:  # noqa: N802 - reads as the type it makes
    """A pandas index over a RangeIndex's values."""
    from xarray.indexes import PandasIndex

    return PandasIndex(index.to_pandas_index(), index.dim, coord_dtype=np.float64)


def grid_of(values: np.ndarray) -> tuple[float, float] | None:
    """``(start, step)`` of evenly spaced values, chosen to reproduce them: the values a user
    made as ``10.1 + np.arange(n) * 0.65`` come back from ``start + i * step`` to the last
    bit. The mean of the differences, the usual estimate, is 0.6500000000000001 there, and
    the coordinates read back would differ from the written ones in the last place. None if
    the values are not evenly spaced (within 1e-6 of a step) or fewer than two."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) < 2:
        return None
    d = np.diff(v)
    mean = float(d.mean())
    if not np.allclose(d, mean, rtol=1e-6, atol=0):
        return None
    raw = [mean, float((v[-1] - v[0]) / (len(v) - 1)), float(d[0]), float(np.median(d))]
    candidates = list(dict.fromkeys(
        [*raw, *(float(f"{c:.{k}g}") for c in raw for k in (15, 12, 9))]))
    positions = np.arange(len(v), dtype=np.float64)
    best, hits = mean, -1
    for c in candidates:
        if c == 0 or not np.isfinite(c):
            continue
        n = int(np.count_nonzero(v[0] + positions * c == v))
        if n > hits:
            best, hits = c, n
    return float(v[0]), best
