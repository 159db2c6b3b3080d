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
from _fuzz import zstd_bomb

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
                           text=True, timeout=timeout, check=False)
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
        xr.open_datatree(z, engine="ome-hcs")["A/01/0/0"]["image"][0, 0, :2, :2].values  # noqa: B018


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


@pytest.mark.parametrize("bomb", ["zstd", "zstd-small", "gzip", "ozx"])
def test_decompression_bombs_are_refused_before_they_inflate(tmp_path, bomb):
    import zlib

    version = "0.4" if bomb == "gzip" else "0.5"
    p = _plate(tmp_path, version)
    chunk = _chunk(p, version)
    target = p
    if bomb == "zstd":  # 131 KB declaring 4 GiB
        chunk.write_bytes(zstd_bomb(4 * 2**30))
    elif bomb == "zstd-small":  # a few KB declaring 64 MiB: small enough to be read
        chunk.write_bytes(zstd_bomb(64 * 2**20)[:4096] + b"")
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
    # a link to a device is refused as one outside the plate; a FIFO in place as special
    reason = "outside the store's directory" if special == "devzero" else "not a regular file"
    assert out.startswith("HCSERROR HcsReadError") and reason in out, out


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


# ------------------------------------------------------------- second round of attacks


_IMG = xr.DataArray(np.ones((2, 1, 32, 32), "uint16"), dims=("c", "z", "y", "x"),
                    coords={"c": ["DAPI", "GFP"]})


@pytest.mark.parametrize("kw", [
    {"levels": 0}, {"levels": 1.5}, {"levels": True}, {"levels": 100},
    {"chunks": {"y": 1.5}}, {"chunks": {"y": 0}}, {"chunks": {"yy": 16}}, {"chunks": [16]},
    {"labels": {"../x": _IMG[0]}}, {"labels": {"n": _IMG[0].astype("float32")}},
    {"image": _IMG.rename(c="q")}, {"image": _IMG.values}, {"row": "A/.."},
    {"column": "../1"}, {"field": "../x"}, {"row": "tables"}])
def test_a_refused_add_image_leaves_no_trace(tmp_path, kw):
    """Every refused call raises an HcsError before the plate changes: no reserved field
    group is left behind for the next adder to skip, and nothing outside the well."""
    p = _plate(tmp_path, "0.5", columns=1)
    before = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*"))
    args = {"row": "A", "column": 1, "image": _IMG, **kw}
    with pytest.raises(HcsError):
        xarray_hcs.add_image(p, args.pop("row"), args.pop("column"), args.pop("image"),
                             **args)
    after = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*")
                   if f.name != ".xarray-hcs.lock")
    assert after == before
    assert xarray_hcs.add_image(p, "A", 1, _IMG, levels=1) == "A/01/1"


def test_a_failing_pixel_write_releases_the_reserved_field(tmp_path):
    """A pixel source that fails mid-write (here a dask task raising) leaves the plate as it
    was: the reserved field is deleted, the next adder takes its number."""
    import dask.array as da

    p = _plate(tmp_path, "0.5", columns=1)

    def boom(block):
        raise RuntimeError("the microscope's share went away")

    bad = _IMG.copy(data=da.map_blocks(boom, da.ones(_IMG.shape, dtype="u2", chunks=16),
                                       dtype="u2"))
    with pytest.raises(RuntimeError, match="share went away"):
        xarray_hcs.add_image(p, "A", 1, bad, levels=1)
    assert sorted(x.name for x in (p / "A/01").iterdir()) == ["0", "zarr.json"]
    assert xarray_hcs.add_image(p, "A", 1, _IMG, levels=1) == "A/01/1"


@pytest.mark.parametrize("kind", ["directory", "symlink-loop", "read-only"])
def test_a_lock_that_cannot_be_taken_is_an_hcs_write_error(tmp_path, kind):
    p = _plate(tmp_path, "0.5", columns=1)
    lock = p / ".xarray-hcs.lock"
    if kind == "directory":
        lock.mkdir()
    elif kind == "symlink-loop":
        lock.symlink_to(lock)
    docs = {f: f.read_bytes() for f in p.rglob("zarr.json")}
    if kind == "read-only":
        folders = [p, *(d for d in p.rglob("*") if d.is_dir())]
        for body in ('xarray_hcs.add_image(p, "A", 1, img, levels=1)',
                     'xarray_hcs.remove_image(p, "A", 1, "0")'):
            out = _unprivileged(f"p = {str(p)!r}\n{body}", folders)
            assert out.startswith("HcsWriteError") and str(p) in out, out
    else:
        for call in (lambda: xarray_hcs.add_image(p, "A", 1, _IMG, timeout=5),
                     lambda: xarray_hcs.remove_image(p, "A", 1, "0", timeout=5)):
            with pytest.raises(xarray_hcs.HcsWriteError, match="cannot take the plate's lock"):
                call()
    assert {f: f.read_bytes() for f in p.rglob("zarr.json")} == docs


def _unprivileged(body: str, read_only: list[Path]) -> str:
    """Run ``body`` in a fresh interpreter that permissions apply to (root drops the
    capability that ignores them), with the ``read_only`` folders made read-only meanwhile;
    its last output line: the name of the HcsError it raised and its message, "OTHER ..."
    for any other exception, else what it printed. ``img`` is a (c, z, y, x) image."""
    code = (
        "import numpy as np, xarray as xr, xarray_hcs\n"
        "img = xr.DataArray(np.ones((2, 1, 32, 32), 'u2'), dims=('c', 'z', 'y', 'x'),\n"
        "                   coords={'c': ['DAPI', 'GFP']})\n"
        "try:\n" + "".join(f"    {line}\n" for line in body.splitlines()) +
        "except xarray_hcs.HcsError as e:\n    print(type(e).__name__, e)\n"
        "except BaseException as e:\n    print('OTHER', type(e).__name__, e)\n")
    for d in read_only:
        d.chmod(0o555)
    try:
        cmd = [sys.executable, "-c", code]
        if os.geteuid() == 0:
            cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    finally:
        for d in read_only:
            d.chmod(0o755)
    return (r.stdout.strip().splitlines() or [r.stderr.strip()[-300:]])[-1]


def test_a_write_the_file_system_refuses_is_an_hcs_write_error(tmp_path, plate_v05):
    out = tmp_path / "ro"
    out.mkdir()
    got = _unprivileged(f"dt = xr.open_datatree({str(plate_v05)!r}, engine='ome-hcs')\n"
                        f"dt.hcs.to_zarr({str(out / 'new.zarr')!r})\nprint('WROTE')", [out])
    assert got.startswith("HcsWriteError"), got
    assert list(out.iterdir()) == []


def test_a_row_named_tables_cannot_hide_the_plates_tables(tmp_path, plate_v05):
    import pandas as pd

    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    dt = dt.hcs.add_table("", "conditions", pd.DataFrame({"drug": ["DMSO"]}),
                          kind="condition_table")
    with pytest.raises(xarray_hcs.HcsPathError, match="cannot be named 'tables'"):
        dt.hcs.add_image("tables", 1, _IMG)
    with pytest.raises(xarray_hcs.HcsPathError, match="cannot be named 'tables'"):
        xarray_hcs.create_plate(tmp_path / "c.zarr", ["tables/1"], template=_IMG)
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize(("x", "len_x", "message"), [
    (np.nan, 5.0, "no finite x_micrometer"), (0.0, np.inf, "no finite len_x"),
    (0.0, -3.0, "negative len_x"), ("left", 5.0, "no finite x_micrometer")])
def test_a_roi_with_a_bound_that_is_no_number_is_refused(plate_v05, x, len_x, message):
    """A ROI is the pixels its bounds say: NaN, infinity or a negative length would select
    pixels nobody chose (the whole axis, or none)."""
    import pandas as pd

    cols = ["x_micrometer", "y_micrometer", "z_micrometer", "len_x_micrometer",
            "len_y_micrometer", "len_z_micrometer"]
    df = pd.DataFrame([[0.0, 0, 0, 5, 5, 2], [x, 0, 0, len_x, 5, 2]], columns=cols,
                      index=pd.Index(["ok", "bad"], name="FieldIndex"))
    dt = xr.open_datatree(plate_v05, engine="ome-hcs").hcs.add_table(
        "A/01/0", "rois", df, kind="roi_table")
    ok = dt.hcs.roi("A/01/0", "rois", "ok")
    step = float(ok.x[1] - ok.x[0])
    assert ok.sizes["x"] == round(5 / step)
    with pytest.raises(xarray_hcs.HcsTableError, match=message):
        dt.hcs.roi("A/01/0", "rois", "bad")


def _anndata_plate(tmp_path: Path) -> tuple[Path, Path]:
    import pandas as pd

    p = _plate(tmp_path, "0.5", columns=1)
    df = pd.DataFrame({"area": [1.0, 2, 3, 4, 5], "mean": [.1, .2, .3, .4, .5],
                       "flag": [1.0, 0, 1, 0, 1]}, index=pd.Index(np.arange(1, 6), name="label"))
    dt = xr.open_datatree(p, engine="ome-hcs").hcs.add_table(
        "A/01/0", "t", df, kind="feature_table", backend="anndata")
    out = tmp_path / "t.zarr"
    dt.hcs.to_zarr(out)
    return out, out / "A/01/0/tables/t"


def _sparse_x(table: Path, enc: str, shape, data, indices, indptr) -> None:
    import shutil

    import zarr

    shutil.rmtree(table / "X")
    g = zarr.open_group(table, mode="a").create_group("X")
    g.attrs.update({"encoding-type": enc, "encoding-version": "0.1.0", "shape": shape})
    for name, arr in (("data", np.asarray(data, "f8")), ("indices", np.asarray(indices, "i8")),
                      ("indptr", np.asarray(indptr, "i8"))):
        g.create_array(name, shape=arr.shape, dtype=arr.dtype)[...] = arr


@pytest.mark.parametrize("enc", ["csr_matrix", "csc_matrix"])
def test_a_sparse_anndata_x_reads_as_its_dense_values(tmp_path, enc):
    """X stored sparse (as AnnData writes scipy matrices), repeated entries adding up as in
    scipy: against the dense matrix built by hand."""
    p, t = _anndata_plate(tmp_path)
    dense = np.zeros((5, 3))
    dense[0, 0], dense[1, 2], dense[4, 1] = 1.5, 2.0, 7.0
    dense[3, 2] = 3.0  # stored as 1 + 2 below
    rows, cols, vals = [0, 1, 3, 3, 4], [0, 2, 2, 2, 1], [1.5, 2.0, 1.0, 2.0, 7.0]
    if enc == "csr_matrix":
        indptr = np.searchsorted(rows, np.arange(6))
        _sparse_x(t, enc, [5, 3], vals, cols, indptr)
    else:
        order = np.lexsort((rows, cols))
        indptr = np.searchsorted(np.asarray(cols)[order], np.arange(4))
        _sparse_x(t, enc, [5, 3], np.asarray(vals)[order], np.asarray(rows)[order], indptr)
    got = xr.open_datatree(p, engine="ome-hcs").hcs.table("A/01/0", "t")
    np.testing.assert_array_equal(got[["area", "mean", "flag"]].to_numpy(), dense)


@pytest.mark.parametrize(("shape", "indices", "indptr", "message"), [
    ([5, 3], [0, 1, 1, 2], [0, 3, 1, 100, 4, 4], "inconsistent"),
    ([5, 3], [0, 1, 1, 2], [0, 1, 2, 3], "inconsistent"),
    ([5, 3], [0, 1, 1_000_000, 2], [0, 1, 2, 3, 4, 4], "outside"),
    ([5, 3], [0, 1, -1, 2], [0, 1, 2, 3, 4, 4], "outside"),
    ([5, 2**40], [0, 1, 1, 2], [0, 1, 2, 3, 4, 4], "cells"),
    ([5, -3], [0, 1, 1, 2], [0, 1, 2, 3, 4, 4], "two integers"),
])
def test_a_damaged_sparse_anndata_x_is_refused_not_a_crash(tmp_path, shape, indices, indptr,
                                                           message):
    """scipy trusts indptr and indices: a damaged matrix crashed the interpreter
    (SIGSEGV). It runs in a child process so that a crash fails the test, not the run."""
    p, t = _anndata_plate(tmp_path)
    _sparse_x(t, "csr_matrix", shape, np.ones(4), indices, indptr)
    code = '''
import sys, warnings
warnings.simplefilter("ignore")
import xarray as xr, xarray_hcs
try:
    xr.open_datatree(sys.argv[1], engine="ome-hcs").hcs.table("A/01/0", "t"); print("READ")
except xarray_hcs.HcsError as e:
    print("HCSERROR", type(e).__name__, e)
'''
    out = _limited(code, str(p))
    assert out.startswith("HCSERROR HcsTableError") and message in out, out


@pytest.mark.parametrize("clash", ["repeated var", "var is obs", "repeated obs"])
def test_anndata_columns_of_one_name_are_refused_not_dropped(tmp_path, clash):
    import json as _json

    p, t = _anndata_plate(tmp_path)
    if clash == "repeated obs":
        doc = t / "obs/zarr.json"
        d = _json.loads(doc.read_text())
        d["attributes"]["column-order"] = ["x", "x"]
        doc.write_text(_json.dumps(d))
    else:
        import zarr

        names = ["area", "area", "flag"] if clash == "repeated var" else ["area", "mean",
                                                                          "label2"]
        var = zarr.open_group(t / "var", mode="a")
        idx = var.attrs["_index"]
        del var[idx]
        var.create_array(idx, data=np.asarray(names, dtype=str))
        if clash == "var is obs":
            obs = zarr.open_group(t / "obs", mode="a")
            obs.create_array("label2", data=np.arange(5.0))
            obs.attrs["column-order"] = [*obs.attrs["column-order"], "label2"]
    with pytest.raises(xarray_hcs.HcsTableError, match="twice"):
        xr.open_datatree(p, engine="ome-hcs").hcs.table("A/01/0", "t")


def test_channels_without_labels_of_their_own_are_never_aligned_by_name(tmp_path):
    """Repeated omero labels get names made up per field ("c1"): aligning two fields'
    "c1" (one DAPI, one GFP) would stack two stains as one channel."""
    import zarr

    p = _plate(tmp_path, "0.5")
    for well, labels in (("A/01", ["DAPI", "DAPI"]), ("A/02", ["GFP", "GFP"])):
        doc = p / well / "0/zarr.json"
        d = json.loads(doc.read_text())
        for ch, lab in zip(d["attributes"]["ome"]["omero"]["channels"], labels, strict=True):
            ch["label"] = lab
        doc.write_text(json.dumps(d))
        zarr.open_array(p / well / "0/0", mode="r+")[0] = 1
    dt = xr.open_datatree(p, engine="ome-hcs")
    assert dt["A/01/0"].c.attrs["made_up_labels"] == ["c1"]
    for channels in ("exact", "union"):
        with pytest.raises(HcsMetadataError, match="labels along 'c'|without a label"):
            dt.hcs.stack(0, channels=channels)
    one = dt.hcs.sel(wells=["A/01"]).hcs.stack(0, channels="union")  # one field: no guess
    assert list(one.c.values) == ["DAPI", "c1"]


def test_a_wide_csv_table_reads_in_linear_time(tmp_path):
    """pandas' set_index on a frame of one wide block is quadratic in its columns (a 1 MB
    csv took minutes); the table must come back whole and quickly, checked here by size."""
    import pandas as pd

    p = _plate(tmp_path, "0.5", columns=1)
    dt = xr.open_datatree(p, engine="ome-hcs").hcs.add_table(
        "A/01/0", "t", pd.DataFrame({"a": [1.0]}, index=pd.Index([1], name="label")),
        kind="feature_table", backend="csv")
    out = tmp_path / "w.zarr"
    dt.hcs.to_zarr(out)
    n = 60_000
    (out / "A/01/0/tables/t/table.csv").write_text(
        "label," + ",".join(f"c{i}" for i in range(n)) + "\n1," + ",".join(
            str(i) for i in range(n)) + "\n")
    code = '''
import sys, xarray as xr
t = xr.open_datatree(sys.argv[1], engine="ome-hcs").hcs.table("A/01/0", "t")
print(t.shape, int(t["c59999"].iloc[0]), t.index.name)
'''
    # 60,000 columns took ~35 s before; a minute is the bound on a loaded machine
    assert _limited(code, str(out), timeout=60) == "(1, 60000) 59999 label"


@pytest.mark.parametrize("kind", ["range index without name", "nested pandas metadata",
                                  "repeated column"])
def test_parquet_tables_with_unusable_pandas_metadata_are_table_errors(tmp_path, kind):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = _plate(tmp_path, "0.5")
    dt = xr.open_datatree(p, engine="ome-hcs")
    for f in dt.hcs.field_paths:
        dt = dt.hcs.add_table(f, "t", pd.DataFrame(
            {"area": [1.0, 2.0]}, index=pd.Index([1, 2], name="label")), kind="feature_table")
    out = tmp_path / "w.zarr"
    dt.hcs.to_zarr(out)
    base = pa.table({"label": [1, 2], "area": [1.0, 2.0]})
    table = {
        "range index without name": base.replace_schema_metadata({b"pandas": json.dumps({
            "index_columns": [{"kind": "range", "start": 0, "stop": 2, "step": 1}],
            "columns": [], "column_indexes": []}).encode()}),
        "nested pandas metadata": base.replace_schema_metadata(
            {b"pandas": b"[" * 100_000 + b"]" * 100_000}),
        "repeated column": pa.Table.from_arrays(
            [pa.array([1, 2]), pa.array([1.0, 2.0]), pa.array([3.0, 4.0])],
            names=["label", "area", "area"]),
    }[kind]
    pq.write_table(table, out / "A/01/0/tables/t/table.parquet")
    opened = xr.open_datatree(out, engine="ome-hcs")
    with pytest.raises(xarray_hcs.HcsTableError, match="A/01/0/tables/t"):
        opened.hcs.table("A/01/0", "t")
    with pytest.raises(xarray_hcs.HcsTableError, match="A/01/0/tables/t"):
        opened.hcs.concat_tables("t")


@pytest.mark.parametrize("bomb", ["parquet", "anndata"])
def test_a_table_that_decodes_to_gigabytes_is_refused_first(tmp_path, bomb):
    """A few kB on disk may claim more cells than a table may hold (a parquet of repeated
    values, AnnData arrays whose chunks are all absent): refused from the metadata, before
    anything that large is allocated (the child has 1.5 GiB of address space)."""
    import pandas as pd

    p = _plate(tmp_path, "0.5", columns=1)
    dt = xr.open_datatree(p, engine="ome-hcs").hcs.add_table(
        "A/01/0", "t", pd.DataFrame({"a": [1.0]}, index=pd.Index([1], name="label")),
        kind="feature_table", backend=bomb)
    out = tmp_path / "w.zarr"
    dt.hcs.to_zarr(out)
    t = out / "A/01/0/tables/t"
    n = 2**29
    if bomb == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = 2**22  # x 70 columns of nulls: 293 M cells (2.3 GB as pandas), 100 kB on disk
        table = pa.table({"label": pa.nulls(n, pa.int64()),
                          **{f"v{i}": pa.nulls(n) for i in range(69)}})
        pq.write_table(table, t / "table.parquet", compression="zstd")
        assert (t / "table.parquet").stat().st_size < 2**20
        del table
    else:
        import zarr

        for rel in ("obs/label", "X"):
            shape = (n,) if rel != "X" else (n, 1)
            a = zarr.open_group(t, mode="a")
            attrs = dict(a[rel].attrs)
            del a[rel]
            new = a.create_array(rel, shape=shape, chunks=(n // 64,) + shape[1:],
                                 dtype="int64" if rel != "X" else "float64", fill_value=0)
            new.attrs.update(attrs)
    code = '''
import sys, xarray as xr, xarray_hcs
try:
    xr.open_datatree(sys.argv[1], engine="ome-hcs").hcs.table("A/01/0", "t"); print("READ")
except xarray_hcs.HcsError as e:
    print("HCSERROR", type(e).__name__, e)
except MemoryError:
    print("MEMORYERROR")
'''
    out_line = _limited(code, str(out), memory=3 * 2**30 // 2)
    assert out_line.startswith("HCSERROR HcsTableError") and "cells" in out_line, out_line


def test_a_shard_index_entry_half_marked_empty_is_damage_not_fill(tmp_path):
    """The empty marker of a shard index is both offset and length 2**64-1; one of them
    alone is a damaged index, never an absent chunk read as fill values."""
    import zarr

    p = tmp_path / "s.zarr"
    xarray_hcs.create_plate(p, {"A/01": 1}, template=_IMG[:, :, :16, :16], levels=1)
    img = _IMG[:, :, :16, :16] * 5
    import shutil

    shutil.rmtree(p / "A/01/0/0")
    a = zarr.create_array(p / "A/01/0/0", shape=img.shape, dtype="u2", shards=(1, 1, 16, 16),
                          chunks=(1, 1, 8, 8), fill_value=0)
    a[...] = img.values
    shard = p / "A/01/0/0/c/0/0/0/0"
    raw = bytearray(shard.read_bytes())
    # index at the end: 4 entries of (offset, length) + crc32c; mark entry 0's offset only
    at = len(raw) - 4 - 4 * 16
    raw[at:at + 8] = struct.pack("<Q", 2**64 - 1)
    shard.write_bytes(bytes(raw))
    dt = xr.open_datatree(p, engine="ome-hcs")
    with pytest.raises(HcsReadError, match="half marked empty|damaged"):
        dt["A/01/0/0"]["image"].values  # noqa: B018


@pytest.mark.parametrize("what", ["table", "chunk", "document", "directory"])
def test_links_out_of_the_plate_are_not_followed(tmp_path, what):
    """A plate from an untrusted archive may ship symbolic links to local files: a reader
    must not parse them (nor a writer copy them into the plate it writes). Links inside the
    plate, and a plate that is itself a link, are fine."""
    import pandas as pd

    secret = tmp_path / "secret.txt"
    secret.write_text("label,password\n0,hunter2\n")
    p = _plate(tmp_path, "0.5", columns=1)
    dt = xr.open_datatree(p, engine="ome-hcs").hcs.add_table(
        "A/01/0", "t", pd.DataFrame({"a": [1.0]}, index=pd.Index([0], name="label")),
        kind="generic_table", backend="csv")
    plate = tmp_path / "w.zarr"
    dt.hcs.to_zarr(plate)
    linked = tmp_path / "linked.zarr"
    linked.symlink_to(plate)  # the plate itself a link: fine
    assert float(xr.open_datatree(linked, engine="ome-hcs")["A/01/0/0"]["image"].sum()) > 0
    target = {"table": plate / "A/01/0/tables/t/table.csv",
              "chunk": plate / "A/01/0/0/c/0/0/0/0",
              "document": plate / "A/01/0/0/zarr.json",
              "directory": plate / "A/01/0/tables/t"}[what]
    elsewhere = tmp_path / "elsewhere"
    import shutil

    if what == "directory":
        shutil.copytree(target, elsewhere)
        shutil.rmtree(target)
        target.symlink_to(elsewhere)
    else:
        shutil.copy(target, elsewhere)
        target.unlink()
        target.symlink_to(secret if what == "table" else elsewhere)
    with pytest.raises(HcsReadError, match="outside the store's directory"):
        opened = xr.open_datatree(plate, engine="ome-hcs")
        opened["A/01/0/0"]["image"].values  # noqa: B018
        opened.hcs.table("A/01/0", "t")
    # a link that stays inside the plate is followed
    if what != "directory":
        inside = plate / "A/01/0/copy"
        target.unlink()
        shutil.copy(elsewhere, inside)
        target.symlink_to(inside)
        opened = xr.open_datatree(plate, engine="ome-hcs")
        opened["A/01/0/0"]["image"].values  # noqa: B018


def test_a_montage_of_a_plate_declaring_thousands_of_rows_is_refused(tmp_path):
    p = _plate(tmp_path, "0.5")
    doc = json.loads((p / "zarr.json").read_text())
    pl = doc["attributes"]["ome"]["plate"]
    pl["rows"] += [{"name": f"R{i}"} for i in range(3000)]
    pl["columns"] += [{"name": f"{i + 3:05d}"} for i in range(3000)]
    (p / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(xarray_hcs.HcsValueError, match="montage of 3001 rows"):
        xr.open_datatree(p, engine="ome-hcs").hcs.montage(level=0)


def test_a_plate_opened_by_a_relative_path_reads_after_a_change_of_directory(
        tmp_path, monkeypatch):
    p = _plate(tmp_path, "0.5")
    monkeypatch.chdir(tmp_path)
    expected = xr.open_datatree(p, engine="ome-hcs")["A/01/0/0"]["image"].values
    dt = xr.open_datatree(p.name, engine="ome-hcs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the tree keeps reading the plate it opened
    np.testing.assert_array_equal(dt["A/01/0/0"]["image"].values, expected)


@pytest.mark.parametrize("where", [".", "", "./", "folder"])
def test_mode_w_never_clears_a_folder_that_is_no_zarr_store(tmp_path, plate_v05, monkeypatch,
                                                             where):
    """mode="w" replaces a zarr store, nothing else: not a project folder of other files,
    not the working directory (not even a plate that is the working directory)."""
    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    (work / "notes" / "mine.txt").write_text("irreplaceable")
    (work / "data.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(work)
    target = "." if where == "folder" else where
    if where == "folder":
        monkeypatch.chdir(tmp_path)
        target = "work"
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    with pytest.raises(HcsError):
        dt.hcs.to_zarr(target, mode="w")
    with pytest.raises(HcsError):
        xarray_hcs.create_plate(target, ["A/01"], _IMG, mode="w")
    assert (work / "notes" / "mine.txt").read_text() == "irreplaceable"
    assert (work / "data.csv").exists()
    # a plate that is the working directory is not replaced either
    plate = tmp_path / "p.zarr"
    dt.hcs.to_zarr(plate)
    monkeypatch.chdir(plate)
    with pytest.raises(HcsExistsError, match="working directory"):
        dt.hcs.to_zarr(".", mode="w")
    assert xr.open_datatree(plate, engine="ome-hcs").hcs.wells == dt.hcs.wells
    with pytest.raises(xarray_hcs.HcsPathError, match="empty path"):
        xarray_hcs.add_image("", "A", 1, _IMG)


def test_an_interrupted_first_write_leaves_a_zarr_store_mode_w_replaces(tmp_path, plate_v05):
    """The root is a bare zarr group from the first write on, so what a killed write leaves
    is a zarr store (not a plate), which mode="w" replaces."""
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    target = tmp_path / "t.zarr"
    job = dt.hcs.to_zarr(target, compute=False)  # arrays made, the plate not yet
    del job
    with pytest.raises(xarray_hcs.HcsNotAPlateError):
        xr.open_datatree(target, engine="ome-hcs")
    with pytest.raises(HcsExistsError, match="pass mode='w'"):
        dt.hcs.to_zarr(target)
    dt.hcs.to_zarr(target, mode="w")
    xr.testing.assert_identical(xr.open_datatree(target, engine="ome-hcs"), dt)


# ------------------------------------------------------------- third round (a new user)


def test_arguments_of_the_wrong_kind_are_errors_of_the_family(tmp_path, plate_v05):
    """Each of these was a bare AttributeError, KeyError, ZeroDivisionError or ValueError,
    or was silently accepted."""
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    fp = dt.hcs.field_paths[0]
    lab = dt.hcs.image(fp, label="nuclei")
    p = tmp_path / "p.zarr"
    dt.hcs.to_zarr(p)
    cases = [
        (lambda: xarray_hcs.add_image(p, "A", 1, _IMG[..., :16, :16], labels=[lab]),
         xarray_hcs.HcsTypeError),
        (lambda: dt.hcs.add_image("A", 1, _IMG, labels=[lab]), xarray_hcs.HcsTypeError),
        (lambda: xarray_hcs.add_image(p, "A", 1, _IMG, lock="yes"), xarray_hcs.HcsTypeError),
        (lambda: dt.hcs.image(fp, label=["nuclei"]), xarray_hcs.HcsTypeError),
        (lambda: dt.hcs.to_zarr(tmp_path / "x.zarr", mode="x"), xarray_hcs.HcsValueError),
        (lambda: xr.open_datatree(p, engine="ome-hcs", on_missing="ignore"),
         xarray_hcs.HcsValueError),
        (lambda: xr.open_datatree(p, engine="ome-hcs", group="nope"),
         xarray_hcs.HcsSelectionError),
        (lambda: dt.hcs.stack(0, chunks={"well": 0}), xarray_hcs.HcsValueError),
        (lambda: dt.hcs.stack(0, chunks={"y": -2}), xarray_hcs.HcsValueError),
        (lambda: dt.hcs.stack(0, chunks=0), xarray_hcs.HcsValueError),
        (lambda: xr.open_datatree(p, engine="ome-hcs", tables="no"), xarray_hcs.HcsTypeError),
        (lambda: xr.open_datatree(p, engine="ome-hcs", consolidated="x"),
         xarray_hcs.HcsTypeError),
        (lambda: xr.open_datatree(p, engine="ome-hcs", labels=5), xarray_hcs.HcsTypeError),
        (lambda: xr.open_datatree(p, engine="ome-hcs", labels=[]), xarray_hcs.HcsValueError),
        (lambda: xr.open_datatree(p, engine="ome-hcs", levels=[]), xarray_hcs.HcsValueError),
        (lambda: xr.open_datatree(p, engine="ome-hcs", labels=["cells"]),
         xarray_hcs.HcsSelectionError),
        (lambda: xr.open_datatree(p, engine="ome-hcs", acquisition=99),
         xarray_hcs.HcsSelectionError),
        (lambda: dt.hcs.sel(acquisition=99), xarray_hcs.HcsSelectionError),
        (lambda: dt.hcs.sel(levels=[]), xarray_hcs.HcsValueError),
    ]
    for call, kind in cases:
        with pytest.raises(kind):
            call()
    # a label selection lists what it keeps
    only = xr.open_datatree(p, engine="ome-hcs", labels=["nuclei"])
    assert only[f"{fp}/labels"].attrs["ome"]["labels"] == ["nuclei"]


def test_a_csv_table_naming_a_column_twice_is_refused(tmp_path, plate_v05):
    import pandas as pd

    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    fp = dt.hcs.field_paths[0]
    dt = dt.hcs.add_table(fp, "t", pd.DataFrame({"area": [1.0]}, index=pd.Index(
        [1], name="label")), kind="feature_table", backend="csv")
    out = tmp_path / "w.zarr"
    dt.hcs.to_zarr(out)
    (out / fp / "tables/t/table.csv").write_text("label,area,area\n1,1.0,5.0\n")
    with pytest.raises(xarray_hcs.HcsTableError, match="names column 'area' twice"):
        xr.open_datatree(out, engine="ome-hcs").hcs.table(fp, "t")


def test_a_plate_replaced_by_a_link_in_the_same_process_reads_the_new_one(tmp_path):
    import shutil

    p = _plate(tmp_path, "0.5")
    first = float(xr.open_datatree(p, engine="ome-hcs")["A/01/0/0"]["image"].sum())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = write_sample_plate(elsewhere / "q.zarr", TINY)
    import zarr

    zarr.open_array(other / "A/01/0/0", mode="r+")[...] = 3
    shutil.rmtree(p)
    p.symlink_to(other)  # the plate itself a link now: fine
    got = xr.open_datatree(p, engine="ome-hcs")["A/01/0/0"]["image"]
    assert float(got.sum()) == 3 * got.size != first


def test_a_grid_aligns_with_a_slice_of_itself(plate_v05):
    img = xr.open_datatree(plate_v05, engine="ome-hcs").hcs.image("A/01/0")
    part = img.sel(x=slice(float(img.x[3]), float(img.x[8])))
    diff = img - part  # inner join on x
    np.testing.assert_array_equal(diff.x.values, img.x.values[3:9])
    assert int(abs(diff).max()) == 0
    outer = (img + part.astype("f8") * 0).sizes["x"]
    assert outer == part.sizes["x"]


def test_a_field_whose_data_cannot_be_deleted_says_it_is_unlisted_and_where(tmp_path):
    """remove_image unlists first, then deletes: if the file system refuses the deletion,
    the error says so and names the folder left to delete (not a bare '0')."""
    p = _plate(tmp_path, "0.5", columns=1, fields=2)
    chunkdir = p / "A/01/1/0/c/0/0/0"
    out = _unprivileged(f"xarray_hcs.remove_image({str(p)!r}, 'A', 1, '1')\nprint('REMOVED')",
                        [chunkdir])
    assert out.startswith("HcsWriteError") and "no longer listed" in out, out
    assert str(p / "A/01/1") in out
    assert xr.open_datatree(p, engine="ome-hcs").hcs.field_paths == ["A/01/0"]


def test_mode_w_refuses_what_it_would_only_half_clear_or_break(tmp_path, plate_v05,
                                                               monkeypatch):
    """A fourth round: each of these lost or broke a plate. Refused now, nothing deleted."""
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "p.zarr"
    dt.hcs.to_zarr(p)

    def listing() -> list[str]:
        return sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*"))

    before = listing()
    # "missing/../p.zarr" is p.zarr, however the file system would see it
    with pytest.raises(HcsExistsError, match="already holds data"):
        xarray_hcs.create_plate("missing/../p.zarr", ["A/01"], _IMG)
    # local:// is the local file system (it was cleared, then failed)
    with pytest.raises(HcsExistsError):
        dt.hcs.to_zarr(f"local://{tmp_path}", mode="w")
    # a plate inside another zarr store (a well of a plate) would break it
    with pytest.raises(HcsExistsError, match="lies inside the zarr store"):
        dt.hcs.to_zarr(p / "A" / "01", mode="w")
    assert listing() == before
    # a user's file beside the rows, or a link anywhere in it: refused before any deletion
    (p / "README.txt").write_text("mine")
    with pytest.raises(HcsExistsError, match="README.txt"):
        dt.hcs.to_zarr(p, mode="w")
    (p / "README.txt").unlink()
    (p / "A" / "link").symlink_to(tmp_path)
    with pytest.raises(HcsExistsError, match="symbolic link") as e:
        dt.hcs.to_zarr(p, mode="w")
    assert len(str(e.value)) < 400  # names the store, not the tree
    (p / "A" / "link").unlink()
    assert listing() == before
    assert xr.open_datatree(p, engine="ome-hcs").hcs.field_paths == dt.hcs.field_paths
    dt.hcs.to_zarr(f"local://{p}", mode="w")  # and a plate of its own is replaced
    xr.testing.assert_identical(xr.open_datatree(p, engine="ome-hcs"), dt)
