"""Label selection on pixel axes: ``sel``, ``where(drop=True)`` and ``isel`` answer as they
would on a plain pandas index over the same coordinate values, on every kind of node."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from xarray_hcs._pixel_index import GridTransform, PixelIndex
from xarray_hcs.sample import SamplePlate, write_sample_plate


def _pair(start: float, step: float, size: int) -> tuple[xr.DataArray, xr.DataArray]:
    """The same values on a PixelIndex and on a PandasIndex (the reference)."""
    ours = xr.DataArray(np.arange(size), dims="x", coords=xr.Coordinates.from_xindex(
        PixelIndex(GridTransform(start, step, size, "x"))))
    plain = xr.DataArray(np.arange(size), dims="x",
                         coords={"x": start + np.arange(size) * step})
    return ours, plain


def _near_but_not_on(values: np.ndarray, v: float, step: float) -> bool:
    d = np.abs(values - v)
    return bool(np.any((d > 0) & (d <= 1e-6 * step)))


grids = st.tuples(st.floats(-1e4, 1e4, allow_nan=False),
                  st.floats(1e-3, 1e3, allow_nan=False), st.integers(1, 200))


@settings(max_examples=300, deadline=None)
@given(grid=grids, a=st.floats(-2e4, 2e4), b=st.floats(-2e4, 2e4),
       open_end=st.sampled_from([None, "start", "stop"]))
def test_label_slices_take_what_pandas_takes(grid, a, b, open_end):
    ours, plain = _pair(*grid)
    # a bound within 1e-9 pixel of a coordinate is that coordinate (documented): pandas,
    # comparing exactly, may differ there, so such bounds are left out of the comparison
    assume(not _near_but_not_on(plain.x.values, a, grid[1]))
    assume(not _near_but_not_on(plain.x.values, b, grid[1]))
    sl = slice(None if open_end == "start" else a, None if open_end == "stop" else b)
    got, want = ours.sel(x=sl), plain.sel(x=sl)
    np.testing.assert_array_equal(got.values, want.values)
    np.testing.assert_allclose(got.x.values, want.x.values)


@settings(max_examples=300, deadline=None)
@given(grid=grids, data=st.data())
def test_exact_labels_and_nearest_take_what_pandas_takes(grid, data):
    ours, plain = _pair(*grid)
    values = plain.x.values
    i = data.draw(st.integers(0, len(values) - 1))
    assert int(ours.sel(x=values[i])) == i  # a value read back from the coordinate
    picks = data.draw(st.lists(st.integers(0, len(values) - 1), min_size=1, max_size=5))
    np.testing.assert_array_equal(ours.sel(x=values[picks]).values, picks)
    v = data.draw(st.floats(float(values.min()) - 5, float(values.max()) + 5))
    assert int(ours.sel(x=v, method="nearest")) == int(plain.sel(x=v, method="nearest")) or \
        np.isclose(abs(values[int(ours.sel(x=v, method="nearest"))] - v),
                   abs(values[int(plain.sel(x=v, method="nearest"))] - v))
    if not np.any(np.isclose(values, v, rtol=0, atol=abs(grid[1]) * 1e-6)):
        with pytest.raises(KeyError):
            ours.sel(x=v)
        with pytest.raises(KeyError):
            plain.sel(x=v)


@settings(max_examples=200, deadline=None)
@given(grid=grids, threshold=st.floats(-2e4, 2e4))
def test_where_drop_takes_what_pandas_takes(grid, threshold):
    ours, plain = _pair(*grid)
    assume(not _near_but_not_on(plain.x.values, threshold, grid[1]))
    got = ours.where(ours.x < threshold, drop=True)
    want = plain.where(plain.x < threshold, drop=True)
    np.testing.assert_array_equal(got.values, want.values)
    np.testing.assert_allclose(got.x.values, want.x.values)


def test_label_slices_with_a_step_take_every_step_th_pixel_as_pandas():
    ours, plain = _pair(0.0, 0.5, 10)
    for sl in (slice(1, 4, 2), slice(None, None, 3), slice(0.2, None, 4)):
        np.testing.assert_array_equal(ours.sel(x=sl).values, plain.sel(x=sl).values)
    with pytest.raises(KeyError):
        ours.sel(x=slice(0, 4, 0.5))


def test_pad_and_backfill_and_tolerance():
    ours, plain = _pair(0.0, 0.5, 10)
    for method in ("pad", "ffill", "backfill", "bfill"):
        assert int(ours.sel(x=1.2, method=method)) == int(
            plain.to_series().index.get_indexer([1.2], method=method)[0])
    assert int(ours.sel(x=1.2, method="nearest", tolerance=0.3)) == 2
    with pytest.raises(KeyError):
        ours.sel(x=1.2, method="nearest", tolerance=0.1)
    with pytest.raises(KeyError):
        ours.sel(x=-1.0, method="pad")


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    p = tmp_path_factory.mktemp("pix") / "plate.zarr"
    return write_sample_plate(p, SamplePlate(rows=1, columns=2, fields=2, levels=2,
                                             shape_zyx=(2, 32, 32), labels=True))


@pytest.mark.parametrize("chunks", [None, {}])
def test_sel_where_isel_on_every_node_kind(plate, chunks):
    dt = xr.open_datatree(plate, engine="ome-hcs", chunks=chunks)
    level = dt["A/01/0/1"]["image"]
    label = next(iter(dt["A/01/0/labels"].children.values()))["0"]["labels"]
    stacked = dt.hcs.stack(0)
    from_open = xr.open_dataset(plate, engine="ome-hcs", level=1, chunks=chunks)["image"]
    for arr in (level, label, stacked, from_open):
        x = arr.x.values
        ref = pd.Index(x)
        got = arr.sel(x=slice(x[2], x[5]))
        np.testing.assert_array_equal(got.x.values, x[2:6])
        np.testing.assert_array_equal(got.values, arr.values[..., 2:6])
        np.testing.assert_array_equal(arr.sel(x=x[3]).values, arr.values[..., 3])
        assert ref.get_loc(x[3]) == 3
        between = (x[0] + x[1]) / 2
        with pytest.raises(KeyError):
            arr.sel(x=between)
        np.testing.assert_array_equal(arr.sel(x=between, method="nearest").values,
                                      arr.values[..., int(np.argmin(np.abs(x - between)))])
        kept = arr.where(arr.x < x[4], drop=True)
        np.testing.assert_array_equal(kept.x.values, x[:4])
        np.testing.assert_array_equal(kept.values, arr.values[..., :4])
        np.testing.assert_array_equal(arr.isel(x=[1, 3]).x.values, x[[1, 3]])
        y = arr.y.values
        np.testing.assert_array_equal(arr.sel(y=slice(y[1], None)).y.values, y[1:])
    assert level.sel(c="DAPI").dims == ("z", "y", "x")


@settings(max_examples=300, deadline=None)
@given(start=st.decimals(-1000, 1000, places=3), step=st.decimals("0.001", "100", places=4),
       n=st.integers(2, 300))
def test_a_users_grid_is_written_so_that_it_reads_back_to_the_last_bit(start, step, n):
    from xarray_hcs._pixel_index import grid_of

    values = float(start) + np.arange(n) * float(step)  # as a user makes coordinates
    got = grid_of(values)
    assert got is not None
    s0, d = got
    np.testing.assert_array_equal(s0 + np.arange(n, dtype=np.float64) * d, values)


def test_an_image_added_with_numpy_coordinates_reads_back_exactly(tmp_path):
    import xarray_hcs

    img = xr.DataArray(np.arange(2 * 16 * 16, dtype="u2").reshape(2, 1, 16, 16),
                       dims=("c", "z", "y", "x"),
                       coords={"c": ["DAPI", "GFP"], "y": 5.0 + np.arange(16) * 0.65,
                               "x": 10.1 + np.arange(16) * 0.65})
    lab = xr.DataArray(np.ones((1, 16, 16), "u4"), dims=("z", "y", "x"))  # no coordinates
    fp = xarray_hcs.add_image(tmp_path / "p.zarr", "B", 3, img, labels={"nuclei": lab},
                              levels=2)
    dt = xr.open_datatree(tmp_path / "p.zarr", engine="ome-hcs")
    back = dt.hcs.image(fp)
    np.testing.assert_array_equal(back.x.values, img.x.values)
    np.testing.assert_array_equal(back.y.values, img.y.values)
    xr.align(back, img, join="exact")  # no AlignmentError
    label = dt.hcs.image(fp, label="nuclei")
    np.testing.assert_array_equal(label.x.values, img.x.values)  # the image's grid
    with pytest.raises(xarray_hcs.HcsMetadataError, match="must lie on its image's pixels"):
        xarray_hcs.add_image(tmp_path / "p.zarr", "B", 3, img, labels={"n": lab[:, :5, :3]})
    assert dt.hcs.field_paths == xr.open_datatree(tmp_path / "p.zarr",
                                                  engine="ome-hcs").hcs.field_paths


def test_negative_positions_and_empty_backward_slices(tmp_path):
    ours, plain = _pair(10.1, 0.65, 24)
    np.testing.assert_array_equal(ours.isel(x=[-1, -2]).x.values, plain.x.values[[-1, -2]])
    np.testing.assert_array_equal(ours.isel(x=[0, -24]).x.values, plain.x.values[[0, -24]])
    assert ours.isel(x=slice(2, 5, -1)).sizes["x"] == 0
