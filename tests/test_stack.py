"""The stacked view: all fields of one level as one (well, field, ...) array."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from conftest import TINY
from xarray_hcs.errors import HcsMetadataError, HcsMissingWarning, HcsSelectionError
from xarray_hcs.sample import well_intensity


def test_open_dataset_stacks_a_level(plate):
    ds = xr.open_dataset(plate, engine="ome-hcs", level=0)
    img = ds["image"]
    assert img.dims == ("well", "field", "c", "z", "y", "x")
    assert img.shape == (6, 2, 2, 1, 16, 16)
    assert list(ds.row.values) == ["A"] * 3 + ["B"] * 3
    assert list(ds.c.values) == ["DAPI", "GFP"]
    assert ds.present.values.all() and (ds.acquisition.values == 0).all()
    root = zarr.open_group(plate, mode="r")
    for i, w in enumerate(ds.well.values):
        for j in range(2):
            np.testing.assert_array_equal(img[i, j].values, root[f"{w}/{j}/0"][...])
    np.testing.assert_allclose(ds.x.values, np.arange(16) * TINY.pixel_size)
    # per-well values where the sample plate puts them
    assert int(img.sel(well=ds.well.values[4], c="GFP").min()) == well_intensity(1, 1, 1)


def test_accessor_stack_equals_open_dataset(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    a = dt.hcs.stack(level=-1)
    b = xr.open_dataset(plate, engine="ome-hcs", level=-1)["image"]
    xr.testing.assert_identical(a.load(), b.load())
    assert a.shape[-2:] == (8, 8)


def test_chunked_stack_is_one_layer(plate):
    ds = xr.open_dataset(plate, engine="ome-hcs", level=0, chunks={})
    data = ds["image"].data
    # the source array and one getter layer, however many fields (not one layer per field)
    assert len(data.dask.layers) <= 2
    assert data.chunksize == (1, 2, 1, 1, 16, 16)  # all fields of a well per block
    means = ds["image"].mean(["z", "y", "x"]).compute()
    root = zarr.open_group(plate, mode="r")
    w = str(ds.well.values[2])
    np.testing.assert_allclose(means.sel(well=w).isel(field=1).values,
                               root[f"{w}/1/0"][...].mean(axis=(1, 2, 3)))
    again = pickle.loads(pickle.dumps(ds["image"]))
    np.testing.assert_array_equal(again.values, ds["image"].values)


def test_ragged_wells_are_filled(fresh_plate):
    p = fresh_plate("0.5")
    shutil.rmtree(p / "A/02/1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HcsMissingWarning)
        ds = xr.open_dataset(p, engine="ome-hcs", level=0, on_missing="warn")
    assert not bool(ds.present.sel(well="A/02", field=1))
    assert ds.field_path.sel(well="A/02", field=1).item() == ""
    assert int(ds["image"].sel(well="A/02", field=1).max()) == 0
    assert int(ds["image"].sel(well="A/02", field=0).min()) > 0


def test_mismatched_fields_are_listed(fresh_plate):
    p = fresh_plate("0.5", labels=False)
    root = zarr.open_group(p, mode="r+")
    root.create_array("B/02/1/0", shape=(2, 1, 12, 16), dtype="uint16", overwrite=True,
                      dimension_names=["c", "z", "y", "x"])
    with pytest.raises(HcsMetadataError, match=r"outliers: B/02/1 \(2, 1, 12, 16\) uint16"):
        xr.open_dataset(p, engine="ome-hcs", level=0)
    ds = xr.open_dataset(p, engine="ome-hcs", level=0, wells=["A1", "A2"])  # select around
    assert ds.sizes["well"] == 2


def test_pad_stacks_fields_of_different_sizes(fresh_plate):
    p = fresh_plate("0.5", labels=False)
    root = zarr.open_group(p, mode="r+")
    small = np.arange(2 * 12 * 10, dtype="uint16").reshape(2, 1, 12, 10) + 1
    arr = root.create_array("B/02/1/0", shape=small.shape, dtype="uint16", overwrite=True,
                            chunks=(1, 1, 8, 8), dimension_names=["c", "z", "y", "x"])
    arr[...] = small
    with pytest.raises(HcsMetadataError, match="pad=True"):
        xr.open_dataset(p, engine="ome-hcs", level=0)
    ds = xr.open_dataset(p, engine="ome-hcs", level=0, pad=True)
    img = ds["image"]
    assert img.shape[-2:] == (16, 16)
    got = img.sel(well="B/02", field=1).values
    np.testing.assert_array_equal(got[..., :12, :10], small)
    assert (got[..., 12:, :] == 0).all() and (got[..., :, 10:] == 0).all()
    assert int(ds["y_size"].sel(well="B/02", field=1)) == 12
    assert int(ds["x_size"].sel(well="B/02", field=1)) == 10
    assert int(ds["x_size"].sel(well="A/01", field=0)) == 16
    # the other fields are untouched, and any selection of the padded one reads right
    full = xr.open_dataset(p, engine="ome-hcs", level=0, wells=["A1"])
    np.testing.assert_array_equal(img.sel(well="A/01").values, full["image"].sel(
        well="A/01").values)
    np.testing.assert_array_equal(img.sel(well="B/02", field=1).isel(y=slice(8, 14),
                                                                      x=[1, 3, 11]).values,
                                  got[..., 8:14, :][..., [1, 3, 11]])
    assert img.sel(well="B/02", field=1).isel(y=14, x=15).values.tolist() == [[0], [0]]
    chunked = xr.open_dataset(p, engine="ome-hcs", level=0, pad=True, chunks={})
    np.testing.assert_array_equal(chunked["image"].values, img.values)
    tree = xr.open_datatree(p, engine="ome-hcs")
    np.testing.assert_array_equal(tree.hcs.stack(pad=True).values, img.values)


def test_fields_at_different_positions(fresh_plate):
    p = fresh_plate("0.5", rows=1, columns=1, labels=False)
    doc_path = p / "A/01/1/zarr.json"
    doc = json.loads(doc_path.read_text())
    for d in doc["attributes"]["ome"]["multiscales"][0]["datasets"]:
        move = next(t for t in d["coordinateTransformations"] if t["type"] == "translation")
        move["translation"] = [a + b for a, b in zip(move["translation"], [0, 0, 50.0, 100.0],
                                                     strict=True)]
    doc_path.write_text(json.dumps(doc))
    ds = xr.open_dataset(p, engine="ome-hcs", level=0)
    assert ds.x.values[0] == 0.0
    np.testing.assert_allclose(ds.x_origin.values, [[0.0, 100.0]])
    np.testing.assert_allclose(ds.y_origin.values, [[0.0, 50.0]])


def test_edited_trees_stack_through_xarray(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs", levels=[1], labels=False)
    fp = dt.hcs.field_paths[0]
    dt[f"{fp}/1"] = dt[f"{fp}/1"].to_dataset().assign(image=lambda d: d.image * 0 + 7)
    st = dt.hcs.stack(level="1")  # by path; indices count the levels the tree holds
    assert int(st.isel(well=0, field=0).max()) == 7
    assert st.shape[:2] == (6, 2)
    np.testing.assert_array_equal(st.isel(well=1, field=1).values,
                                  dt[dt.hcs.field_paths[3] + "/1"]["image"].values)


@pytest.mark.parametrize("opening", [{}, {"chunks": {}}, {"chunks": -1}, {"chunks": "auto"}])
def test_stack_is_one_route_however_opened(plate, opening):
    """The same view from every opening; the plate's own arrays stack as one dask layer."""
    lazy = xr.open_datatree(plate, engine="ome-hcs").hcs.stack(0).load()
    dt = xr.open_datatree(plate, engine="ome-hcs", **opening)
    st = dt.hcs.stack(0)
    if opening:
        assert len(st.data.dask.layers) == 1
    else:
        assert not hasattr(st.variable._data, "dask")  # lazy in, lazy out
    xr.testing.assert_identical(st.load(), lazy)
    for chunks, blocks in (({}, (6, 1)), ({"well": 3}, (2, 1)), (-1, (1, 1))):
        got = dt.hcs.stack(0, chunks=chunks)
        assert len(got.data.dask.layers) == 1 and got.data.numblocks[:2] == blocks
        xr.testing.assert_identical(got.load(), lazy)
    with pytest.raises(HcsSelectionError, match="does not have"):
        dt.hcs.stack(0, chunks={"w": 1})


def test_stack_after_reads_and_edits_keeps_every_coordinate(plate):
    """Fields read into memory and fields edited (eagerly or as dask graphs) stack with the
    same coordinates and padding as the stored ones, the read ones still as one layer."""
    ref = xr.open_datatree(plate, engine="ome-hcs").hcs.stack(0).load()
    dt = xr.open_datatree(plate, engine="ome-hcs")
    fps = dt.hcs.field_paths
    dt[f"{fps[0]}/0"]["image"].values  # noqa: B018  (cached in memory by xarray)
    st = dt.hcs.stack(0, chunks={})
    assert len(st.data.dask.layers) == 1
    xr.testing.assert_identical(st.load(), ref)
    chunked = xr.open_datatree(plate, engine="ome-hcs", chunks={})
    chunked[f"{fps[3]}/0"] = chunked[f"{fps[3]}/0"].to_dataset() + 0  # the user's dask graph
    xr.testing.assert_identical(chunked.hcs.stack(0).load(), ref)
