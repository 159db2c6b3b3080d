"""Bad plates on disk: every problem is an HcsError naming the path, never another exception,
never a hang; absent wells and fields can be skipped with a warning when asked."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import xarray as xr

import xarray_hcs
from xarray_hcs.errors import (
    HcsError,
    HcsMetadataError,
    HcsMissingWarning,
    HcsNotAPlateError,
    HcsNotFoundError,
    HcsPathError,
    HcsVersionError,
)


def _doc(plate: Path, node: str) -> Path:
    v3 = (plate / "zarr.json").exists()
    return plate / node / ("zarr.json" if v3 else ".zattrs")


def _edit(plate: Path, node: str, fn) -> None:
    """Apply ``fn`` to the OME dict of ``node`` (v2 .zattrs or v3 zarr.json attributes.ome)."""
    p = _doc(plate, node)
    doc = json.loads(p.read_text())
    if p.name == "zarr.json":
        fn(doc["attributes"]["ome"])
    else:
        fn(doc)
    p.write_text(json.dumps(doc))


def _open(plate: Path, **kw):
    return xr.open_datatree(plate, engine="ome-hcs", **kw)


@pytest.fixture(params=["0.4", "0.5"])
def version(request):
    return request.param


def test_well_path_disagrees_with_indices(fresh_plate, version):
    p = fresh_plate(version)
    _edit(p, "", lambda o: o["plate"]["wells"][0].update(rowIndex=1))
    with pytest.raises(HcsMetadataError, match="disagrees with rowIndex") as e:
        _open(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("bad", ["../A/1", "/etc/passwd", "A/../../x", "A\\1"])
def test_unsafe_well_paths(fresh_plate, version, bad):
    p = fresh_plate(version)
    _edit(p, "", lambda o: o["plate"]["wells"][0].update(path=bad))
    with pytest.raises(HcsPathError):
        _open(p)


@pytest.mark.parametrize("bad", ["../0", "/0", ".."])
def test_unsafe_field_paths(fresh_plate, version, bad):
    p = fresh_plate(version)
    well = "A/" + ("01" if version == "0.5" else "1")
    _edit(p, well, lambda o: o["well"]["images"][0].update(path=bad))
    with pytest.raises(HcsPathError, match="image path") as e:
        _open(p)
    assert well in str(e.value)


def test_unsafe_level_path(fresh_plate, version):
    p = fresh_plate(version)
    field = "A/" + ("01" if version == "0.5" else "1") + "/0"
    _edit(p, field, lambda o: o["multiscales"][0]["datasets"][0].update(path="../../../0"))
    with pytest.raises(HcsPathError, match="dataset path"):
        _open(p)


def test_unsafe_label_path(fresh_plate, version):
    p = fresh_plate(version)
    lab = "A/" + ("01" if version == "0.5" else "1") + "/0/labels"
    _edit(p, lab, lambda o: o.update(labels=["../../../../etc"]))
    with pytest.raises(HcsPathError, match="label path"):
        _open(p)


def test_undeclared_acquisition(fresh_plate, version):
    p = fresh_plate(version)
    well = "B/" + ("02" if version == "0.5" else "2")
    _edit(p, well, lambda o: o["well"]["images"][1].update(acquisition=3))
    with pytest.raises(HcsMetadataError, match="does not declare"):
        _open(p)


def test_unknown_version(fresh_plate, version):
    p = fresh_plate(version)
    if version == "0.5":
        _edit(p, "", lambda o: o.update(version="0.9"))
    else:
        _edit(p, "", lambda o: o["plate"].update(version="0.9"))
    with pytest.raises(HcsVersionError, match="0.9"):
        _open(p)


def test_scale_length_and_axis_order(fresh_plate, version):
    p = fresh_plate(version)
    field = "A/" + ("01" if version == "0.5" else "1") + "/1"
    _edit(p, field, lambda o: o["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
          .update(scale=[1.0, 1.0]))
    with pytest.raises(HcsMetadataError, match="scale has 2 values for 4 axes"):
        _open(p)
    p2 = fresh_plate(version, rows=1, columns=1, fields=1, labels=False)
    shutil.rmtree(p)
    _edit(p2, "A/" + ("01" if version == "0.5" else "1") + "/0",
          lambda o: o["multiscales"][0]["axes"].reverse())
    with pytest.raises(HcsMetadataError, match="out of order"):
        _open(p2)


def test_wrong_types(fresh_plate, version):
    p = fresh_plate(version)
    _edit(p, "", lambda o: o["plate"].update(columns="123"))
    with pytest.raises(HcsMetadataError, match="plate columns must be a list"):
        _open(p)


def test_invalid_json(fresh_plate, version):
    p = fresh_plate(version)
    well = "A/" + ("01" if version == "0.5" else "1")
    _doc(p, well).write_text("{not json")
    with pytest.raises(HcsMetadataError, match="not valid JSON") as e:
        _open(p)
    assert well in str(e.value)


def test_level_dimensions_disagree_with_axes(fresh_plate, version):
    p = fresh_plate(version, labels=False)
    field = "A/" + ("01" if version == "0.5" else "1") + "/0"
    _edit(p, field, lambda o: (o["multiscales"][0]["axes"].pop(0),
                               [t[t["type"]].pop(0) for d in o["multiscales"][0]["datasets"]
                                for t in d["coordinateTransformations"]]))
    with pytest.raises(HcsMetadataError, match="4 dimensions but the multiscales declare 3"):
        _open(p)


def test_not_a_plate(plate, tmp_path):
    well = xarray_hcs.open_plate(plate).hcs.wells[0]
    with pytest.raises(HcsNotAPlateError, match="a well, not a plate"):
        _open(plate / well)
    with pytest.raises(HcsNotAPlateError, match="an OME-Zarr image, not a plate"):
        _open(plate / well / "0")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HcsNotAPlateError, match="holds no zarr group"):
        _open(tmp_path / "empty")


# ------------------------------------------------------------------ absent nodes


def test_missing_well_raises_or_warns(fresh_plate, version):
    p = fresh_plate(version)
    well = "B/" + ("03" if version == "0.5" else "3")
    shutil.rmtree(p / well)
    with pytest.raises(HcsNotFoundError, match="absent from the store") as e:
        _open(p)
    assert well in str(e.value) and "on_missing='warn'" in str(e.value)
    with pytest.warns(HcsMissingWarning, match=well):
        dt = _open(p, on_missing="warn")
    assert well not in dt.hcs.wells and len(dt.hcs.wells) == 5
    assert well not in [w["path"] for w in dt.attrs["ome"]["plate"]["wells"]]


def test_missing_field_and_level(fresh_plate, version):
    p = fresh_plate(version)
    well = "A/" + ("02" if version == "0.5" else "2")
    shutil.rmtree(p / well / "1")
    shutil.rmtree(p / "B" / well.split("/")[1] / "0" / "1")  # level 1 of B/x/0
    with pytest.raises(HcsNotFoundError):
        _open(p)
    with pytest.warns(HcsMissingWarning) as rec:
        dt = _open(p, on_missing="warn")
    assert len(rec) == 2
    assert f"{well}/1" not in dt.hcs.field_paths
    assert [i["path"] for i in dt[well].attrs["ome"]["well"]["images"]] == ["0"]
    assert f"B/{well.split('/')[1]}/0" not in dt.hcs.field_paths
    assert len(dt.hcs.field_paths) == 10


def test_missing_label(fresh_plate, version):
    p = fresh_plate(version)
    field = "A/" + ("01" if version == "0.5" else "1") + "/0"
    shutil.rmtree(p / field / "labels" / "nuclei")
    with pytest.raises(HcsNotFoundError, match="label image"):
        _open(p)
    assert _open(p, labels=False).hcs.field_paths


def test_errors_are_the_family(fresh_plate):
    """No unrelated exception type escapes, whatever we break."""
    p = fresh_plate("0.5", labels=False)
    breakages = [
        lambda o: o.update(plate=[]),
        lambda o: o["plate"].update(wells=None),
        lambda o: o["plate"]["wells"].append({"path": 5}),
        lambda o: o["plate"]["wells"].append("A/1"),
        lambda o: o["plate"].update(rows=[{"nome": "A"}]),
        lambda o: o["plate"].update(acquisitions={}),
        lambda o: o["plate"].update(field_count="2"),
    ]
    original = _doc(p, "").read_text()
    for breakage in breakages:
        _doc(p, "").write_text(original)
        _edit(p, "", breakage)
        with pytest.raises(HcsError):
            _open(p)


# ------------------------------------------------------------------ validate=True (strict)


def test_validate_accepts_good_plates(plate):
    assert _open(plate, validate=True).hcs.field_paths


@pytest.mark.parametrize(("node", "edit", "message"), [
    ("", lambda o: o["plate"].update(field_count=1), "field_count is 1 but a well holds 2"),
    ("", lambda o: o["plate"]["acquisitions"][0].update(maximumfieldcount=1),
     "maximumfieldcount 1"),
    ("F", lambda o: o["multiscales"][0]["axes"][3].update(unit="parsecs"),
     "not a space unit"),
    ("F", lambda o: o["multiscales"][0]["axes"][0].pop("type"), "has no type"),
    ("F", lambda o: o["omero"]["channels"].pop(), "omero lists 1 channels but the image has 2"),
    ("F", lambda o: o["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]
     .update(scale=[1.0, 1.0, 0.1, 0.1]), "finer scale"),
])
def test_validate_finds_what_tolerant_reading_allows(fresh_plate, version, node, edit, message):
    p = fresh_plate(version)
    col = "01" if version == "0.5" else "1"
    node = {"": "", "F": f"A/{col}/0"}[node]
    _edit(p, node, edit)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert _open(p).hcs.field_paths  # tolerated by default
    if "omero" in message:  # tolerated, but said: the labels are not used
        assert any(issubclass(w.category, xarray_hcs.HcsMetadataWarning) for w in seen)
    with pytest.raises(HcsMetadataError, match=message):
        _open(p, validate=True)


def test_validate_wants_versions_stated(fresh_plate, version):
    p = fresh_plate(version)
    col = "01" if version == "0.5" else "1"
    if version == "0.5":
        _edit(p, f"A/{col}", lambda o: o.pop("version"))
    else:
        _edit(p, f"A/{col}", lambda o: o["well"].pop("version"))
    assert _open(p).hcs.field_paths
    with pytest.raises(HcsMetadataError, match="version is not stated") as e:
        _open(p, validate=True)
    assert f"A/{col}" in str(e.value)


def test_validate_label_dtype(fresh_plate):
    p = fresh_plate("0.5")
    import zarr

    root = zarr.open_group(p, mode="r+")
    lab = root["A/01/0/labels/nuclei/0"]
    root.create_array("A/01/0/labels/nuclei/0", shape=lab.shape, dtype="float32",
                      chunks=lab.chunks, overwrite=True, dimension_names=["z", "y", "x"])
    root.create_array("A/01/0/labels/nuclei/1", shape=root["A/01/0/labels/nuclei/1"].shape,
                      dtype="float32", overwrite=True, dimension_names=["z", "y", "x"])
    with pytest.raises(HcsMetadataError, match="labels must be integers"):
        _open(p, validate=True)
