"""The metadata layer: spec examples parse, bad metadata gives clear HcsErrors, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SPEC_DIR, load_spec_json
from xarray_hcs import ngff
from xarray_hcs.errors import (
    HcsError,
    HcsMetadataError,
    HcsPathError,
    HcsVersionError,
)
from xarray_hcs.ngff import Multiscale, Omero, Plate, Well



def _examples(kind: str):
    for version in ("0.4", "0.5", "0.6rc0"):
        d = SPEC_DIR / version / "examples" / kind
        for f in sorted(d.glob("[!.]*.json")):
            yield pytest.param(version, f, id=f"{version}-{f.stem}")


def _attrs(doc: dict, version: str) -> tuple[dict, int]:
    if "zarr_format" in doc:
        return doc["attributes"], 3
    if "ome" in doc:
        return doc, 3
    if version.startswith("0.6"):  # a 0.6 example written in the 0.4 attribute layout
        ms = [{k: v for k, v in m.items() if k != "version"} for m in doc["multiscales"]]
        return {"ome": {"version": version, "multiscales": ms}}, 3
    return doc, 2


@pytest.mark.parametrize(("version", "path"), list(_examples("plate_strict")))
def test_spec_plate_examples_parse(version, path):
    attrs, zf = _attrs(load_spec_json(path), version)
    ome, other = ngff.decode_attrs(attrs, zf, str(path))
    assert ome["version"] == version
    plate = Plate.from_dict(ome["plate"], str(path))
    assert plate.wells and plate.rows and plate.columns
    # the neutral form round-trips through the model
    assert Plate.from_dict(plate.to_dict()) == plate


@pytest.mark.parametrize(("version", "path"), list(_examples("well_strict")))
def test_spec_well_examples_parse(version, path):
    attrs, zf = _attrs(load_spec_json(path), version)
    ome, _ = ngff.decode_attrs(attrs, zf, str(path))
    well = Well.from_dict(ome["well"], str(path))
    assert [i.path for i in well.images]
    assert Well.from_dict(well.to_dict()) == well


@pytest.mark.parametrize(("version", "path"), list(_examples("multiscales_strict")))
def test_spec_multiscales_examples_parse(version, path):
    attrs, zf = _attrs(load_spec_json(path), version)
    ome, _ = ngff.decode_attrs(attrs, zf, str(path))
    ms = Multiscale.from_dict(ome["multiscales"][0], str(path))
    assert len(ms.datasets) >= 1
    for lv in ms.datasets:
        s, t = ms.effective(lv)
        assert len(s) == len(t) == len(ms.axes)
    assert Multiscale.from_dict(ms.to_dict()) == ms


def test_v06_sequence_transform_becomes_scale_and_translation():
    doc = load_spec_json(SPEC_DIR / "0.6rc0/examples/multiscales_strict/multiscales_example.json")
    ome, _ = ngff.decode_attrs(doc["attributes"], 3, "x")
    ms = Multiscale.from_dict(ome["multiscales"][0])
    assert ms.axis_names == ("t", "c", "z", "y", "x")
    s1 = ms.datasets[1]
    assert s1.scale == (0.1, 1.0, 1.0, 1.0, 1.0)
    assert s1.translation == (0.0, 0.0, 0.25, 0.25, 0.25)


def test_multiscale_level_transform_applies():
    doc = load_spec_json(SPEC_DIR / "0.5/examples/multiscales_strict/"
                         "multiscales_transformations.json")
    ome, _ = ngff.decode_attrs(doc["attributes"], 3, "x")
    ms = Multiscale.from_dict(ome["multiscales"][0])
    assert ms.effective(ms.datasets[0]) == ((10.0, 10.0), (0.0, 0.0))


def test_v04_versions_are_lifted_and_put_back():
    attrs = {"well": {"images": [{"path": "0"}], "version": "0.4"}, "custom": 1}
    ome, other = ngff.decode_attrs(attrs, 2, "w")
    assert ome == {"version": "0.4", "well": {"images": [{"path": "0"}]}}
    assert other == {"custom": 1}
    assert ngff.encode_attrs(ome, other, "0.4") == attrs
    v5 = ngff.encode_attrs(ome, other, "0.5")
    assert v5 == {"custom": 1, "ome": {"version": "0.5", "well": {"images": [{"path": "0"}]}}}


# ------------------------------------------------------------------ bad metadata

PLATE = {"rows": [{"name": "A"}, {"name": "B"}], "columns": [{"name": "1"}, {"name": "2"}],
         "wells": [{"path": "A/1", "rowIndex": 0, "columnIndex": 0}],
         "acquisitions": [{"id": 1}]}


def _plate(**changes):
    d = {**PLATE, **changes}
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize(("plate", "message", "exc"), [
    (_plate(rows=None), "no required key 'rows'", HcsMetadataError),
    (_plate(rows="A"), "plate rows must be a list", HcsMetadataError),
    (_plate(wells=[{"path": "A/1", "rowIndex": 1, "columnIndex": 0}]),
     "disagrees with rowIndex", HcsMetadataError),
    (_plate(wells=[{"path": "A/1", "rowIndex": 0, "columnIndex": 5}]),
     "outside the plate", HcsMetadataError),
    (_plate(wells=[{"path": "A/1", "rowIndex": True, "columnIndex": 0}]),
     "must be an integer", HcsMetadataError),
    (_plate(wells=[{"path": "../A/1", "rowIndex": 0, "columnIndex": 0}]),
     "unsafe component", HcsPathError),
    (_plate(wells=[{"path": "/A/1", "rowIndex": 0, "columnIndex": 0}]),
     "absolute", HcsPathError),
    (_plate(wells=[{"path": "A/..", "rowIndex": 0, "columnIndex": 0}]),
     "unsafe component", HcsPathError),
    (_plate(rows=[{"name": "A/B"}]), "alphanumeric", HcsPathError),
    (_plate(wells=[{"path": "A/1", "rowIndex": 0, "columnIndex": 0}] * 2),
     "listed twice", HcsMetadataError),
    (_plate(acquisitions=[{"id": "one"}]), "acquisition id must be an integer",
     HcsMetadataError),
])
def test_bad_plate_metadata(plate, message, exc):
    with pytest.raises(exc, match=message) as info:
        Plate.from_dict(plate, "plate.zarr")
    assert isinstance(info.value, ValueError)
    assert "plate.zarr" in str(info.value)


def test_undeclared_acquisition_is_an_error():
    with pytest.raises(HcsMetadataError, match="does not declare"):
        Well.from_dict({"images": [{"path": "0", "acquisition": 7}]}, "A/1", [1])


@pytest.mark.parametrize(("images", "message"), [
    ([{"path": "../0"}], "unsafe component"),
    ([{"path": "0/1"}], "must have 1 component"),
    ([{"path": "0"}, {"path": "0"}], "listed twice"),
    ("0", "must be a list"),
])
def test_bad_well_metadata(images, message):
    with pytest.raises(HcsMetadataError, match=message):
        Well.from_dict({"images": images}, "A/1")


AXES = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space"}]


def _ms(axes=AXES, scale=(1, 1, 1), translation=None, path="0"):
    cts = [{"type": "scale", "scale": list(scale)}]
    if translation is not None:
        cts.append({"type": "translation", "translation": list(translation)})
    return {"axes": axes, "datasets": [{"path": path, "coordinateTransformations": cts}]}


@pytest.mark.parametrize(("ms", "message"), [
    (_ms(scale=(1, 1)), "scale has 2 values for 3 axes"),
    (_ms(translation=(0, 0)), "translation has 2 values for 3 axes"),
    (_ms(axes=list(reversed(AXES))), "out of order"),
    (_ms(axes=AXES[:1] + AXES[1:2] * 2), "not unique"),
    (_ms(axes=AXES[:2]), "2 or 3 space axes"),
    (_ms(scale=(1, 0, 1)), "positive"),
    (_ms(path="../0"), "unsafe component"),
    ({**_ms(), "datasets": []}, "empty"),
    ({"datasets": _ms()["datasets"]}, "no required key 'axes'"),
    ({**_ms(), "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "translation", "translation": [0, 0, 0]},
        {"type": "scale", "scale": [1, 1, 1]}]}]}, "translation must come after scale"),
    ({**_ms(), "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "affine", "affine": []}]}]}, "unsupported"),
])
def test_bad_multiscales(ms, message):
    with pytest.raises(HcsMetadataError, match=message):
        Multiscale.from_dict(ms, "A/1/0")


@pytest.mark.parametrize(("attrs", "zf"), [
    ({"ome": {"version": "0.7", "plate": {}}}, 3),
    ({"ome": {"version": "banana"}}, 3),
    ({"plate": {**PLATE, "version": "0.3"}}, 2),
])
def test_unknown_versions(attrs, zf):
    with pytest.raises(HcsVersionError, match="unknown OME-NGFF version"):
        ngff.decode_attrs(attrs, zf, "p")


def test_error_family_subclasses_builtins():
    from xarray_hcs import errors

    assert issubclass(errors.HcsNotFoundError, FileNotFoundError)
    assert issubclass(errors.HcsSelectionError, KeyError)
    assert issubclass(errors.HcsMetadataError, ValueError)
    e = errors.HcsSelectionError("no such well", "B/99")
    assert str(e) == "'B/99': no such well"
    import pickle

    e2 = pickle.loads(pickle.dumps(e))
    assert (type(e2), e2.path, str(e2)) == (type(e), e.path, str(e))
    assert all(issubclass(getattr(errors, n), HcsError) for n in errors.__all__
               if n.startswith("Hcs") and "Warning" not in n)


def test_omero_labels_fill_gaps():
    om = Omero.from_dict({"channels": [{"label": "DAPI"}, {}, {"label": "DAPI"}]})
    assert om.labels(4) == ["DAPI", "c1", "c2", "c3"]


# ------------------------------------------------------------------ property: round trips

names = st.text(alphabet="ABCDEFGHJK0123456789", min_size=1, max_size=3)


@st.composite
def plates(draw):
    rows = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    cols = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    cells = draw(st.lists(st.tuples(st.integers(0, len(rows) - 1),
                                    st.integers(0, len(cols) - 1)), unique=True, max_size=10))
    acqs = draw(st.lists(st.integers(0, 50), unique=True, max_size=3))
    d = {"rows": [{"name": r} for r in rows], "columns": [{"name": c} for c in cols],
         "wells": [{"path": f"{rows[i]}/{cols[j]}", "rowIndex": i, "columnIndex": j}
                   for i, j in cells],
         "acquisitions": [{"id": a, "x-extra": a * 2} for a in acqs]}
    if draw(st.booleans()):
        d["name"] = draw(st.text(max_size=10))
    if draw(st.booleans()):
        d["field_count"] = draw(st.integers(1, 9))
    d["vendor-key"] = draw(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    return d


@settings(max_examples=100, deadline=None)
@given(plates(), st.sampled_from(["0.4", "0.5"]))
def test_plate_roundtrip_through_codecs(d, version):
    plate = Plate.from_dict(d, "p")
    attrs = ngff.encode_attrs({"version": version, "plate": plate.to_dict()}, {"x": 1}, version)
    ome, other = ngff.decode_attrs(attrs, 2 if version == "0.4" else 3, "p")
    assert other == {"x": 1}
    assert ome["version"] == version
    assert Plate.from_dict(ome["plate"], "p") == plate
    assert Plate.from_dict(ome["plate"]).to_dict() == plate.to_dict()
