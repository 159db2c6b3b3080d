"""The ``omero`` rendering metadata a written image must carry.

Read leniently (a label is all the tree needs), ``omero`` is completed on write: the 0.4 and
0.5 schemas require a ``window`` (``min``, ``max``, ``start``, ``end``) and a ``color`` for
every channel, and ngio and ome-zarr-models refuse images without them. Nothing that was
there is changed; what is missing comes from the dtype's range and a fixed palette, as for
the images :func:`xarray_hcs.add_image` creates.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

#: the attribute of a channel coordinate listing the labels made up for channels that have
#: none of their own (no omero, or a repeated label): ``channels="union"`` cannot align them
MADE_UP = "made_up_labels"

__all__ = ["PALETTE", "channel_defaults", "complete_omero", "dtype_window"]

#: colours of channels that state none, in channel order (blue, green, red, ...)
PALETTE = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")


def dtype_window(dtype: np.dtype) -> tuple[float, float]:
    """The display range of ``dtype``: its whole range for integers, 0-1 for floats (the
    convention for normalised float images; a float's own range would show nothing)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype.kind == "b":
        return 0.0, 1.0
    return 0.0, 1.0


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def channel_defaults(index: int, label: str | None, dtype: np.dtype) -> dict[str, Any]:
    """A complete channel entry for a channel that has none."""
    lo, hi = dtype_window(dtype)
    out: dict[str, Any] = {}
    if label is not None:
        out["label"] = label
    out.update(color=PALETTE[index % len(PALETTE)], active=True,
               window={"min": lo, "max": hi, "start": lo, "end": hi})
    return out


def complete_omero(omero: Any, dtype: np.dtype, n_channels: int) -> Any:
    """``omero`` with every channel's ``window`` and ``color`` present (a new dict).

    Existing values are kept; a window's missing ``min``/``max`` come from the dtype's range
    (widened to hold its ``start``/``end``), a missing ``start``/``end`` from ``min``/``max``;
    channels beyond the list (fewer entries than the image has channels) are added. Anything
    that is not an object is returned as it is (validation reports it).
    """
    if not isinstance(omero, dict) or not isinstance(omero.get("channels", []), list):
        return omero
    out = copy.deepcopy(omero)
    chans = out.setdefault("channels", [])
    lo, hi = dtype_window(dtype)
    for i, ch in enumerate(chans):
        if not isinstance(ch, dict):
            continue
        if not isinstance(ch.get("color"), str):
            ch["color"] = PALETTE[i % len(PALETTE)]
        win = ch.get("window")
        win = dict(win) if isinstance(win, dict) else {}
        start, end = win.get("start"), win.get("end")
        given = [v for v in (start, end) if _number(v)]
        wmin = win["min"] if _number(win.get("min")) else min([lo, *given])
        wmax = win["max"] if _number(win.get("max")) else max([hi, *given])
        win["min"], win["max"] = wmin, wmax
        if not _number(start):
            win["start"] = wmin
        if not _number(end):
            win["end"] = wmax
        ch["window"] = win
    for i in range(len(chans), n_channels):
        chans.append(channel_defaults(i, f"c{i}", dtype))
    return out
