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
