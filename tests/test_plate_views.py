"""Plate-wide views are right on heterogeneous plates, however the tree was opened.

Property-based: hypothesis draws plates that vary the way real screens do (field paths and
counts per well, sizes, channel sets, stage positions, pixel sizes, dtypes, fill values and
absent chunks, acquisitions), writes them with plain zarr, opens them by one of every route
(lazily, after a read, ``chunks={}``/``-1``/``"auto"``, ``open_plate``, a ``sel`` subtree,
with edited arrays), and checks ``stack``, ``map_fields`` and ``open_dataset(level=...)``
against a reference built field by field from what plain zarr reads (``tests/_hetero.py``):
the same values and coordinates, or an ``HcsMetadataError`` exactly where the reference says
the view would have to guess.

``XARRAY_HCS_EXAMPLES`` sets the number of plates (200 by default, as in CI; the same ones
every run); ``XARRAY_HCS_RANDOM=1`` draws new ones.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xarray_hcs
from _hetero import Expected, PlateSpec, Refused, channel_sums, expected_stack, expected_sums, \
    plates, write_plate
from xarray_hcs.errors import HcsMetadataError

EXAMPLES = int(os.environ.get("XARRAY_HCS_EXAMPLES", "200"))
ROUTES = ("lazy", "read", "chunks={}", "chunks=-1", "chunks=auto", "open_plate", "sel",
          "edited", "edited-eager")


def _open(path: Path, route: str, spec: PlateSpec) -> tuple[xr.DataTree, list[str],
                                                          frozenset[str]]:
    """The tree by ``route``, the wells it holds (plate order), the fields edited in it."""
    wells = spec.well_order()
    chunks = {"chunks={}": {}, "chunks=-1": -1, "chunks=auto": "auto",
              "edited": {}}.get(route)
    if route == "open_plate":
        dt = xarray_hcs.open_plate(path)
    elif chunks is not None:
        dt = xr.open_datatree(path, engine="ome-hcs", chunks=chunks)
    else:
        dt = xr.open_datatree(path, engine="ome-hcs")
    edited: frozenset[str] = frozenset()
    if route == "read":  # pixels read into memory (xarray caches them) before stacking
        fps = dt.hcs.field_paths
        dt[f"{fps[0]}/0"]["image"].values  # noqa: B018
        dt[f"{fps[-1]}/0"]["image"].isel(x=slice(0, 2)).values  # noqa: B018
    elif route == "sel":
        wells = wells[::2]
        dt = dt.hcs.sel(wells=wells)
    elif route.startswith("edited"):
        fps = dt.hcs.field_paths
        edited = frozenset(fps[:: max(1, len(fps) // 2)])
        for fp in edited:
            node = dt[f"{fp}/0"]
            dt[f"{fp}/0"] = node.to_dataset() * 1  # computed: no longer the stored array
    return dt, wells, edited


def _check_stack(da: xr.DataArray, exp: Expected, spec: PlateSpec) -> None:
    names = (["z"] if spec.z else []) + ["y", "x"]
    assert da.dims == ("well", "field", "c", *names)
    assert list(da["well"].values) == exp.wells
    assert da["field_path"].values.tolist() == exp.field_paths.tolist()
    present = exp.field_paths != ""
    assert da["present"].values.tolist() == present.tolist()
    assert da["acquisition"].values.tolist() == exp.acquisition.tolist()
    assert [str(c) for c in da["c"].values] == exp.labels
    if exp.channel_present is not None:
        assert da["channel_present"].values.tolist() == exp.channel_present.tolist()
    assert da.dtype == exp.values.dtype
    np.testing.assert_array_equal(da.values, exp.values)
    for n in names:
        rel = da[n].values
        origin = da[f"{n}_origin"].values if f"{n}_origin" in da.coords else None
        size = (da[f"{n}_size"].values if f"{n}_size" in da.coords
                else np.full(present.shape, da.sizes[n]))
        for wi, fi in zip(*np.nonzero(present), strict=True):
            own = int(exp.sizes[n][wi, fi])
            assert int(size[wi, fi]) == own
            got = rel[:own] + (origin[wi, fi] if origin is not None else 0.0)
            np.testing.assert_allclose(got, exp.positions[n][wi, fi, :own], rtol=1e-12,
                                       atol=1e-9)


def _expect(make: Any, check: Any, expected: Any) -> None:
    """``make()`` must give what ``expected()`` describes, or refuse where it refuses."""
    try:
        exp = expected()
    except Refused:
        with pytest.raises(HcsMetadataError):
            make()
        return
    check(make(), exp)


@settings(max_examples=EXAMPLES, deadline=None,
          derandomize=os.environ.get("XARRAY_HCS_RANDOM") is None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=plates(), route=st.sampled_from(ROUTES))
def test_plate_views_equal_the_reference(spec: PlateSpec, route: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plate.zarr"
        write_plate(spec, path)
        dt, wells, _ = _open(path, route, spec)
        for pad, union in ((False, False), (True, True), (True, False)):
            channels = "union" if union else "exact"
            _expect(lambda pad=pad, channels=channels: dt.hcs.stack(0, pad=pad,
                                                                    channels=channels),
                    lambda da, exp: _check_stack(da, exp, spec),
                    # an edited level keeps its stored fill value (the image records it)
                    lambda pad=pad, union=union: expected_stack(spec, wells, pad=pad,
                                                                union=union))
        for union in (False, True):
            def check_sums(ds: xr.Dataset, exp: Any) -> None:
                labels, sums = exp
                assert [str(c) for c in ds["c"].values] == labels
                assert list(ds["well"].values) == wells
                np.testing.assert_allclose(ds["result"].values, sums, rtol=1e-6)

            _expect(lambda union=union: dt.hcs.map_fields(
                        channel_sums, channels="union" if union else "exact"),
                    check_sums, lambda union=union: expected_sums(spec, wells, union))
        if route in ("lazy", "chunks={}"):
            kw = {} if route == "lazy" else {"chunks": {}}
            _expect(lambda: xr.open_dataset(path, engine="ome-hcs", level=0, pad=True,
                                            channels="union", **kw)["image"],
                    lambda da, exp: _check_stack(da, exp, spec),
                    lambda: expected_stack(spec, wells, pad=True, union=True))
