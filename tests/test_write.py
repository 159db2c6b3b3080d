"""Writing plates: round trips (both versions, every peer's plates), what the metadata says,
bad input, and that nothing is written outside the target or left claiming to be complete."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr

from conftest import PEERS_DIR
from xarray_hcs.errors import HcsError, HcsExistsError, HcsMetadataError, HcsNotAPlateError

MANIFEST = json.loads((PEERS_DIR / "manifest.json").read_text())["plates"]


def _strip_versions(obj):
    """The neutral metadata without version keys (for cross-version comparisons)."""
    if isinstance(obj, dict):
        return {k: _strip_versions(v) for k, v in obj.items() if k != "version"}
    if isinstance(obj, list):
        return [_strip_versions(v) for v in obj]
    return obj


def assert_same_plate(a: xr.DataTree, b: xr.DataTree, *, same_version: bool = True) -> None:
    """Same nodes, pixels, coordinates and metadata (versions aside when they differ)."""
    if same_version:
        xr.testing.assert_identical(a, b)
        return
    assert [n.path for n in a.subtree] == [n.path for n in b.subtree]
    for na, nb in zip(a.subtree, b.subtree, strict=True):
        assert _strip_versions(na.attrs) == _strip_versions(nb.attrs), na.path
        xr.testing.assert_identical(na.to_dataset(inherit=False).drop_attrs(),
                                    nb.to_dataset(inherit=False).drop_attrs())


@pytest.mark.parametrize("target", ["0.4", "0.5"])
def test_sample_plate_round_trip(plate, tmp_path, target):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    out = tmp_path / "out.zarr"
    dt.hcs.to_zarr(out, ngff_version=target)
    back = xr.open_datatree(out, engine="ome-hcs")
    assert back.hcs.version == target
    assert_same_plate(dt, back, same_version=dt.hcs.version == target)
    assert (out / ("zarr.json" if target == "0.5" else ".zattrs")).exists()


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["path"] for e in MANIFEST])
def test_peer_plates_round_trip(entry, tmp_path):
    src = PEERS_DIR / entry["path"]
    dt = xr.open_datatree(src, engine="ome-hcs")
    for target in ("0.4", "0.5"):
        out = tmp_path / f"{target}.zarr"
        dt.hcs.to_zarr(out, ngff_version=target)
        back = xr.open_datatree(out, engine="ome-hcs")
        assert_same_plate(dt, back, same_version=entry["ngff_version"] == target)
        # and once more: writing what we wrote changes nothing
        again = tmp_path / f"{target}-again.zarr"
        back.hcs.to_zarr(again)
        xr.testing.assert_identical(back, xr.open_datatree(again, engine="ome-hcs"))


def test_selection_writes_a_consistent_smaller_plate(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs", wells=["A2", "B3"], fields=[1],
                          levels=[0], labels=False)
    out = tmp_path / "sel.zarr"
    dt.hcs.to_zarr(out)
    back = xr.open_datatree(out, engine="ome-hcs")
    assert back.hcs.wells == dt.hcs.wells
    assert back.hcs.field_paths == [f"{w}/1" for w in dt.hcs.wells]
    assert [d["path"] for d in back[back.hcs.field_paths[0]].attrs["ome"]["multiscales"][0][
        "datasets"]] == ["0"]
    assert back.attrs["ome"]["plate"]["field_count"] == 1
    xr.testing.assert_identical(dt, back)


def test_sliced_level_is_written_where_it_sits(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs", wells=["A1"], labels=False)
    fp = dt.hcs.field_paths[0]
    sub = dt[f"{fp}/0"].to_dataset(inherit=False).isel(x=slice(4, 12), y=slice(2, 10))
    dt[f"{fp}/0"] = sub
    out = tmp_path / "sliced.zarr"
    dt.hcs.to_zarr(out)
    back = xr.open_datatree(out, engine="ome-hcs")
    ds = back[f"{fp}/0"].to_dataset()
    np.testing.assert_allclose(ds.x.values, sub.x.values)
    np.testing.assert_allclose(ds.y.values, sub.y.values)
    np.testing.assert_array_equal(ds["image"].values, sub["image"].values)
    ms = back[fp].attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert ms[1]["translation"][-1] == pytest.approx(float(sub.x[0]))


def test_channel_labels_follow_coordinates(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs", wells=["A1"], labels=False)
    fp = dt.hcs.field_paths[0]
    dt[fp].coords["c"] = ["nuclei", "gfp"]  # in place: the field keeps its levels
    out = tmp_path / "renamed.zarr"
    dt.hcs.to_zarr(out)
    back = xr.open_datatree(out, engine="ome-hcs")
    assert list(back[fp].coords["c"].values) == ["nuclei", "gfp"]


def test_unknown_keys_survive(fresh_plate, tmp_path):
    p = fresh_plate("0.5", rows=1, columns=1, fields=1)
    for rel, key in (("zarr.json", "plate"), ("A/01/zarr.json", "well"),
                     ("A/01/0/zarr.json", None)):
        doc = json.loads((p / rel).read_text())
        doc["attributes"]["vendor"] = {"id": rel}
        if key:
            doc["attributes"]["ome"][key]["x-extra"] = 42
        else:
            doc["attributes"]["ome"]["multiscales"][0]["metadata"] = {"method": "mean"}
        (p / rel).write_text(json.dumps(doc))
    dt = xr.open_datatree(p, engine="ome-hcs")
    for target in ("0.4", "0.5"):
        out = tmp_path / f"{target}.zarr"
        dt.hcs.to_zarr(out, ngff_version=target)
        back = xr.open_datatree(out, engine="ome-hcs")
        assert back.attrs["vendor"] == {"id": "zarr.json"}
        assert back.attrs["ome"]["plate"]["x-extra"] == 42
        assert back["A/01"].attrs["ome"]["well"]["x-extra"] == 42
        assert back["A/01/0"].attrs["ome"]["multiscales"][0]["metadata"] == {"method": "mean"}


def test_compute_false_returns_delayed_and_writes_plate_last(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    out = tmp_path / "lazy.zarr"
    delayed = dt.hcs.to_zarr(out, compute=False)
    root_doc = out / ("zarr.json" if dt.hcs.version == "0.5" else ".zattrs")
    # nothing claims to be a plate before the pixels are in (the root is a bare group)
    assert "plate" not in root_doc.read_text() if root_doc.exists() else True
    with pytest.raises(HcsNotAPlateError):
        xr.open_datatree(out, engine="ome-hcs")
    # the arrays' metadata is written now, as xarray's to_zarr(compute=False) does
    level0 = out / dt.hcs.field_paths[0] / "0"
    assert (level0 / ("zarr.json" if dt.hcs.version == "0.5" else ".zarray")).exists()
    assert not any(p.name not in ("zarr.json", ".zarray", ".zattrs") for p in level0.iterdir())
    delayed.compute()
    assert root_doc.exists()
    xr.testing.assert_identical(dt, xr.open_datatree(out, engine="ome-hcs"))


def test_progress_bar(plate, tmp_path, capsys):
    xr.open_datatree(plate, engine="ome-hcs").hcs.to_zarr(tmp_path / "p.zarr", progress=True)
    assert "100%" in capsys.readouterr().out


def test_chunks_default_and_given(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs", labels=False)
    dt.hcs.to_zarr(tmp_path / "a.zarr", chunks={"y": 8, "x": 4})
    root = zarr.open_group(tmp_path / "a.zarr", mode="r")
    fp = dt.hcs.field_paths[0]
    assert root[f"{fp}/0"].chunks == (1, 1, 8, 4)
    new = xr.DataTree.from_dict({"/": dt.to_dataset()})
    del new  # (trees built by hand are covered by the add_image tests)


def test_mode_w_minus_refuses_and_w_replaces(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    out = tmp_path / "x.zarr"
    dt.hcs.to_zarr(out)
    with pytest.raises(HcsExistsError, match="mode='w'"):
        dt.hcs.to_zarr(out)
    assert isinstance(HcsExistsError("x"), FileExistsError)
    small = xr.open_datatree(plate, engine="ome-hcs", wells=["A1"])
    small.hcs.to_zarr(out, mode="w")
    assert xr.open_datatree(out, engine="ome-hcs").hcs.wells == small.hcs.wells
    assert not (out / "B").exists()


def test_bad_trees_write_nothing(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs", labels=False)
    fp = dt.hcs.field_paths[0]
    bad = dt.copy()
    bad[f"{fp}/0"] = bad[f"{fp}/0"].to_dataset(inherit=False).rename({"image": "other"})
    out = tmp_path / "bad.zarr"
    with pytest.raises(HcsMetadataError, match="no 'image' variable"):
        bad.hcs.to_zarr(out)
    assert not out.exists() or not any(out.iterdir())
    bad2 = dt.copy()
    ds = bad2[f"{fp}/0"].to_dataset(inherit=False)
    bad2[f"{fp}/0"] = ds.assign_coords(x=ds.x.values ** 2)
    with pytest.raises(HcsMetadataError, match="not evenly spaced"):
        bad2.hcs.to_zarr(out)
    bad3 = dt.copy()
    ds = bad3[f"{fp}/1"].to_dataset(inherit=False)
    bad3[f"{fp}/1"] = ds.assign(image=ds["image"].astype("float32"))
    with pytest.raises(HcsMetadataError, match="different dtypes"):
        bad3.hcs.to_zarr(out)
    bad4 = dt.copy()
    level0 = bad4[f"{fp}/0"].to_dataset(inherit=False)
    bad4[f"{fp}/0"] = level0.isel(x=slice(0, 4))  # now narrower than level 1
    with pytest.raises(HcsMetadataError, match="is larger than level"):
        bad4.hcs.to_zarr(out)
    assert not out.exists() or not any(out.iterdir())
    for target in ("plate.ozx", "plate.zip"):
        with pytest.raises(HcsError, match="not supported"):
            dt.hcs.to_zarr(tmp_path / target)
    with pytest.raises(HcsError):
        dt.hcs.to_zarr(tmp_path / "y.zarr", ngff_version="0.6")


def test_writes_stay_inside_the_target(plate, tmp_path):
    dt = xr.open_datatree(plate, engine="ome-hcs", labels=False)
    target = tmp_path / "inside" / "plate.zarr"
    target.parent.mkdir()
    before = set(tmp_path.rglob("*"))
    dt.hcs.to_zarr(target)
    after = set(tmp_path.rglob("*"))
    assert all(target in p.parents or p == target for p in after - before)


def test_overwriting_the_store_the_tree_reads_from_is_refused(fresh_plate, tmp_path):
    import xarray_hcs

    p = fresh_plate("0.5")
    before = sorted(str(f.relative_to(p)) for f in p.rglob("*"))
    for dt in (xr.open_datatree(p, engine="ome-hcs"), xarray_hcs.open_plate(p),
               xr.open_datatree(p, engine="ome-hcs").hcs.sel(wells=["A/01"])):
        with pytest.raises(HcsExistsError, match="reads its pixels or tables from"):
            dt.hcs.to_zarr(p, mode="w")
        with pytest.raises(HcsExistsError, match="reads its pixels or tables from"):
            dt.hcs.to_zarr(str(p) + "/", mode="w")  # the same directory, spelled otherwise
    # nothing was deleted or written
    assert sorted(str(f.relative_to(p)) for f in p.rglob("*")) == before
    # another plate may be replaced
    other = fresh_plate("0.5")
    xr.open_datatree(p, engine="ome-hcs").hcs.sel(wells=["A/01"]).hcs.to_zarr(other, mode="w")
    assert xr.open_datatree(other, engine="ome-hcs").hcs.wells == ["A/01"]
