"""Plates written by the peers' own writers (ngio, ngff-zarr, ome-zarr-py, iohub; 0.4 and 0.5;
directories and .ozx) open, with the layout the writer wrote and the pixels plain zarr reads.

The plates were made by ``tests/data/peers/make_peer_plates.py`` in a separate Python 3.12
environment (the peers do not co-install with our stack) and are described by its manifest.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import xarray as xr
import zarr

from conftest import PEERS_DIR

MANIFEST = json.loads((PEERS_DIR / "manifest.json").read_text())["plates"]


def _zarr_root(entry):
    path = PEERS_DIR / entry["path"]
    if entry["container"] == "directory":
        return zarr.open_group(path, mode="r")
    return zarr.open_group(zarr.storage.ZipStore(path, mode="r", read_only=True), mode="r")


@pytest.fixture(params=MANIFEST, ids=[e["path"] for e in MANIFEST])
def entry(request):
    return request.param


def test_every_writer_is_covered():
    writers = {(e["writer"], e["ngff_version"]) for e in MANIFEST}
    for w in ("ngio", "ngff-zarr", "ome-zarr", "iohub"):
        assert {(w, "0.4"), (w, "0.5")} <= writers
    assert {e["writer"] for e in MANIFEST if e["container"] != "directory"} == {"ngff-zarr",
                                                                                "iohub"}


def test_peer_plate_layout(entry):
    dt = xr.open_datatree(PEERS_DIR / entry["path"], engine="ome-hcs")
    assert dt.hcs.version == entry["ngff_version"]
    assert dt.hcs.rows == entry["rows"]
    assert dt.hcs.columns == entry["columns"]
    assert dt.hcs.wells == entry["wells"]
    assert dt.hcs.field_paths == [f"{w}/{f}" for w in entry["wells"]
                                  for f in entry["fields"][w]]
    field = dt[entry["first_field"]]
    assert [c for c in field.children if c not in ("labels", "tables")] == [
        p.split("/")[0] for p in entry["level_paths"]]
    level0 = dt[f"{entry['first_field']}/{entry['level_paths'][0]}"]
    img = level0["image"]
    assert list(img.dims) == entry["axes"]
    assert list(img.shape) == entry["level0_shape"]
    assert str(img.dtype) == entry["level0_dtype"]
    chan = next(a for a in entry["axes"] if a.lower() == "c")
    if entry["channel_labels"]:
        assert list(img[chan].values) == entry["channel_labels"]
    # physical pixel size 0.5 µm at level 0
    xname = entry["axes"][-1]
    assert float(img[xname][1] - img[xname][0]) == pytest.approx(0.5)
    for fp, names in entry["labels"].items():
        assert sorted(dt[f"{fp}/labels"].children) == sorted(names)
    for fp, names in entry.get("tables", {}).items():
        assert dt.hcs.list_tables(path=fp) == names
    assert dt.hcs.list_tables("all") == entry.get("table_names", [])


def test_peer_pixels_equal_plain_zarr(entry):
    dt = xr.open_datatree(PEERS_DIR / entry["path"], engine="ome-hcs", chunks={})
    root = _zarr_root(entry)
    for fp in dt.hcs.field_paths:
        for lp in entry["level_paths"]:
            got = dt[f"{fp}/{lp}"]["image"].values
            np.testing.assert_array_equal(got, root[f"{fp}/{lp}"][...])
    for label_path, lpaths in entry["label_level_paths"].items():
        for lp in lpaths:
            got = dt[f"{label_path}/{lp}"]["labels"].values
            want = root[f"{label_path}/{lp}"][...]
            assert got.size == want.size
            np.testing.assert_array_equal(got.ravel(), want.ravel())
    dt.close()


def test_known_pixel_values(entry):
    """Pixel = 1000*(k+1) + 100*c + 10*z + ((y*32+x) % 100), k = well index * 2 + field."""
    dt = xr.open_datatree(PEERS_DIR / entry["path"], engine="ome-hcs", levels=[0])
    lp = entry["level_paths"][0]
    for k, fp in enumerate(dt.hcs.field_paths):
        img = dt[f"{fp}/{lp}"]["image"].values
        img = img.reshape(-1, *img.shape[-3:])  # (c, z, y, x), dropping a t of size 1
        y, x = np.mgrid[0:32, 0:32]
        for c in range(img.shape[0]):
            np.testing.assert_array_equal(img[c, 0], 1000 * (k + 1) + 100 * c + (y * 32 + x) % 100)


def test_ozx_is_a_zip(entry):
    if entry["container"] == "directory":
        pytest.skip("directory plate")
    assert zipfile.is_zipfile(PEERS_DIR / entry["path"])


def test_one_call_reaches_a_level_of_any_writers_plate(entry):
    """``dt.hcs.image(field, level)`` finds the level however the writer named it (0,
    scale0, s0) and names the dimensions by role (iohub's C, Z, Y, X too), so the same code
    selects a channel by label and a region by position on every plate."""
    dt = xr.open_datatree(PEERS_DIR / entry["path"], engine="ome-hcs")
    fp = entry["first_field"]
    img = dt.hcs.image(fp, level=0)
    raw = dt[f"{fp}/{entry['level_paths'][0]}"]["image"]
    assert [d for d in img.dims if d != "t"] == ["c", "z", "y", "x"]
    np.testing.assert_array_equal(img.values, raw.values)
    y, x = np.mgrid[0:32, 0:32]
    one = img.isel(c=1)
    if "t" in one.dims:
        one = one.isel(t=0)
    region = one.sel(x=slice(0, 2.0), y=slice(0, 1.0)).isel(z=0).values
    np.testing.assert_array_equal(region, (1000 + 100 + (y * 32 + x) % 100)[:3, :5])
    if entry["channel_labels"]:
        label = entry["channel_labels"][1]
        np.testing.assert_array_equal(img.sel(c=label).values, img.isel(c=1).values)
    coarsest = dt.hcs.image(fp, level=-1)
    assert coarsest.sizes["x"] < img.sizes["x"]
    well, field = fp.rsplit("/", 1)
    row, col = well.split("/")
    np.testing.assert_array_equal(dt.hcs.image(f"{row}{int(col)}/{field}").values, img.values)
    for label_path in entry["label_level_paths"]:
        lfp, name = label_path.split("/labels/")
        lab = dt.hcs.image(lfp, level=0, label=name)
        assert lab.dims[-2:] == ("y", "x")
