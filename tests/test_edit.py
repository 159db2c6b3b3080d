"""In-memory edits: .hcs.sel, .hcs.add_image and .hcs.remove_image; and the property-based
round trip."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xarray_hcs.errors import HcsMetadataError, HcsNotFoundError, HcsSelectionError


def test_sel_wells_rows_columns(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    cols = dt.hcs.columns
    s = dt.hcs.sel(rows=["B"], columns=[1, 3])
    assert s.hcs.wells == [f"B/{cols[0]}", f"B/{cols[2]}"]
    assert [w["path"] for w in s.attrs["ome"]["plate"]["wells"]] == s.hcs.wells
    assert s.attrs["ome"]["plate"]["rows"] == dt.attrs["ome"]["plate"]["rows"]
    np.testing.assert_array_equal(s[f"B/{cols[0]}/1/0"]["image"].values,
                                  dt[f"B/{cols[0]}/1/0"]["image"].values)
    assert dt.hcs.wells == [f"{r}/{c}" for r in "AB" for c in cols]  # the input is untouched


def test_sel_fields_levels_acquisition(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    s = dt.hcs.sel(wells=["A1", "B2"], fields=["1"], levels=[-1], acquisition=0)
    assert s.hcs.field_paths == [f"{w}/1" for w in s.hcs.wells]
    fp = s.hcs.field_paths[0]
    assert set(s[fp].children) == {"1", "labels"}
    assert [d["path"] for d in s[fp].attrs["ome"]["multiscales"][0]["datasets"]] == ["1"]
    assert s.attrs["ome"]["plate"]["field_count"] == 1
    assert [a.id for a in s.hcs.acquisitions] == [0]
    # the selection equals opening with the same selection
    o = xr.open_datatree(plate, engine="ome-hcs", wells=["A1", "B2"], fields=["1"],
                         levels=[-1], acquisition=0)
    xr.testing.assert_identical(s, o)


def test_sel_bad_input(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    with pytest.raises(HcsSelectionError, match="no rows"):
        dt.hcs.sel(rows=["Q"])
    with pytest.raises(HcsSelectionError, match="no columns"):
        dt.hcs.sel(columns=[99])
    with pytest.raises(HcsSelectionError, match="no acquisition"):
        dt.hcs.sel(acquisition=3)
    with pytest.raises(HcsSelectionError, match="level 5"):
        dt.hcs.sel(levels=[5])


def test_remove_image_in_memory_then_write(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    w = dt.hcs.wells[0]
    fields = [im["path"] for im in dt[w].attrs["ome"]["well"]["images"]]
    row, col = w.split("/")
    one = dt.hcs.remove_image(row, int(col), fields[0])
    assert f"{w}/{fields[0]}" not in one.hcs.field_paths and fields[0] not in one[w].children
    assert [im["path"] for im in one[w].attrs["ome"]["well"]["images"]] == fields[1:]
    assert len(one.hcs.field_paths) == len(dt.hcs.field_paths) - 1
    assert f"{w}/{fields[0]}" in dt.hcs.field_paths  # the input is untouched
    gone = one
    for f in fields[1:]:  # the well's last field takes the well with it
        gone = gone.hcs.remove_image(row, col, f)
    assert w not in gone.hcs.wells and gone.hcs.rows == dt.hcs.rows
    assert gone.hcs.columns == dt.hcs.columns
    out = tmp_path / "p.zarr"
    gone.hcs.to_zarr(out)
    back = xr.open_datatree(out, engine="ome-hcs", validate=True)
    assert back.hcs.field_paths == gone.hcs.field_paths
    with pytest.raises(HcsNotFoundError, match=f"lists no field '{fields[0]}'"):
        one.hcs.remove_image(row, col, fields[0])
    with pytest.raises(HcsNotFoundError, match="no well 'Q/0?1'"):
        dt.hcs.remove_image("Q", 1, "0")


def test_an_opened_field_added_elsewhere_keeps_its_z_spacing_on_every_level(plate, tmp_path):
    """A level read from a plate has one z plane whose 2 µm spacing only its index knows:
    every level of the new field keeps it (a pyramid whose z scale went from 2 to 1 is not
    valid multiscales metadata)."""
    import xarray_hcs

    dt = xr.open_datatree(plate, engine="ome-hcs")
    fp = dt.hcs.field_paths[0]
    img = dt[f"{fp}/0"]["image"]
    z = dt[fp].attrs["ome"]["multiscales"][0]["axes"]
    iz = [a["name"] for a in z].index("z")
    assert img.sizes["z"] == 1
    written = {
        "in memory": (lambda p: dt.hcs.add_image("H", 12, img, levels=2).hcs.to_zarr(p)),
        "on disk": (lambda p: xarray_hcs.add_image(p, "H", 12, img, levels=2)),
        "planned": (lambda p: xarray_hcs.create_plate(p, ["H/12"], img, levels=2)),
    }
    for how, write in written.items():
        out = tmp_path / f"{how.replace(' ', '_')}.zarr"
        write(out)
        back = xr.open_datatree(out, engine="ome-hcs", validate=True)
        new = [f for f in back.hcs.field_paths if f.startswith("H/12/")][0]
        ds = back[new].attrs["ome"]["multiscales"][0]["datasets"]
        assert [d["coordinateTransformations"][0]["scale"][iz] for d in ds] == [2.0, 2.0], how


def _image(ny=24, nx=32, channels=("DAPI", "GFP"), dtype="uint16"):
    data = (np.arange(len(channels) * ny * nx) % 1000).astype(dtype).reshape(
        len(channels), 1, ny, nx)
    return xr.DataArray(data, dims=("c", "z", "y", "x"),
                        coords={"c": list(channels), "x": 10 + np.arange(nx) * 0.5,
                                "y": np.arange(ny) * 0.5, "z": [0.0]})


def test_add_image_in_memory_then_write(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    img = _image(16, 16)
    new = dt.hcs.add_image("C", 7, img, acquisition=5, acquisition_name="extra",
                           labels={"cells": (img.isel(c=0) % 3).astype("uint16")})
    col = "07" if dt.hcs.columns[0] == "01" else "7"
    assert f"C/{col}/0" in new.hcs.field_paths
    assert new.hcs.rows == ["A", "B", "C"]
    assert [a.id for a in new.hcs.acquisitions] == [0, 5]
    assert len(new[f"C/{col}/0"].children) == 3  # 2 levels as the plate has, and labels
    assert "C" not in dt.children  # the input is untouched
    lv1 = new[f"C/{col}/0/1"].to_dataset()
    np.testing.assert_allclose(lv1.x.values[:2], [10.25, 11.25])
    expected = img.coarsen(y=2, x=2).mean().round().astype("uint16")
    np.testing.assert_array_equal(lv1["image"].values, expected.values)
    out = tmp_path / "new.zarr"
    new.hcs.to_zarr(out)
    back = xr.open_datatree(out, engine="ome-hcs", validate=True)
    assert back.hcs.field_paths == new.hcs.field_paths
    np.testing.assert_array_equal(back[f"C/{col}/0/0"]["image"].values, img.values)
    np.testing.assert_allclose(back[f"C/{col}/0/0"].to_dataset().x.values, img.x.values)


def test_add_image_bad_input(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    with pytest.raises(HcsMetadataError, match="not among"):
        dt.hcs.add_image("A", 1, _image().rename({"c": "channel"}))
    with pytest.raises(HcsMetadataError, match="needs y and x"):
        dt.hcs.add_image("A", 1, _image().isel(x=0))
    with pytest.raises(HcsMetadataError, match="already has a field"):
        dt.hcs.add_image("A", 1, _image(), field="0")
    with pytest.raises(HcsMetadataError, match="not evenly spaced"):
        img = _image()
        dt.hcs.add_image("A", 1, img.assign_coords(x=img.x.values ** 2))
    with pytest.raises(HcsMetadataError, match="integer dtype"):
        dt.hcs.add_image("A", 1, _image(), labels={"x": _image().isel(c=0).astype("f4")})
    with pytest.raises(TypeError):
        dt.hcs.add_image("A", 1, np.zeros((4, 4)))
    two = dt.hcs.add_image("A", 1, _image(), acquisition=4)
    with pytest.raises(HcsMetadataError, match="pass acquisition="):
        two.hcs.add_image("A", 1, _image())


# ------------------------------------------------------------------ property: round trips


@st.composite
def trees(draw):
    """Random small plates built with add_image: layout, dims, dtypes, coords, labels."""
    version = draw(st.sampled_from(["0.4", "0.5"]))
    root = xr.DataTree()
    root.attrs["ome"] = {"version": version, "plate": {"rows": [], "columns": [],
                                                       "wells": []}}
    dims = draw(st.sampled_from([("y", "x"), ("c", "y", "x"), ("c", "z", "y", "x"),
                                 ("t", "c", "z", "y", "x"), ("z", "y", "x")]))
    dtype = draw(st.sampled_from(["uint8", "uint16", "int32", "float32"]))
    levels = draw(st.integers(1, 3))
    n_images = draw(st.integers(1, 4))
    wells = st.tuples(st.sampled_from("ABCP"), st.integers(1, 24))
    spacing = draw(st.sampled_from([0.5, 0.65, 1.0, 2.0]))
    origin = draw(st.floats(-100, 100, allow_nan=False).map(lambda v: round(v, 3)))
    with_labels = draw(st.booleans())
    # the spec wants an acquisition on every image once a plate has several
    acquisitions = draw(st.sampled_from([[None], [0], [0, 3]]))
    n_channels = draw(st.integers(1, 3))  # fields of one plate share their channels here
    for _ in range(n_images):
        row, col = draw(wells)
        shape = {"t": 2, "c": n_channels, "z": 2,
                 "y": 8 * 2 ** (levels - 1), "x": 4 * 2 ** (levels - 1)}
        sizes = [shape[d] for d in dims]
        data = (np.arange(int(np.prod(sizes))) % 97).astype(dtype).reshape(sizes)
        coords = {"x": origin + spacing * np.arange(shape["x"]),
                  "y": spacing * np.arange(shape["y"])}
        if "c" in dims:
            coords["c"] = [f"ch{k}" for k in range(shape["c"])]
        img = xr.DataArray(data, dims=dims, coords=coords)
        labels = None
        if with_labels:
            lab = img.isel({d: 0 for d in dims if d in ("c", "t")}, drop=True)
            labels = {"cells": (lab % 5).astype("uint16")}
        root = root.hcs.add_image(row, col, img, levels=levels, labels=labels,
                                  acquisition=draw(st.sampled_from(acquisitions)))
    return root, version


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(trees(), st.sampled_from(["0.4", "0.5"]))
def test_round_trip_random_plates(tmp_path_factory, case, target):
    tree, version = case
    out = tmp_path_factory.mktemp("rt") / "p.zarr"
    tree.hcs.to_zarr(out, ngff_version=target)
    back = xr.open_datatree(out, engine="ome-hcs", validate=True)
    assert back.hcs.version == target
    assert back.hcs.field_paths == tree.hcs.field_paths
    assert back.hcs.wells == tree.hcs.wells
    for fp in tree.hcs.field_paths:
        for name, node in tree[fp].children.items():
            if name == "labels":
                continue
            a, b = node.to_dataset(), back[f"{fp}/{name}"].to_dataset()
            np.testing.assert_array_equal(b["image"].values, a["image"].values)
            for d in ("x", "y", "z", "t"):
                if d in a.coords:
                    np.testing.assert_allclose(b[d].values, a[d].values, rtol=1e-12,
                                               atol=1e-9)
            if "c" in a.coords:
                assert list(b.c.values) == list(a.c.values)
    # and the reopened tree writes itself back identically
    again = out.parent / "again.zarr"
    back.hcs.to_zarr(again)
    xr.testing.assert_identical(back, xr.open_datatree(again, engine="ome-hcs"))


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_selection_round_trip(plate, tmp_path_factory, data):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    wells = data.draw(st.lists(st.sampled_from(dt.hcs.wells), min_size=1, unique=True))
    fields = data.draw(st.sampled_from([None, ["0"], ["1"], ["0", "1"]]))
    levels = data.draw(st.sampled_from([None, [0], [-1], ["1"]]))
    s = dt.hcs.sel(wells=wells, fields=fields, levels=levels)
    out = tmp_path_factory.mktemp("sel") / "p.zarr"
    s.hcs.to_zarr(out)
    xr.testing.assert_identical(s, xr.open_datatree(out, engine="ome-hcs"))
