"""Opening plates: tree layout, coordinates, attrs, laziness, selection, the entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cf_xarray  # noqa: F401  registers .cf
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import xarray_hcs
from conftest import TINY
from xarray_hcs.errors import HcsSelectionError
from xarray_hcs.sample import well_intensity


def test_tree_layout_is_the_store_layout(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    cols = ["01", "02", "03"] if "v05" in str(plate) else ["1", "2", "3"]
    assert dt.hcs.rows == ["A", "B"]
    assert dt.hcs.columns == cols
    assert dt.hcs.wells == [f"{r}/{c}" for r in "AB" for c in cols]
    assert len(dt.hcs.field_paths) == 12
    for fp in dt.hcs.field_paths:
        assert set(dt[fp].children) == {"0", "1", "labels"}
        assert list(dt[fp + "/labels"].children) == ["nuclei"]
    assert dt.hcs.version == ("0.5" if "v05" in str(plate) else "0.4")


def test_pixels_equal_plain_zarr_at_every_level(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    root = zarr.open_group(plate, mode="r")
    for fp in dt.hcs.field_paths[:4]:
        for lv in ("0", "1"):
            node = dt[f"{fp}/{lv}"]
            np.testing.assert_array_equal(node["image"].values, root[f"{fp}/{lv}"][...])
            lab = dt[f"{fp}/labels/nuclei/{lv}"]["labels"].values
            np.testing.assert_array_equal(lab, root[f"{fp}/labels/nuclei/{lv}"][...])


def test_known_intensities(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    img = dt["B/" + dt.hcs.columns[2] + "/1/0"]["image"]
    assert int(img.sel(c="GFP").min()) == well_intensity(1, 2, 1)
    assert int(img.sel(c="DAPI").min()) == well_intensity(1, 2, 0)


def test_coordinates_are_physical_and_cf(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    fp = dt.hcs.field_paths[0]
    field = dt[fp]
    assert list(field.coords["c"].values) == ["DAPI", "GFP"]
    # a level-1 pixel is the mean of 2 x 2: centred half a level-0 pixel on
    for lv, step, shift in (("0", TINY.pixel_size, 0.0),
                            ("1", 2 * TINY.pixel_size, TINY.pixel_size / 2)):
        ds = dt[f"{fp}/{lv}"].to_dataset()
        np.testing.assert_allclose(ds.x.values, shift + np.arange(ds.sizes["x"]) * step)
        assert ds.x.attrs == {"axis": "X", "units": "micrometer", "long_name": "x position"}
        assert ds.cf.axes == {"X": ["x"], "Y": ["y"], "Z": ["z"]}
        assert ds.z.values.tolist() == [0.0]
        assert list(ds.c.values) == ["DAPI", "GFP"]  # inherited from the field node
    # label levels share the image's grid
    lab = dt[f"{fp}/labels/nuclei/0"].to_dataset()
    assert lab["labels"].dims == ("z", "y", "x")
    xr.testing.assert_identical(lab.x, dt[f"{fp}/0"].to_dataset().x)


def test_attrs_keep_ome_metadata(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    ome = dt.attrs["ome"]
    assert ome["version"] == dt.hcs.version
    assert ome["plate"]["field_count"] == 2
    well = dt[dt.hcs.wells[0]]
    assert [im["path"] for im in well.attrs["ome"]["well"]["images"]] == ["0", "1"]
    field = dt[dt.hcs.field_paths[0]]
    assert field.attrs["acquisition"] == 0
    assert field.attrs["ome"]["multiscales"][0]["datasets"][1]["path"] == "1"
    assert field.attrs["ome"]["omero"]["channels"][1]["label"] == "GFP"
    assert "version" not in field.attrs["ome"]["multiscales"][0]  # lifted, version-neutral


def test_lazy_by_default_and_dask_with_chunks(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    var = dt[dt.hcs.field_paths[0] + "/0"]["image"].variable
    assert not var._in_memory
    dtc = xr.open_datatree(plate, engine="ome-hcs", chunks={})
    img = dtc[dtc.hcs.field_paths[0] + "/0"]["image"]
    assert isinstance(img.data, da.Array)
    assert img.chunks == ((1, 1), (1,), (16,), (16,))


def test_open_plate_gives_dask_named_by_path(plate):
    dt = xarray_hcs.open_plate(plate)
    names = set()
    for fp in dt.hcs.field_paths:
        for lv in ("0", "1"):
            a = dt[f"{fp}/{lv}"]["image"].data
            assert isinstance(a, da.Array)
            names.add(a.name)
    assert len(names) == 24  # one name per array: no collisions between nodes
    again = xarray_hcs.open_plate(plate)
    fp = dt.hcs.field_paths[0]
    assert again[f"{fp}/0"]["image"].data.name == dt[f"{fp}/0"]["image"].data.name
    # a combined compute over many nodes gives the right per-node answers
    sums = da.compute(*[dt[f"{fp}/0"]["image"].data.sum() for fp in dt.hcs.field_paths])
    root = zarr.open_group(plate, mode="r")
    assert list(sums) == [root[f"{fp}/0"][...].sum() for fp in dt.hcs.field_paths]


def test_open_plate_matches_open_datatree(plate):
    a = xarray_hcs.open_plate(plate, chunks=None)
    b = xr.open_datatree(plate, engine="ome-hcs")
    assert a.hcs.field_paths == b.hcs.field_paths
    xr.testing.assert_identical(a, b)


# ------------------------------------------------------------------ selection


def test_select_wells_reads_only_those(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs", wells=["B2", "A/" + ("01" if "v05" in
                                                                         str(plate) else "1")])
    assert len(dt.hcs.wells) == 2
    assert [w["path"] for w in dt.attrs["ome"]["plate"]["wells"]] == dt.hcs.wells
    assert set(dt.children) == {"A", "B"}
    assert len(dt.attrs["ome"]["plate"]["rows"]) == 2  # the layout stays a full plate


def test_select_fields_levels_labels(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs", fields=[1], levels=[-1], labels=False)
    assert all(fp.endswith("/1") for fp in dt.hcs.field_paths)
    fp = dt.hcs.field_paths[0]
    assert set(dt[fp].children) == {"1"}
    assert dt[fp + "/1"]["image"].shape == (2, 1, 8, 8)
    w = dt[dt.hcs.wells[0]].attrs["ome"]["well"]
    assert [im["path"] for im in w["images"]] == ["1"]
    assert dt.attrs["ome"]["plate"]["field_count"] == 1


def test_select_levels_by_path(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs", levels=["1"], labels=["nuclei"])
    fp = dt.hcs.field_paths[0]
    assert set(dt[fp].children) == {"1", "labels"}
    # a label with as many levels as its image keeps the same ones: the two stay level for
    # level (a written plate is valid: ome-zarr-models wants equal level counts)
    assert set(dt[fp + "/labels/nuclei"].children) == {"1"}
    assert [d["path"] for d in dt[fp + "/labels/nuclei"].attrs["ome"]["multiscales"][0][
        "datasets"]] == ["1"]
    assert dt[fp + "/labels/nuclei/1"]["labels"].shape[-2:] == dt[fp + "/1"]["image"].shape[-2:]


def test_select_acquisition(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs", acquisition="sample")
    assert len(dt.hcs.field_paths) == 12
    assert [a.id for a in dt.hcs.acquisitions] == [0]
    with pytest.raises(HcsSelectionError, match="no acquisition 5"):
        xr.open_datatree(plate, engine="ome-hcs", acquisition=5)


@pytest.mark.parametrize(("kw", "message"), [
    ({"wells": ["Z/99"]}, "no well 'Z/99'"),
    ({"wells": ["nonsense!"]}, "cannot read"),
    ({"levels": [7]}, "level 7 does not exist"),
    ({"levels": ["s9"]}, "level 's9' does not exist"),
])
def test_bad_selection(plate, kw, message):
    with pytest.raises(HcsSelectionError, match=message):
        xr.open_datatree(plate, engine="ome-hcs", **kw)


# ------------------------------------------------------------------ groups, datasets, engine


def test_open_groups(plate):
    groups = xr.open_groups(plate, engine="ome-hcs", wells=["A1"])
    fp = "/A/" + ("01" if "v05" in str(plate) else "1")
    assert f"{fp}/0/0" in groups
    assert groups[f"{fp}/0/0"]["image"].dims == ("c", "z", "y", "x")
    assert "plate" in groups["/"].attrs["ome"]


def test_open_dataset_one_node(plate):
    cols = xr.open_datatree(plate, engine="ome-hcs", levels=[0]).hcs.columns
    ds = xr.open_dataset(plate, engine="ome-hcs", group=f"B/{cols[1]}/0/1")
    assert ds["image"].shape == (2, 1, 8, 8)
    assert list(ds.c.values) == ["DAPI", "GFP"]
    stacked = xr.open_dataset(plate, engine="ome-hcs")  # no group: the stacked plate
    assert stacked["image"].dims[:2] == ("well", "field")
    with pytest.raises(HcsSelectionError, match="no such node"):
        xr.open_dataset(plate, engine="ome-hcs", group="Z/99/0/0", wells=["A1"])


def test_engine_found_without_importing_xarray_hcs(plate):
    code = textwrap.dedent(f"""
        import sys, xarray as xr
        dt = xr.open_datatree({str(plate)!r}, engine="ome-hcs")
        assert "xarray_hcs" in sys.modules  # loaded by xarray through the entry point
        print(len(dt.hcs.wells))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "6"


def test_guess_can_open(plate, tmp_path):
    from xarray_hcs.backend import OmeHcsBackendEntrypoint

    be = OmeHcsBackendEntrypoint()
    assert be.guess_can_open(str(plate))
    assert not be.guess_can_open(str(plate / "A"))  # a row group is no plate
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    assert not be.guess_can_open(str(tmp_path / "plain.zarr"))
    assert not be.guess_can_open("http://127.0.0.1:1/plate.zarr")
    assert xr.open_datatree(plate).hcs.wells  # engine guessed


# ------------------------------------------------------------------ more formats and shapes


def test_sharded_arrays_chunk_on_shards(fresh_plate):
    p = fresh_plate("0.5", labels=False)
    root = zarr.open_group(p, mode="r+")
    data = root["A/01/0/0"][...]
    arr = root.create_array("A/01/0/0", shape=data.shape, dtype=data.dtype, chunks=(1, 1, 4, 4),
                            shards=(1, 1, 8, 16), dimension_names=["c", "z", "y", "x"],
                            overwrite=True)
    arr[...] = data
    dt = xr.open_datatree(p, engine="ome-hcs", chunks={})
    img = dt["A/01/0/0"]["image"]
    assert img.chunks == ((1, 1), (1,), (8, 8), (16,))
    np.testing.assert_array_equal(img.values, data)
    assert xarray_hcs.open_plate(p)["A/01/0/0"]["image"].data.chunksize == (1, 1, 8, 16)


def _to_v06(ms: dict) -> dict:
    """A 0.5 multiscales entry rewritten with 0.6's coordinateSystems and sequences."""
    datasets = []
    for d in ms["datasets"]:
        (scale,) = [t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale"]
        datasets.append({"path": d["path"], "coordinateTransformations": [{
            "type": "sequence", "input": {"path": d["path"]}, "output": {"name": "physical"},
            "transformations": [{"type": "scale", "scale": scale},
                                {"type": "translation",
                                 "translation": [0.0] * (len(scale) - 2) + [10.0, 20.0]}]}]})
    return {"name": ms.get("name"), "coordinateSystems": [{"name": "physical",
                                                           "axes": ms["axes"]}],
            "datasets": datasets}


def test_fields_in_ngff_06(fresh_plate):
    import json

    p = fresh_plate("0.5", rows=1, columns=2, labels=False)
    for doc_path in p.rglob("zarr.json"):
        doc = json.loads(doc_path.read_text())
        ome = doc.get("attributes", {}).get("ome")
        if ome is None:
            continue
        ome["version"] = "0.6rc0"
        if "multiscales" in ome:
            ome["multiscales"] = [_to_v06(m) for m in ome["multiscales"]]
        doc_path.write_text(json.dumps(doc))
    dt = xr.open_datatree(p, engine="ome-hcs")
    assert dt.hcs.version == "0.6rc0"
    ds = dt["A/01/0/1"].to_dataset()
    assert float(ds.x[0]) == 20.0 and float(ds.y[0]) == 10.0
    assert float(ds.x[1] - ds.x[0]) == pytest.approx(2 * TINY.pixel_size)
    np.testing.assert_array_equal(ds["image"].values, zarr.open_group(p)["A/01/0/1"][...])


def test_lazy_and_dask_arrays_pickle(plate):
    import pickle

    dt = xarray_hcs.open_plate(plate)
    fp = dt.hcs.field_paths[3]
    a = dt[f"{fp}/0"]["image"].data
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(b.compute(), a.compute())
    lazy = xr.open_datatree(plate, engine="ome-hcs")[f"{fp}/1"].to_dataset()
    again = pickle.loads(pickle.dumps(lazy))
    xr.testing.assert_identical(again.load(), lazy.load())


def test_multiscale_level_transform_moves_coordinates(fresh_plate):
    import json

    p = fresh_plate("0.5", rows=1, columns=1, fields=1, labels=False)
    doc_path = p / "A/01/0/zarr.json"
    doc = json.loads(doc_path.read_text())
    doc["attributes"]["ome"]["multiscales"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [1, 1, 1, 2]}, {"type": "translation",
                                                    "translation": [0, 0, 0, 100]}]
    doc_path.write_text(json.dumps(doc))
    ds = xr.open_datatree(p, engine="ome-hcs")["A/01/0/0"].to_dataset()
    np.testing.assert_allclose(ds.x.values[:3], 100 + 2 * TINY.pixel_size * np.arange(3))
    np.testing.assert_allclose(ds.y.values[:3], TINY.pixel_size * np.arange(3))


# ------------------------------------------------------------------ property: any layout


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 3), columns=st.integers(1, 3), fields=st.integers(1, 3),
       levels=st.integers(1, 3), channels=st.integers(1, 3),
       version=st.sampled_from(["0.4", "0.5"]), width=st.sampled_from([0, 2]))
def test_any_layout_opens_as_written(tmp_path_factory, rows, columns, fields, levels,
                                     channels, version, width):
    import dataclasses

    from xarray_hcs.sample import write_sample_plate

    layout = dataclasses.replace(
        TINY, rows=rows, columns=columns, fields=fields, levels=levels, labels=False,
        channels=tuple(f"ch{i}" for i in range(channels)), version=version,
        column_width=width, shape_zyx=(1, 8, 8))
    p = write_sample_plate(tmp_path_factory.mktemp("layout") / "p.zarr", layout)
    dt = xarray_hcs.open_plate(p)
    assert dt.hcs.rows == layout.row_names and dt.hcs.columns == layout.column_names
    assert len(dt.hcs.field_paths) == rows * columns * fields
    root = zarr.open_group(p, mode="r")
    for fp in dt.hcs.field_paths:
        assert list(dt[fp].children) == [str(i) for i in range(levels)]
        assert list(dt[fp].coords["c"].values) == list(layout.channels)
        last = str(levels - 1)
        np.testing.assert_array_equal(dt[f"{fp}/{last}"]["image"].values,
                                      root[f"{fp}/{last}"][...])


def test_image_names_what_it_cannot_find(plate_v05):
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    fp = dt.hcs.field_paths[0]
    well = fp.rsplit("/", 1)[0]
    with pytest.raises(xarray_hcs.HcsSelectionError, match="holds no field '9'"):
        dt.hcs.image(f"{well}/9")
    with pytest.raises(xarray_hcs.HcsSelectionError, match="no well 'Z99'"):
        dt.hcs.image("Z99/0")
    with pytest.raises(xarray_hcs.HcsSelectionError, match="does not exist"):
        dt.hcs.image(fp, level=7)
    with pytest.raises(xarray_hcs.HcsSelectionError, match="no label image 'cells'"):
        dt.hcs.image(fp, label="cells")
    with pytest.raises(xarray_hcs.HcsSelectionError, match="cannot read"):
        dt.hcs.image("B")
    img = dt.hcs.image(fp, level=-1)
    last = dt[fp].attrs["ome"]["multiscales"][0]["datasets"][-1]["path"]
    assert img.equals(dt[f"{fp}/{last}"]["image"])


def test_a_misspelt_option_is_a_type_error_naming_the_valid_ones(plate_v05):
    for kw, hint in (({"well": ["B03"]}, "wells"), ({"levle": 2}, "levels"),
                     ({"chunk": {}}, "chunks"), ({"feilds": [0]}, "fields")):
        with pytest.raises(TypeError, match=f"did you mean '{hint}'") as e:
            xr.open_datatree(plate_v05, engine="ome-hcs", **kw)
        assert isinstance(e.value, xarray_hcs.HcsTypeError)
        assert "the ome-hcs engine takes" in str(e.value)
    with pytest.raises(TypeError, match="did you mean 'level'"):
        xr.open_dataset(plate_v05, engine="ome-hcs", levle=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        xr.open_groups(plate_v05, engine="ome-hcs", wels=["B03"])
    # xarray's own decoding options change nothing and are accepted
    xr.open_datatree(plate_v05, engine="ome-hcs", decode_times=False, mask_and_scale=False)


def test_selecting_fields_no_well_has_is_refused_on_open_and_in_sel(plate_v05):
    with pytest.raises(xarray_hcs.HcsSelectionError, match=r"field\(s\) \['5'\]"):
        xr.open_datatree(plate_v05, engine="ome-hcs", fields=[5])
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    with pytest.raises(xarray_hcs.HcsSelectionError, match=r"field\(s\) \['5'\]"):
        dt.hcs.sel(fields=[5])
    with pytest.raises(xarray_hcs.HcsSelectionError, match="no field has a table 'nucleii'"):
        dt.hcs.concat_tables("nucleii", strict=False)
    with pytest.raises(xarray_hcs.HcsSelectionError, match="no well 'B3'|no well"):
        dt.hcs.well("Z3")
