"""Plates shaped like real screens and real writers' quirks (reports from the field), each
with the right value asserted: field paths that differ per well, channel sets that differ per
well, omero without windows, label images with fewer levels, fill values, Fractal v1 tables.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import xarray_hcs
from xarray_hcs.errors import HcsMetadataError


def _v04_plate(root: Path, wells: list[str], rows: list[str], cols: list[str]) -> zarr.Group:
    g = zarr.open_group(root, mode="w", zarr_format=2)
    g.attrs.put({"plate": {"version": "0.4", "rows": [{"name": r} for r in rows],
                           "columns": [{"name": c} for c in cols],
                           "wells": [{"path": w, "rowIndex": rows.index(w.split("/")[0]),
                                      "columnIndex": cols.index(w.split("/")[1])}
                                     for w in wells]}})
    return g


_CYX = [{"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}]


def _field(wg: zarr.Group, path: str, data: np.ndarray, *, translation=None, omero=None,
           fill=0) -> None:
    fg = wg.require_group(path)
    cts = [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    if translation is not None:
        cts.append({"type": "translation", "translation": translation})
    attrs = {"multiscales": [{"version": "0.4", "axes": _CYX, "datasets": [
        {"path": "0", "coordinateTransformations": cts}]}]}
    if omero is not None:
        attrs["omero"] = omero
    fg.attrs.put(attrs)
    a = fg.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(1, *data.shape[1:]),
                        fill_value=fill, chunk_key_encoding={"name": "v2", "separator": "/"})
    a[:] = data


# ------------------------------------------------------------ field paths differ per well

LAYOUT = {"A/1": ["Pos000", "Pos001"], "A/2": ["7"], "B/1": ["1", "0"]}


@pytest.fixture(scope="module")
def paths_plate(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """Wells with field paths Pos000/Pos001, 7, and 1, 0 (listed in that order); every field
    a constant of its own at its own stage position (x = 10 * value micrometres)."""
    root = tmp_path_factory.mktemp("paths") / "plate.zarr"
    g = _v04_plate(root, list(LAYOUT), ["A", "B"], ["1", "2"])
    value = {}
    k = 100
    for w, fields in LAYOUT.items():
        wg = g.require_group(w)
        wg.attrs.put({"well": {"version": "0.4", "images": [{"path": f} for f in fields]}})
        for f in fields:
            _field(wg, f, np.full((1, 16, 16), k, "uint16"), translation=[0.0, 0.0, 10.0 * k])
            value[f"{w}/{f}"] = k
            k += 100
    return root, value


@pytest.mark.parametrize("how", ["lazy", "after a read", "chunks={}", "open_plate"])
def test_field_paths_and_positions_whatever_the_opening(paths_plate, how):
    root, value = paths_plate
    if how == "open_plate":
        dt = xarray_hcs.open_plate(root)
    else:
        dt = xr.open_datatree(root, engine="ome-hcs", **({"chunks": {}} if how == "chunks={}"
                                                          else {}))
    if how == "after a read":
        dt["A/1/Pos000/0"]["image"].values  # noqa: B018
    st = dt.hcs.stack(0)
    assert st["field_path"].values.tolist() == [["Pos000", "Pos001"], ["7", ""], ["1", "0"]]
    assert st["present"].values.tolist() == [[True, True], [True, False], [True, True]]
    for wi, w in enumerate(st["well"].values):
        for fi, fp in enumerate(st["field_path"].values[wi]):
            if not fp:
                assert (st.values[wi, fi] == 0).all()  # the fill value, marked absent
                continue
            v = value[f"{w}/{fp}"]
            assert np.unique(st.values[wi, fi]).tolist() == [v]
            x0 = float(st["x"][0]) + float(st["x_origin"][wi, fi])
            assert x0 == 10.0 * v  # each field where it sits, not at the first field's place
    if how == "chunks={}":
        assert len(st.data.dask.layers) == 1  # one layer, whatever the number of fields
    sub = dt.hcs.sel(wells=["A1", "B1"]).hcs.stack(0)
    assert sub["x_origin"].values.tolist() == [[1000.0, 2000.0], [4000.0, 5000.0]]
    per_field = dt.hcs.map_fields(lambda im: float(im.max()))
    assert per_field["result"].values[2].tolist() == [400.0, 500.0]  # B/1 lists "1", "0"


def test_field_paths_survive_round_trips_and_add_image(paths_plate, tmp_path):
    root, value = paths_plate
    dt = xr.open_datatree(root, engine="ome-hcs")
    for v in ("0.4", "0.5"):
        dt.hcs.to_zarr(tmp_path / f"{v}.zarr", ngff_version=v)
        back = xr.open_datatree(tmp_path / f"{v}.zarr", engine="ome-hcs")
        for fp, val in value.items():
            assert np.unique(back[f"{fp}/0"]["image"].values).tolist() == [val]
    assert dt.hcs.sel(fields=[0]).hcs.field_paths == ["B/1/0"]  # ints are paths, not positions
    copy = tmp_path / "copy.zarr"
    dt.hcs.to_zarr(copy, ngff_version="0.4")
    new = xarray_hcs.add_image(copy, "A", 1, xr.DataArray(np.full((1, 16, 16), 9, "uint16"),
                                                          dims=("c", "y", "x")))
    assert new == "A/1/0"
    back = xr.open_datatree(copy, engine="ome-hcs")
    assert np.unique(back["A/1/Pos001/0"]["image"].values).tolist() == [200]


# ------------------------------------------------------------ channel sets differ per well

@pytest.fixture(scope="module")
def channels_plate(tmp_path_factory) -> Path:
    """A/1 imaged with [DAPI, GFP], A/2 with [DAPI, RFP]; channel 0 is 1, channel 1 is 2
    (A/1's GFP) and 3 (A/2's RFP)."""
    root = tmp_path_factory.mktemp("channels") / "plate.zarr"
    g = _v04_plate(root, ["A/1", "A/2"], ["A"], ["1", "2"])
    for i, (w, labels) in enumerate({"A/1": ["DAPI", "GFP"], "A/2": ["DAPI", "RFP"]}.items()):
        wg = g.require_group(w)
        wg.attrs.put({"well": {"version": "0.4", "images": [{"path": "0"}]}})
        data = np.stack([np.full((8, 8), 1, "uint8"), np.full((8, 8), 2 + i, "uint8")])
        _field(wg, "0", data, omero={"channels": [
            {"label": lab, "color": "FFFFFF", "window": {"min": 0, "max": 255, "start": 0,
                                                          "end": 255}} for lab in labels]})
    return root


def test_differing_channels_are_refused_by_every_plate_wide_view(channels_plate):
    dt = xr.open_datatree(channels_plate, engine="ome-hcs")
    views = [lambda: dt.hcs.stack(0),
             lambda: xr.open_datatree(channels_plate, engine="ome-hcs", chunks={}).hcs.stack(0),
             lambda: xr.open_dataset(channels_plate, engine="ome-hcs", level=0),
             lambda: dt.hcs.map_fields(lambda im: im.mean(["y", "x"])),
             lambda: dt.hcs.montage(level=0)]
    for view in views:
        with pytest.raises(HcsMetadataError, match=r"\[DAPI, GFP\] in A/1/0; \[DAPI, RFP\] "
                                                   r"in A/2/0.*channels='union'"):
            view()


def test_differing_channels_aligned_by_label(channels_plate):
    dt = xr.open_datatree(channels_plate, engine="ome-hcs", chunks={})
    st = dt.hcs.stack(0, channels="union")
    assert st["c"].values.tolist() == ["DAPI", "GFP", "RFP"]
    assert st["channel_present"].values.tolist() == [[[True, True, False]],
                                                     [[True, False, True]]]
    means = st.mean(["y", "x"]).values[:, 0]
    assert means.tolist() == [[1, 2, 0], [1, 0, 3]]  # A/2 has no GFP: fill, marked absent
    ds = xr.open_dataset(channels_plate, engine="ome-hcs", level=0, channels="union")
    xr.testing.assert_identical(ds["image"].load(), st.load())
    m = dt.hcs.map_fields(lambda im: im.mean(["y", "x"]), channels="union")["image"]
    np.testing.assert_array_equal(m.values[:, 0], [[1, 2, np.nan], [1, np.nan, 3]])
    assert "GFP" not in dt.hcs.sel(wells=["A2"]).hcs.stack(0)["c"].values
    assert "channels:     2 different sets" in dt.hcs.summary()


def test_differing_channels_round_trip(channels_plate, tmp_path):
    dt = xr.open_datatree(channels_plate, engine="ome-hcs")
    for v in ("0.4", "0.5"):
        dt.hcs.to_zarr(tmp_path / f"{v}.zarr", ngff_version=v)
        back = xr.open_datatree(tmp_path / f"{v}.zarr", engine="ome-hcs")
        assert back["A/2/0"]["c"].values.tolist() == ["DAPI", "RFP"]
        assert int(back["A/2/0/0"]["image"].sel(c="RFP").max()) == 3


# ------------------------------------------------------------ omero without window/colour

def test_omero_without_window_is_completed_on_write(tmp_path):
    """Converters write channels with a label only, no colour, or a window without min/max;
    a written plate must carry what the schemas and ngio require, keeping what was there."""
    root = tmp_path / "plate.zarr"
    g = _v04_plate(root, ["B/03"], ["B"], ["03"])
    wg = g.require_group("B/03")
    wg.attrs.put({"well": {"version": "0.4", "images": [{"path": "0"}]}})
    chans = [{"label": "DAPI"}, {"label": "GFP", "color": "00FF00"},
             {"label": "RFP", "color": "FF0000", "window": {"start": 0, "end": 500}}]
    data = np.arange(3 * 32 * 32, dtype="uint16").reshape(3, 32, 32)
    _field(wg, "0", data, omero={"channels": chans, "version": "0.4"})
    dt = xr.open_datatree(root, engine="ome-hcs")
    assert dt["B/03/0"]["c"].values.tolist() == ["DAPI", "GFP", "RFP"]
    for v in ("0.4", "0.5"):
        out = tmp_path / f"out-{v}.zarr"
        dt.hcs.to_zarr(out, ngff_version=v)
        written = xr.open_datatree(out, engine="ome-hcs")["B/03/0"].attrs["ome"]["omero"]
        got = written["channels"]
        assert [c["label"] for c in got] == ["DAPI", "GFP", "RFP"]
        assert got[0]["color"] == "0000FF" and got[1]["color"] == "00FF00"
        assert got[0]["window"] == {"min": 0.0, "max": 65535.0, "start": 0.0, "end": 65535.0}
        assert got[2]["window"] == {"start": 0, "end": 500, "min": 0.0, "max": 65535.0}
        from test_write_valid import validate_plate

        validate_plate(out, v)
        import ngio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = ngio.open_ome_zarr_plate(str(out)).get_image("B", "03", "0")
            np.testing.assert_array_equal(np.asarray(img.get_image().get_array()), data)


def test_labels_with_fewer_levels_get_them_on_write(fresh_plate, tmp_path):
    """iohub writes a label image with fewer levels than its image; the spec (and
    ome-zarr-models) want as many: the missing ones are made by nearest sampling."""
    src = fresh_plate("0.5", rows=1, columns=1, fields=1)
    lab = zarr.open_group(src / "A/01/0/labels/nuclei", mode="r+")
    ome = dict(lab.attrs["ome"])
    ms = dict(ome["multiscales"][0])
    ms["datasets"] = ms["datasets"][:1]
    lab.attrs["ome"] = {**ome, "multiscales": [ms]}
    dt = xr.open_datatree(src, engine="ome-hcs")
    label0 = dt["A/01/0/labels/nuclei/0"]["labels"].values
    out = tmp_path / "out.zarr"
    dt.hcs.to_zarr(out)
    back = xr.open_datatree(out, engine="ome-hcs")
    image1 = back["A/01/0/1"]["image"]
    label1 = back["A/01/0/labels/nuclei/1"]["labels"]
    assert label1.shape[-2:] == image1.shape[-2:]
    np.testing.assert_allclose(label1["x"].values, image1["x"].values)
    # nearest: each coarse pixel takes the label of the fine pixel nearest its position
    fine = dt["A/01/0/labels/nuclei/0"]

    def nearest(d: str) -> np.ndarray:
        x0, dx = float(fine[d][0]), float(fine[d][1] - fine[d][0])
        return np.floor((image1[d].values - x0) / dx + 0.5).astype(int)

    np.testing.assert_array_equal(label1.values, label0[..., nearest("y"), :][..., nearest("x")])
    assert label1.values.any()
    np.testing.assert_array_equal(back["A/01/0/labels/nuclei/0"]["labels"].values, label0)
    from ome_zarr_models import open_ome_zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        open_ome_zarr(zarr.open_group(out, mode="r"))  # raises on a label/image level mismatch


# ------------------------------------------------------------ fill values

@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize(("dtype", "fill"), [("float32", "NaN"), ("uint16", 7)])
def test_fill_values_are_kept_and_pad_the_stack(tmp_path, version, dtype, fill):
    v2 = version == "0.4"
    root = tmp_path / "plate.zarr"
    g = zarr.open_group(root, mode="w", zarr_format=2 if v2 else 3)

    def put(group: zarr.Group, ome: dict) -> None:
        if v2:
            group.attrs.put({k: {**v, "version": "0.4"} if k in ("plate", "well") else
                             [{**m, "version": "0.4"} for m in v] for k, v in ome.items()})
        else:
            group.attrs.put({"ome": {"version": "0.5", **ome}})

    put(g, {"plate": {"rows": [{"name": "A"}], "columns": [{"name": "1"}, {"name": "2"}],
                      "wells": [{"path": "A/1", "rowIndex": 0, "columnIndex": 0},
                                {"path": "A/2", "rowIndex": 0, "columnIndex": 1}]}})
    value = np.asarray(float("nan") if fill == "NaN" else fill, dtype=dtype)[()]
    for w, n in (("A/1", 2), ("A/2", 1)):
        wg = g.require_group(w)
        put(wg, {"well": {"images": [{"path": str(i)} for i in range(n)]}})
        for i in range(n):
            fg = wg.require_group(str(i))
            put(fg, {"multiscales": [{"axes": _CYX, "datasets": [{"path": "0",
                     "coordinateTransformations": [{"type": "scale",
                                                    "scale": [1.0, 1.0, 1.0]}]}]}]})
            kw = {"chunk_key_encoding": {"name": "v2", "separator": "/"}} if v2 else {
                "dimension_names": ["c", "y", "x"]}
            a = fg.create_array("0", shape=(1, 8, 8), chunks=(1, 4, 4), dtype=dtype,
                                fill_value=value, **kw)
            a[0, :4, :4] = 1  # three of the four chunks are absent: they read as the fill
    dt = xr.open_datatree(root, engine="ome-hcs")
    st = dt.hcs.stack(0)
    np.testing.assert_array_equal(st.values[1, 1], np.full((1, 8, 8), value))  # absent field
    np.testing.assert_array_equal(st.values[0, 0, 0, 4:, 4:], np.full((4, 4), value))
    out = tmp_path / "out.zarr"
    dt.hcs.to_zarr(out)
    arr = zarr.open_array(out / "A/1/0/0", mode="r")
    assert np.asarray(arr.fill_value).tobytes() == np.asarray(value).tobytes()
    back = xr.open_datatree(out, engine="ome-hcs")
    np.testing.assert_array_equal(back["A/1/0/0"]["image"].values,
                                  dt["A/1/0/0"]["image"].values)


# ------------------------------------------------------------ validate: acquisitions

def test_validate_refuses_an_undeclared_acquisition(tmp_path):
    root = tmp_path / "plate.zarr"
    g = _v04_plate(root, ["A/1"], ["A"], ["1"])
    wg = g.require_group("A/1")
    wg.attrs.put({"well": {"version": "0.4", "images": [{"path": "0", "acquisition": 77}]}})
    _field(wg, "0", np.zeros((1, 4, 4), "uint8"))
    dt = xr.open_datatree(root, engine="ome-hcs")  # lenient by default
    assert dt["A/1/0"].attrs["acquisition"] == 77
    with pytest.raises(HcsMetadataError, match=r"A/1.*image '0' names acquisition 77.*"
                                               "declares no acquisitions"):
        xr.open_datatree(root, engine="ome-hcs", validate=True)


# ------------------------------------------------------------ summary of writers' layouts

def test_summary_shows_nested_level_paths():
    from conftest import PEERS_DIR

    dt = xr.open_datatree(PEERS_DIR / "ngff-zarr-0.5" / "plate.zarr", engine="ome-hcs")
    text = dt.hcs.summary()
    assert "scale0/image  image (c: 2, z: 1, y: 32, x: 32) uint16" in text
    assert "scale1/image  image (c: 2, z: 1, y: 16, x: 16) uint16" in text


def test_stack_refuses_fields_of_different_axes(fresh_plate):
    p = fresh_plate("0.5", rows=1, columns=2, fields=1, labels=False)
    doc_path = p / "A/02/0/zarr.json"
    doc = json.loads(doc_path.read_text())
    for ax in doc["attributes"]["ome"]["multiscales"][0]["axes"]:
        ax["name"] = ax["name"].upper()
    doc_path.write_text(json.dumps(doc))
    dt = xr.open_datatree(p, engine="ome-hcs")
    with pytest.raises(HcsMetadataError, match=r"do not share the dimensions.*A/02/0 "
                                               r"\('C', 'Z', 'Y', 'X'\)"):
        dt.hcs.stack(0)


# ------------------------------------------------------------ a new user's findings (#11)


def _v05(path: Path, fields: dict, wells: list[str] | None = None) -> Path:
    """A 0.5 plate of one well A/01 (and empty ``wells``) holding ``fields``:
    ``{path: dict(data=(c, y, x) array, labels=[...] or None or [dicts], unit=, scale=,
    translation=, fill=, levels=, dtype=)}``."""
    root = zarr.open_group(path, mode="w", zarr_format=3)
    all_wells = ["A/01", *(wells or [])]
    rows = sorted({w.split("/")[0] for w in all_wells})
    cols = sorted({w.split("/")[1] for w in all_wells})
    root.attrs["ome"] = {"version": "0.5", "plate": {
        "rows": [{"name": r} for r in rows], "columns": [{"name": c} for c in cols],
        "wells": [{"path": w, "rowIndex": rows.index(w[0]), "columnIndex": cols.index(w[2:])}
                  for w in all_wells]}}
    for w in all_wells:
        wg = root.require_group(w)
        images = list(fields) if w == "A/01" else []
        wg.attrs["ome"] = {"version": "0.5", "well": {"images": [{"path": p} for p in images]}}
    well = root["A/01"]
    for fp, f in fields.items():
        g = well.create_group(fp)
        data = f["data"]
        datasets = []
        for i in range(f.get("levels", 1)):
            d = data[:, ::2 ** i, ::2 ** i]
            a = g.create_array(str(i), shape=d.shape, dtype=d.dtype, fill_value=f.get("fill", 0),
                               dimension_names=["c", "y", "x"])
            a[...] = d
            s = f.get("scale", 1.0) * 2 ** i
            datasets.append({"path": str(i), "coordinateTransformations": [
                {"type": "scale", "scale": [1, s, s]},
                {"type": "translation", "translation": [0, *f.get("translation", (0, 0))]}]})
        unit = f.get("unit", "micrometer")
        axes = [{"name": "c", "type": "channel"}] + [
            {"name": n, "type": "space", **({"unit": unit} if unit else {})} for n in "yx"]
        ome = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
        labels = f.get("labels")
        if labels is not None:
            ome["omero"] = {"channels": [lab if isinstance(lab, dict) else {"label": lab}
                                         for lab in labels]}
        g.attrs["ome"] = ome
    return path


def test_positions_in_other_units_are_converted_exactly(tmp_path):
    ones = np.ones((1, 4, 4), "uint16")
    p = _v05(tmp_path / "u.zarr", {
        "0": {"data": ones, "labels": ["DAPI"], "scale": 0.5, "translation": (100.0, 100.0)},
        "1": {"data": ones, "labels": ["DAPI"], "unit": "nanometer", "scale": 500.0,
              "translation": (300000.0, 100000.0)}})
    st = xr.open_datatree(p, engine="ome-hcs").hcs.stack(0)
    assert st["x"].attrs["units"] == st["y"].attrs["units"] == "micrometer"
    # x: both at 100 micrometres, 0.5 apart (the second says so in nanometres): shared
    np.testing.assert_allclose(st["x"].values, [100, 100.5, 101.0, 101.5])
    assert "x_origin" not in st.coords
    np.testing.assert_allclose(st["y"].values, [0, 0.5, 1.0, 1.5])  # y: 100 and 300 um
    np.testing.assert_allclose(st["y_origin"].values, [[100.0, 300.0]])
    q = _v05(tmp_path / "n.zarr", {"0": {"data": ones, "labels": ["DAPI"]},
                                  "1": {"data": ones, "labels": ["DAPI"], "unit": None}})
    with pytest.raises(HcsMetadataError, match=r"units that do not convert.*A/01/1 \(no unit\)"):
        xr.open_datatree(q, engine="ome-hcs").hcs.stack(0)


@pytest.mark.parametrize(("labels", "names"), [
    ([{}, "c0"], ["c0_1", "c0"]),            # the unlabelled channel never takes "c0"
    (["c1", {}], ["c1", "c1_1"]),
    (["DAPI", "DAPI", "c1"], ["DAPI", "c1_1", "c1"]),  # a repeat never renames a real "c1"
])
def test_made_up_channel_names_never_take_a_written_one(tmp_path, labels, names):
    data = np.stack([np.full((2, 2), 100 * (i + 1), "uint16") for i in range(len(labels))])
    p = _v05(tmp_path / "c.zarr", {"0": {"data": data, "labels": labels}})
    dt = xr.open_datatree(p, engine="ome-hcs")
    assert dt["A/01/0"]["c"].values.tolist() == names
    for i, name in enumerate(names):
        assert int(dt.hcs.stack(0, channels="union").sel(c=name).max()) == 100 * (i + 1)


def test_omero_of_another_channel_count_is_not_used(tmp_path):
    data = np.stack([np.full((2, 2), v, "uint16") for v in (1, 2)])
    p = _v05(tmp_path / "o.zarr", {"0": {"data": data, "labels": ["DAPI", "GFP", "RFP"]}})
    with pytest.warns(xarray_hcs.HcsMetadataWarning, match="3 labels, 2 channels"):
        dt = xr.open_datatree(p, engine="ome-hcs")
    assert dt["A/01/0"]["c"].values.tolist() == ["c0", "c1"]
    with pytest.raises(HcsMetadataError, match="omero lists 3 channels but the image has 2"):
        xr.open_datatree(p, engine="ome-hcs", validate=True)


def test_a_level_computed_anew_keeps_its_fill_value(tmp_path):
    p = _v05(tmp_path / "f.zarr", {
        "0": {"data": np.full((1, 6, 6), 10, "float32"), "labels": ["DAPI"], "fill": np.nan},
        "1": {"data": np.full((1, 8, 8), 10, "float32"), "labels": ["DAPI"], "fill": np.nan}})
    dt = xr.open_datatree(p, engine="ome-hcs")
    dt["A/01/0/0"] = dt["A/01/0/0"].to_dataset() + 0  # computed: no array behind it
    padded = dt.hcs.stack(0, pad=True).isel(well=0, field=0).values
    assert np.isnan(padded[0, 6:, :]).all() and (padded[0, :6, :6] == 10).all()
    dt.hcs.to_zarr(tmp_path / "out.zarr")
    assert np.isnan(zarr.open_array(tmp_path / "out.zarr/A/01/0/0", mode="r").fill_value)


def test_a_negative_level_is_refused_where_pyramids_differ(tmp_path):
    ones = np.ones((1, 16, 16), "uint16")
    p = _v05(tmp_path / "l.zarr", {"0": {"data": ones, "labels": ["DAPI"], "levels": 3},
                                  "1": {"data": ones, "labels": ["DAPI"], "levels": 2}})
    dt = xr.open_datatree(p, engine="ome-hcs")
    for view in (lambda: dt.hcs.stack(-1),
                 lambda: dt.hcs.map_fields(lambda im: float(im.sum()), level=-1)):
        with pytest.raises(HcsMetadataError, match=r"level -1 names different levels.*3 "
                                                   r"levels: A/01/0; 2 levels: A/01/1"):
            view()
    sums = dt.hcs.map_fields(lambda im: float(im.sum()), level=1)["result"].values
    assert sums.tolist() == [[64.0, 64.0]]  # the same level of both: the same resolution


def test_a_reversed_coordinate_is_refused_on_write(tmp_path):
    p = _v05(tmp_path / "r.zarr", {"0": {"data": np.arange(16, dtype="uint16").reshape(
        1, 4, 4), "labels": ["DAPI"]}})
    dt = xr.open_datatree(p, engine="ome-hcs")
    dt["A/01/0/0"] = dt["A/01/0/0"].to_dataset().isel(x=slice(None, None, -1))
    with pytest.raises(HcsMetadataError, match="coordinate 'x' decreases"):
        dt.hcs.to_zarr(tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_stacked_dataset_chunks_auto_and_missing_levels_agree(tmp_path):
    import shutil
    import warnings

    ones = np.ones((1, 8, 8), "uint16")
    p = _v05(tmp_path / "m.zarr", {"0": {"data": ones, "labels": ["DAPI"], "levels": 2},
                                  "1": {"data": ones, "labels": ["DAPI"], "levels": 2}})
    ds = xr.open_dataset(p, engine="ome-hcs", level=0, chunks="auto")
    assert ds["field_path"].values.tolist() == [["0", "1"]]
    shutil.rmtree(p / "A/01/1/1")  # one level of one field is missing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xarray_hcs.HcsMissingWarning)
        whole = xr.open_datatree(p, engine="ome-hcs", on_missing="warn").hcs.stack(0)
        one = xr.open_dataset(p, engine="ome-hcs", level=0, on_missing="warn")
    assert whole["field_path"].values.tolist() == one["field_path"].values.tolist() == [["0"]]


def test_summary_says_what_differs_between_fields(tmp_path):
    rng = np.random.default_rng(0)
    p = _v05(tmp_path / "s.zarr", {
        "0": {"data": rng.integers(0, 9, (2, 8, 8)).astype("uint16"), "labels": ["DAPI", "GFP"],
              "levels": 3},
        "1": {"data": rng.integers(0, 9, (2, 6, 10)).astype("uint8"), "labels": ["DAPI", "RFP"]}})
    text = xr.open_datatree(p, engine="ome-hcs").hcs.summary()
    assert "fields differ: 2 layouts" in text
    assert "fields like A/01/1: 1 level, axes c, y, x, (2, 6, 10) uint8" in text
    assert "channels:     2 different sets (stack with channels='union'" in text
    assert "fields like A/01/1: DAPI, RFP" in text


def test_montage_takes_the_stack_options_and_checks_its_own(tmp_path):
    d = np.stack([np.full((4, 4), 1, "uint16"), np.full((4, 4), 2, "uint16")])
    p = _v05(tmp_path / "mo.zarr", {"0": {"data": d, "labels": ["DAPI", "GFP"]},
                                   "1": {"data": d[::-1], "labels": ["GFP", "DAPI"]}})
    dt = xr.open_datatree(p, engine="ome-hcs")
    with pytest.raises(HcsMetadataError, match="channels='union'"):
        dt.hcs.montage(level=0, channel="DAPI")
    m = dt.hcs.montage(level=0, channel="DAPI", channels="union")
    assert set(np.unique(m.values[np.isfinite(m.values)])) == {1.0}  # DAPI is 1 in both
    with pytest.raises(xarray_hcs.HcsSelectionError, match="no channel 5"):
        dt.hcs.montage(level=0, channel=5, channels="union")
    with pytest.raises(xarray_hcs.HcsValueError, match="gap"):
        dt.hcs.montage(level=0, channel=0, gap=-4, channels="union")
    from xarray_hcs.cli import main

    assert main(["montage", str(p), str(tmp_path / "m.png"), "--level", "0",
                 "--channels", "union"]) == 0


def test_concat_row_names_stay_unique_when_paths_hold_underscores(tmp_path):
    import pandas as pd

    ones = np.ones((1, 4, 4), "uint16")
    p = _v05(tmp_path / "t.zarr", {"0": {"data": ones, "labels": ["DAPI"]},
                                  "0_1": {"data": ones, "labels": ["DAPI"]}})
    dt = xr.open_datatree(p, engine="ome-hcs")
    dt = dt.hcs.add_table("A/01/0", "rois", pd.DataFrame(
        {"v": [1.0]}, index=pd.Index(["1_x"], name="roi")))
    dt = dt.hcs.add_table("A/01/0_1", "rois", pd.DataFrame(
        {"v": [2.0]}, index=pd.Index(["x"], name="roi")))
    with pytest.warns(xarray_hcs.HcsWarning, match="row names repeat"):
        cells = dt.hcs.concat_tables("rois")
    assert cells.index.is_unique and cells.index.tolist() == ["A/01/0/1_x", "A/01/0_1/x"]


def test_map_fields_keeps_wells_without_fields_as_stack_does(tmp_path):
    p = _v05(tmp_path / "e.zarr", {"0": {"data": np.ones((1, 4, 4), "uint16"),
                                         "labels": ["DAPI"]}}, wells=["B/01"])
    dt = xr.open_datatree(p, engine="ome-hcs")
    r = dt.hcs.map_fields(lambda im: float(im.mean()))
    assert r["well"].values.tolist() == dt.hcs.stack(0)["well"].values.tolist() == [
        "A/01", "B/01"]
    assert r["result"].values[0, 0] == 1.0 and np.isnan(r["result"].values[1, 0])


def test_bad_option_values_are_hcs_value_errors(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    for call in (lambda: dt.hcs.stack(0, channels="unoin"),
                 lambda: dt.hcs.map_fields(float, channels="all"),
                 lambda: xr.open_dataset(plate, engine="ome-hcs", level=0, channels="x"),
                 lambda: dt.hcs.montage(agg="sum")):
        with pytest.raises(xarray_hcs.HcsValueError):
            call()


def test_byte_orders_stack_together(tmp_path):
    root = _v04_plate(tmp_path / "e.zarr", ["A/1"], ["A"], ["1"])
    wg = root.require_group("A/1")
    wg.attrs.put({"well": {"version": "0.4", "images": [{"path": "0"}, {"path": "1"}]}})
    _field(wg, "0", np.arange(16, dtype="<u2").reshape(1, 4, 4))
    _field(wg, "1", np.arange(16, dtype=">u2").reshape(1, 4, 4))
    st = xr.open_datatree(tmp_path / "e.zarr", engine="ome-hcs").hcs.stack(0)
    assert st.dtype == np.dtype("uint16") and st.dtype.isnative
    np.testing.assert_array_equal(st.values[0, 1], np.arange(16).reshape(1, 4, 4))


def test_sharded_levels_are_written_with_their_inner_chunks(tmp_path):
    g = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    g.attrs["ome"] = {"version": "0.5", "plate": {
        "rows": [{"name": "A"}], "columns": [{"name": "1"}],
        "wells": [{"path": "A/1", "rowIndex": 0, "columnIndex": 0}]}}
    g.create_group("A").create_group("1").attrs["ome"] = {
        "version": "0.5", "well": {"images": [{"path": "0"}]}}
    f = g["A/1"].create_group("0")
    f.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": _CYX, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale",
                                                     "scale": [1.0, 1.0, 1.0]}]}]}]}
    a = f.create_array("0", shape=(1, 16, 16), chunks=(1, 4, 4), shards=(1, 8, 8),
                       dtype="uint16", dimension_names=["c", "y", "x"])
    a[...] = np.arange(256, dtype="uint16").reshape(1, 16, 16)
    dt = xr.open_datatree(tmp_path / "s.zarr", engine="ome-hcs")
    np.testing.assert_array_equal(dt["A/1/0/0"]["image"].values, a[...])
    dt.hcs.to_zarr(tmp_path / "out.zarr")
    assert zarr.open_array(tmp_path / "out.zarr/A/1/0/0", mode="r").chunks == (1, 4, 4)
