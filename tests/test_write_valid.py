"""Written plates pass the official OME-NGFF JSON schemas (tests/data/ngff-spec) and
ome-zarr-models, and the peers' readers open them with the same wells, fields and pixels."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conftest import PEERS_DIR, SPEC_DIR

MANIFEST = json.loads((PEERS_DIR / "manifest.json").read_text())["plates"]


def _registry(version: str):
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    resources = []
    for f in (SPEC_DIR / version / "schemas").glob("*.schema"):
        doc = json.loads(f.read_text())
        # some schemas (strict_*) name no dialect: they are draft-07 like the rest
        resources.append((doc["$id"], Resource.from_contents(doc, default_specification=DRAFT7)))
    return Registry().with_resources(resources)


def _validator(version: str, name: str):
    import jsonschema

    schema = json.loads((SPEC_DIR / version / "schemas" / f"{name}.schema").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=_registry(version))


def _attrs(root: Path, node: str) -> dict:
    v3 = root / node / "zarr.json"
    if v3.exists():
        return json.loads(v3.read_text())["attributes"]
    return json.loads((root / node / ".zattrs").read_text())


def validate_plate(root: Path, version: str, strict: bool = False) -> int:
    """Validate every OME document of a written plate; returns how many were checked."""
    dt = xr.open_datatree(root, engine="ome-hcs")
    kinds = [("plate", [""]), ("well", dt.hcs.wells), ("image", dt.hcs.field_paths)]
    labels = [f"{fp}/labels/{n}" for fp in dt.hcs.field_paths if "labels" in dt[fp].children
              for n in dt[f"{fp}/labels"].children]
    kinds.append(("label", labels))
    n = 0
    for name, nodes in kinds:
        names = [name] + ([f"strict_{name}"] if strict and name in ("plate", "well") else [])
        for schema in names:
            v = _validator(version, schema)
            for node in nodes:
                errors = sorted(v.iter_errors(_attrs(root, node)), key=str)
                assert not errors, f"{root}/{node} fails {schema}: {errors[0].message}"
                n += 1
    return n




@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_sample_plate_written_passes_strict_schemas(plate, tmp_path, version):
    out = tmp_path / "out.zarr"
    xr.open_datatree(plate, engine="ome-hcs").hcs.to_zarr(out, ngff_version=version)
    assert validate_plate(out, version, strict=True) > 12


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["path"] for e in MANIFEST])
def test_peer_plates_rewritten_pass_schemas_and_ome_zarr_models(entry, tmp_path):
    from ome_zarr_models import open_ome_zarr

    dt = xr.open_datatree(PEERS_DIR / entry["path"], engine="ome-hcs")
    for version in ("0.4", "0.5"):
        out = tmp_path / f"{version}.zarr"
        dt.hcs.to_zarr(out, ngff_version=version)
        validate_plate(out, version)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = open_ome_zarr(out, version=version)
        assert type(model).__name__ == "HCS"
        assert len(model.ome_attributes.plate.wells) == len(entry["wells"])


@pytest.fixture(scope="module")
def written(tmp_path_factory, plate_v04, plate_v05):
    out = {}
    for version, src in (("0.4", plate_v04), ("0.5", plate_v05)):
        p = tmp_path_factory.mktemp("peers-read") / f"ours-{version}.zarr"
        xr.open_datatree(src, engine="ome-hcs").hcs.to_zarr(p)
        out[version] = p
    return out


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ngff_zarr_reads_our_plates(written, version):
    nz = pytest.importorskip("ngff_zarr")
    p = written[version]
    ours = xr.open_datatree(p, engine="ome-hcs")
    plate = nz.from_hcs_zarr(str(p))
    assert sorted(w.path for w in plate.wells) == sorted(ours.hcs.wells)
    for wpath in ours.hcs.wells:
        r, c = wpath.split("/")
        well = plate.get_well(r, c)
        assert [im.path for im in well.images] == ["0", "1"]
        for i in range(2):
            ms = well.get_image(i)
            for lv, img in enumerate(ms.images):
                np.testing.assert_array_equal(np.asarray(img.data),
                                              ours[f"{wpath}/{i}/{lv}"]["image"].values)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ngio_reads_our_plates(written, version):
    ngio = pytest.importorskip("ngio")
    p = written[version]
    ours = xr.open_datatree(p, engine="ome-hcs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plate = ngio.open_ome_zarr_plate(str(p), mode="r")
        assert sorted(plate.wells_paths()) == sorted(ours.hcs.wells)
        assert sorted(plate.images_paths()) == sorted(ours.hcs.field_paths)
        for fp in ours.hcs.field_paths:
            r, c, f = fp.split("/")
            cont = plate.get_image(r, c, f)
            assert list(cont.channel_labels) == ["DAPI", "GFP"]
            np.testing.assert_array_equal(cont.get_image().get_as_numpy(),
                                          ours[f"{fp}/0"]["image"].values)
            assert cont.list_labels() == ["nuclei"]
