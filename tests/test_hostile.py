"""Hostile input and faults, each kind with its right outcome: the stored values or an
HcsError naming the path, never garbage, a hang, unbounded memory or lost data.

(The kinds come from attacks on the library; tests/test_fuzz.py tries thousands more of
each.)
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import xarray as xr

import xarray_hcs
from xarray_hcs.errors import HcsError, HcsExistsError, HcsMetadataError, HcsReadError
from xarray_hcs.sample import SamplePlate, write_sample_plate

TINY = SamplePlate(rows=1, columns=2, fields=1, levels=1, shape_zyx=(1, 32, 32), chunk_yx=16)


@pytest.fixture(params=["0.4", "0.5"])
def version(request) -> str:
    return request.param


def _plate(tmp_path: Path, version: str, **kw) -> Path:
    import dataclasses

    layout = dataclasses.replace(TINY, version=version, **kw)
    return write_sample_plate(tmp_path / f"plate-{version}.zarr", layout)


def _chunk(plate: Path, version: str) -> Path:
    return plate / ("A/01/0/0/0/0/0/0" if version == "0.4" else "A/01/0/0/c/0/0/0/0")


def _array_doc(plate: Path, version: str, node: str = "A/01/0/0") -> Path:
    return plate / node / (".zarray" if version == "0.4" else "zarr.json")


def _limited(code: str, *args: str, memory: int = 2 * 2**30, timeout: float = 120
             ) -> str:
    """Run ``code`` in a fresh interpreter limited to ``memory`` bytes of address space;
    its last output line (or "KILLED" past the time limit)."""
    prelude = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory}, "
               f"{memory}))\n")
    try:
        r = subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "KILLED"
    lines = (r.stdout or r.stderr).strip().splitlines()
    return lines[-1] if lines else f"exit {r.returncode}"


_READ = '''
import sys, warnings
warnings.simplefilter("ignore")
import xarray as xr, xarray_hcs
try:
    dt = xr.open_datatree(sys.argv[1], engine="ome-hcs")
    dt["A/01/0/0"]["image"][0, 0, :2, :2].values
    print("READ")
except xarray_hcs.HcsError as e:
    print("HCSERROR", type(e).__name__, e)
except BaseException as e:
    print("OTHER", type(e).__name__, str(e)[:300])
'''


# ------------------------------------------------------------------------- lost data


def test_overwriting_the_store_a_derived_tree_reads_from_is_refused(tmp_path):
    """A lazily derived tree (dask astype after open_plate) still reads every pixel from its
    plate: to_zarr(mode="w") onto it is refused, and the plate keeps its pixels."""
    p = _plate(tmp_path, "0.5")
    before = xr.open_datatree(p, engine="ome-hcs")["A/01/0/0"]["image"].values.copy()
    derived = xarray_hcs.open_plate(p).map_over_datasets(lambda ds: ds.astype("float32"))
    with pytest.raises(HcsExistsError, match="reads its pixels or tables from"):
        derived.hcs.to_zarr(p, mode="w")
    stacked = xr.open_datatree(p, engine="ome-hcs", chunks={})
    stacked["A/01/0/0"] = stacked["A/01/0/0"].to_dataset() * 1
    with pytest.raises(HcsExistsError):
        stacked.hcs.to_zarr(p, mode="w")
    after = xr.open_datatree(p, engine="ome-hcs")["A/01/0/0"]["image"].values
    np.testing.assert_array_equal(after, before)


_OVERWRITE = '''
import os, sys, warnings
warnings.simplefilter("ignore")
import xarray as xr
src, tgt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
dt = xr.open_datatree(src, engine="ome-hcs")
count = [0]
for name in ("unlink", "remove", "rmdir"):
    real = getattr(os, name)
    def hooked(*a, real=real, **k):  # the n-th deletion: the writer dies, as under SIGKILL
        count[0] += 1
        if count[0] == n:
            os._exit(137)
        return real(*a, **k)
    setattr(os, name, hooked)
dt.hcs.to_zarr(tgt, mode="w")
'''


def test_an_overwrite_killed_while_clearing_never_leaves_a_broken_plate(tmp_path):
    """Killed at its Nth deletion, an overwrite leaves the old plate whole, or nothing that
    claims to be a plate: never a plate document listing wells that are gone."""
    import shutil

    src = write_sample_plate(tmp_path / "new.zarr", SamplePlate(
        rows=2, columns=3, fields=1, levels=1, shape_zyx=(1, 8, 8)))
    old = write_sample_plate(tmp_path / "old.zarr", SamplePlate(
        rows=2, columns=3, fields=2, levels=2, shape_zyx=(1, 8, 8)))
    for n in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89):
        tgt = tmp_path / f"target{n}.zarr"
        shutil.copytree(old, tgt)
        subprocess.run([sys.executable, "-c", _OVERWRITE, str(src), str(tgt), str(n)],
                       check=False, capture_output=True)
        try:
            dt = xr.open_datatree(tgt, engine="ome-hcs")
        except xarray_hcs.HcsNotAPlateError:
            continue  # unpublished first: it claims nothing
        # a plate that opens is whole: the old one (killed before any deletion) or the new
        assert len(dt.hcs.field_paths) in (6, 12)
        for fp in dt.hcs.field_paths:
            dt[f"{fp}/0"]["image"].values  # noqa: B018  every listed field reads


def test_w_minus_refuses_the_remains_of_an_interrupted_write(tmp_path, plate_v05):
    target = tmp_path / "half.zarr"
    (target / "A" / "01").mkdir(parents=True)  # keys, but no root document
    (target / "A" / "01" / "zarr.json").write_text("{}")
    with pytest.raises(HcsExistsError, match="already holds data"):
        xr.open_datatree(plate_v05, engine="ome-hcs").hcs.to_zarr(target)


# ------------------------------------------------------------------------- wrong values


def test_a_negative_chunk_edge_is_refused_not_read_as_memory(tmp_path, version):
    p = _plate(tmp_path, version)
    doc = _array_doc(p, version)
    meta = json.loads(doc.read_text())
    if version == "0.4":
        meta["chunks"] = [-1, 1, 16, 16]
    else:
        meta["chunk_grid"]["configuration"]["chunk_shape"] = [-1, 1, 16, 16]
    doc.write_text(json.dumps(meta))
    with pytest.raises(HcsMetadataError, match=r"A/01/0/0'.*must be at least 1"):
        xr.open_datatree(p, engine="ome-hcs")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_size", "directory",
                                    "empty"])
def test_a_damaged_chunk_is_an_hcs_read_error_naming_it(tmp_path, version, damage):
    p = _plate(tmp_path, version)
    chunk = _chunk(p, version)
    data = chunk.read_bytes()
    if damage == "truncate":
        chunk.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        chunk.write_bytes(os.urandom(300))
    elif damage == "wrong_size":  # a valid frame of 100 bytes where the chunk holds 512
        chunk.write_bytes(numcodecs.Zstd().encode(b"\x01" * 100))
    elif damage == "directory":
        chunk.unlink()
        chunk.mkdir()
    else:
        chunk.write_bytes(b"")
    dt = xr.open_datatree(p, engine="ome-hcs")
    for read in (lambda: dt["A/01/0/0"]["image"][0, 0, :2, :2].values,
                 lambda: dt.hcs.stack(0).values,
                 lambda: xarray_hcs.open_plate(p)["A/01/0/0"]["image"].values,
                 lambda: dt.hcs.to_zarr(p.parent / f"out-{damage}.zarr")):
        with pytest.raises(HcsReadError, match=str(chunk.relative_to(p.parent))):
            read()


def test_a_damaged_ozx_member_is_an_hcs_read_error(tmp_path):
    p = _plate(tmp_path, "0.5")
    z = tmp_path / "plate.ozx"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(p.rglob("*")):
            if f.is_file():
                zf.write(f, str(f.relative_to(p)))
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("A/01/0/0/c/0/0/0/0")
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    with open(z, "r+b") as f:
        f.seek(offset + 2)
        f.write(b"\x00\xff\x00\xff")
    with pytest.raises(HcsReadError, match="A/01/0/0/c/0/0/0/0"):
        xr.open_datatree(z, engine="ome-hcs")["A/01/0/0"]["image"][0, 0, :2, :2].values


# ------------------------------------------------------------------------- outside the store


@pytest.mark.parametrize("separator", ["..", "/..", "../../", "\\"])
def test_a_chunk_key_separator_cannot_lead_outside_the_plate(tmp_path, version, separator):
    p = _plate(tmp_path, version)
    doc = _array_doc(p, version)
    meta = json.loads(doc.read_text())
    if version == "0.4":
        meta["dimension_separator"] = separator
    else:
        meta["chunk_key_encoding"] = {"name": "default",
                                      "configuration": {"separator": separator}}
    doc.write_text(json.dumps(meta))
    with pytest.raises(HcsMetadataError, match="separator"):
        xr.open_datatree(p, engine="ome-hcs")


def test_anndata_element_names_cannot_lead_outside_the_table(tmp_path):
    import pandas as pd

    src = _plate(tmp_path, "0.5")
    dt = xr.open_datatree(src, engine="ome-hcs").hcs.add_table(
        "A/01/0", "t", pd.DataFrame({"n": [1, 2]}, index=pd.Index([1, 2], name="label")),
        backend="anndata")
    p = tmp_path / "tables.zarr"
    dt.hcs.to_zarr(p)
    doc = p / "A/01/0/tables/t/obs/zarr.json"
    meta = json.loads(doc.read_text())
    meta["attributes"]["column-order"] = ["../../../../../../0"]
    doc.write_text(json.dumps(meta))
    with pytest.raises(xarray_hcs.HcsPathError, match="AnnData element name"):
        xr.open_datatree(p, engine="ome-hcs").hcs.table("A/01/0", "t")


# ------------------------------------------------------------------------- memory, hangs


@pytest.mark.parametrize(("axis", "shape"), [("c", [10**12, 1, 32, 32]),
                                             ("x", [2, 1, 32, 10**12])])
def test_a_huge_claimed_shape_is_refused_quickly(tmp_path, version, axis, shape):
    p = _plate(tmp_path, version)
    doc = _array_doc(p, version)
    meta = json.loads(doc.read_text())
    meta["shape"] = shape
    doc.write_text(json.dumps(meta))
    out = _limited(_READ, str(p), timeout=60)
    assert out.startswith("HCSERROR HcsMetadataError") and "more than" in out, out


def _zstd_bomb(size: int) -> bytes:
    out = bytearray(b"\x28\xb5\x2f\xfd\xe0") + struct.pack("<Q", size)
    n = size
    while n > 0:
        b = min(131072, n)
        n -= b
        out += struct.pack("<I", (1 if n == 0 else 0) | (1 << 1) | (b << 3))[:3] + b"\x00"
    return bytes(out)


@pytest.mark.parametrize("bomb", ["zstd", "zstd-small", "gzip", "ozx"])
def test_decompression_bombs_are_refused_before_they_inflate(tmp_path, bomb):
    import zlib

    version = "0.4" if bomb == "gzip" else "0.5"
    p = _plate(tmp_path, version)
    chunk = _chunk(p, version)
    target = p
    if bomb == "zstd":  # 131 KB declaring 4 GiB
        chunk.write_bytes(_zstd_bomb(4 * 2**30))
    elif bomb == "zstd-small":  # a few KB declaring 64 MiB: small enough to be read
        chunk.write_bytes(_zstd_bomb(64 * 2**20)[:4096] + b"")
    elif bomb == "gzip":  # the v2 array's compressor replaced: gzip of 1.5 GiB of zeros
        doc = _array_doc(p, version)
        meta = json.loads(doc.read_text())
        meta["compressor"] = {"id": "gzip", "level": 1}
        doc.write_text(json.dumps(meta))
        chunk.write_bytes(zlib.compress(bytes(2**28), 9))
    else:  # an .ozx whose chunk member inflates to 3 GiB
        target = tmp_path / "plate.ozx"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(p.rglob("*")):
                if f.is_file() and f != chunk:
                    zf.write(f, str(f.relative_to(p)))
            with zf.open(str(chunk.relative_to(p)), "w", force_zip64=True) as member:
                block = bytes(2**24)
                for _ in range(3 * 2**30 // len(block)):
                    member.write(block)
    out = _limited(_READ, str(target), memory=2 * 2**30)
    assert out.startswith("HCSERROR HcsReadError"), out


@pytest.mark.parametrize("special", ["fifo", "devzero"])
@pytest.mark.parametrize("what", ["chunk", "document"])
def test_special_files_are_refused_not_read_forever(tmp_path, special, what):
    p = _plate(tmp_path, "0.5")
    path = _chunk(p, "0.5") if what == "chunk" else p / "A/01/0/0/zarr.json"
    path.unlink()
    if special == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    out = _limited(_READ, str(p), timeout=60)
    assert out.startswith("HCSERROR HcsReadError") and "not a regular file" in out, out


def test_a_document_nested_ten_thousand_deep_is_an_hcs_error(tmp_path):
    p = _plate(tmp_path, "0.5")
    (p / "A/01/zarr.json").write_text('{"attributes": ' + "[" * 10_000 + "]" * 10_000 + "}")
    with pytest.raises(HcsMetadataError, match="nested too deeply"):
        xr.open_datatree(p, engine="ome-hcs")


# ------------------------------------------------------------------------- HcsError family


def _set(doc: dict, keys: tuple, value) -> None:
    for k in keys[:-1]:
        doc = doc[k]
    doc[keys[-1]] = value


@pytest.mark.parametrize(("version", "node", "keys", "value"), [
    ("0.4", "A/1/.zattrs", ("well", "version"), {"a": 1}),
    ("0.5", "A/01/0/0/zarr.json", ("chunk_grid",), 1.5),
    ("0.4", "A/1/0/0/.zarray", ("compressor",), "zstd"),
    ("0.5", "A/01/0/0/zarr.json", ("chunk_key_encoding",), None),
    ("0.4", "A/1/0/0/.zarray", ("order",), None),
    ("0.4", "A/1/0/0/.zarray", ("compressor", "id"), ["x"]),
    ("0.4", "A/1/0/0/.zarray", ("chunks",), [1, 1, 0, 16]),
    ("0.4", "A/1/0/0/.zarray", ("shape",), [1, -1, 16, 16]),
    ("0.4", "A/1/0/0/.zarray", ("fill_value",), "NaN"),
    ("0.5", "A/01/0/0/zarr.json", ("fill_value",), 1.5),
    ("0.5", "A/01/0/0/zarr.json", ("codecs",), [{"name": "zstd"}]),
    ("0.5", "A/01/zarr.json", ("attributes", "ome", "version"), 5),
])
def test_one_wrong_value_in_a_document_is_an_hcs_metadata_error(tmp_path, version, node,
                                                                 keys, value):
    p = _plate(tmp_path, version, column_width=0 if version == "0.4" else 2)
    doc_path = p / node
    doc = json.loads(doc_path.read_text())
    _set(doc, keys, value)
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(HcsMetadataError, match=str(p)):
        dt = xr.open_datatree(p, engine="ome-hcs")
        dt.hcs.stack(0).values  # noqa: B018


def test_a_table_element_with_wrong_attributes_is_skipped_when_not_strict(tmp_path):
    import pandas as pd

    src = _plate(tmp_path, "0.5")
    dt = xr.open_datatree(src, engine="ome-hcs")
    t = pd.DataFrame({"n": [1, 2]}, index=pd.Index([1, 2], name="label"))
    for fp in dt.hcs.field_paths:
        dt = dt.hcs.add_table(fp, "t", t, backend="anndata")
    p = tmp_path / "tables.zarr"
    dt.hcs.to_zarr(p)
    doc = p / "A/01/0/tables/t/obs/zarr.json"
    meta = json.loads(doc.read_text())
    meta["attributes"] = 5
    doc.write_text(json.dumps(meta))
    dt = xr.open_datatree(p, engine="ome-hcs")
    with pytest.raises(HcsMetadataError, match="attributes must be a JSON object"):
        dt.hcs.concat_tables("t")
    with pytest.warns(xarray_hcs.HcsMissingWarning, match="A/01/0/tables/t/obs"):
        rows = dt.hcs.concat_tables("t", strict=False)
    assert rows["column"].tolist() == ["02", "02"]  # the good table, its rows only


def test_bad_target_paths_write_nothing(tmp_path, plate_v05):
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    (tmp_path / "a_file").write_text("x")
    for target in (tmp_path / "a_file" / "out.zarr", tmp_path / ("x" * 300 + ".zarr"),
                   f"{tmp_path}/nul\0.zarr"):
        with pytest.raises(xarray_hcs.HcsPathError):
            dt.hcs.to_zarr(target)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_attributes_json_cannot_hold_are_refused_before_any_pixel(tmp_path, plate_v05):
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    dt.attrs["exposure"] = np.arange(3)  # not JSON: refused before anything is written
    with pytest.raises(HcsMetadataError, match="cannot be written as JSON"):
        dt.hcs.to_zarr(tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
    dt.attrs["exposure"] = float("nan")  # NaN: written as zarr-python writes it, read back
    dt.hcs.to_zarr(tmp_path / "nan.zarr")
    assert np.isnan(xr.open_datatree(tmp_path / "nan.zarr", engine="ome-hcs").attrs[
        "exposure"])


# ------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("kw", [{"acquisition": -1}, {"acquisition": True},
                                {"acquisition": 0, "acquisition_name": 5},
                                {"acquisition": "0"}])
def test_a_bad_add_image_argument_never_reaches_the_plate(tmp_path, kw):
    p = tmp_path / "p.zarr"
    img = xr.DataArray(np.zeros((1, 8, 8), "u2"), dims=("c", "y", "x"))
    xarray_hcs.add_image(p, "A", 1, img)
    docs = {f: f.read_bytes() for f in p.rglob("zarr.json")}
    with pytest.raises(xarray_hcs.HcsValueError):
        xarray_hcs.add_image(p, "A", 1, img, **kw)
    assert {f: f.read_bytes() for f in p.rglob("zarr.json")} == docs
    assert xr.open_datatree(p, engine="ome-hcs").hcs.field_paths == ["A/1/0"]


def test_every_error_here_is_of_the_family():
    assert issubclass(HcsReadError, HcsError) and issubclass(HcsReadError, OSError)
    assert issubclass(xarray_hcs.HcsValueError, ValueError)


def test_a_truncated_blosc_chunk_is_refused_not_read_past_its_end(tmp_path):
    """blosc stores incompressible data as is and reads as many bytes as its header says: a
    chunk cut short would be read past its end, into memory that is not the chunk's."""
    import zarr

    p = _plate(tmp_path, "0.4")
    a = zarr.open_array(p / "A/01/0/0", mode="r+")
    assert a.metadata.compressor.codec_id == "blosc"
    a[0, 0, :16, :16] = np.random.default_rng(1).integers(1, 60000, (16, 16)).astype("u2")
    chunk = _chunk(p, "0.4")
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(HcsReadError, match="where its blosc header says"):
        xr.open_datatree(p, engine="ome-hcs")["A/01/0/0"]["image"].values  # noqa: B018


def test_an_array_removed_or_made_anew_under_an_open_tree_is_an_error(tmp_path):
    """A tree opened before a field was removed (and its path taken by another image) reads
    neither the deleted chunks as fill values nor the new image under the old one's dtype,
    coordinates and channel names: both are HcsNotFoundErrors."""
    p = _plate(tmp_path, "0.5", fields=2)
    for chunks in (None, {}):
        old = xr.open_datatree(p, engine="ome-hcs", chunks=chunks)
        xarray_hcs.remove_image(p, "A", 1, "1")
        with pytest.raises(xarray_hcs.HcsNotFoundError, match="removed"):
            old["A/01/1/0"]["image"].values  # noqa: B018
        new = xr.DataArray(np.full((2, 1, 32, 32), -1, "int16"), dims=("c", "z", "y", "x"),
                           coords={"c": ["Actin", "Tubulin"]})
        assert xarray_hcs.add_image(p, "A", 1, new, levels=1) == "A/01/1"
        with pytest.raises(xarray_hcs.HcsNotFoundError, match="replaced since the plate was "
                                                               "opened"):
            old["A/01/1/0"]["image"].values  # noqa: B018
        assert int(xr.open_datatree(p, engine="ome-hcs")["A/01/1/0"]["image"].min()) == -1
        xarray_hcs.remove_image(p, "A", 1, "1")
        xarray_hcs.add_image(p, "A", 1, new.astype("uint16") * 0 + 7, levels=1)
