"""The fuzzer of hostile plates: seeded mutations of tiny plates, run in a limited process.

Each case copies a tiny plate (OME-NGFF 0.4 or 0.5, with a label image and tables in three
backends), damages it in one way, and runs what a user does with a plate: open, summary, a
pixel slice of some fields, the stacked view, every table concatenated, ``to_zarr`` and a
reopen. The only outcomes allowed are success with the right values or an error of the
``HcsError`` family; anything else (another exception, a value that is not the stored one, a
hang, memory past the limit) is a finding.

- Document damage: one value of one metadata document (of any node: plate, well, field,
  level array, label, table, AnnData element) deleted, retyped, replaced by a hostile value
  (negative, huge, NaN, ``..``, deep nesting...), or the whole document truncated, made
  garbage, a directory, a FIFO or a link to ``/dev/zero``.
- Chunk damage: a chunk file truncated, garbage, emptied, a byte flipped, replaced by a
  decompression bomb, a directory, a FIFO or a link to ``/dev/zero``.
- Sometimes the damaged plate is zipped into an ``.ozx`` (deflated members, a deflate bomb).

"The right values": a pixel slice must equal what zarr-python reads from the same damaged
array (where zarr-python reads it), else what the undamaged plate holds; the stacked view
must agree with the per-field reads; the written copy must read back the same.

    python tests/_fuzz.py worker        # the worker: cases from stdin, results to stdout
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import struct
import sys
import traceback
import zipfile
from pathlib import Path
from typing import Any

#: the worker's address-space limit: far above what a tiny plate needs (~1.2 GiB), far below
#: what a decompression bomb or an unbounded allocation would take
MEMORY_LIMIT = 3 * 2**30
#: a case may take this long (seconds) before it counts as a hang
TIME_LIMIT = 60
#: to_zarr is tried only for trees whose arrays claim at most this many bytes in all: a
#: plate may legitimately claim a large (sparse) array, and copying it is work, not a fault
WRITE_LIMIT = 256 * 2**20

HOSTILE = [None, True, False, -1, 0, 1, 2, -(2**63), 2**63, 10**12, 1.5, -0.5,
           float("nan"), float("inf"), "", "..", "../..", "../../../etc", "/abs", "a/../b",
           "x" * 300, "\x00", "NaN", "Infinity", "0x7fc00000", "c", "zstd", "<u8", "|O",
           [], [1, 2, 3], [-1], [0], [10**12], {}, {"id": "zstd"}, {"name": "bytes"},
           {"a": {"b": {}}}]


# ----------------------------------------------------------------------------- plates


def base_plate(root: Path, version: str) -> Path:
    """A tiny plate with a label image and tables (parquet, AnnData, csv, plate-level json)."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    from xarray_hcs.sample import SamplePlate, write_sample_plate

    tmp = root / f"src-{version}.zarr"
    write_sample_plate(tmp, SamplePlate(rows=1, columns=2, fields=1, levels=2, labels=True,
                                        version=version, shape_zyx=(1, 16, 16), chunk_yx=8,
                                        column_width=2 if version == "0.5" else 0))
    dt = xr.open_datatree(tmp, engine="ome-hcs")
    feats = pd.DataFrame({"area": [1.5, 2.5], "n": np.array([3, 4]),
                          "kind": ["a", "b"]}, index=pd.Index([1, 2], name="label"))
    fps = dt.hcs.field_paths
    dt = dt.hcs.add_table(fps[0], "cells", feats, backend="parquet")
    dt = dt.hcs.add_table(fps[1], "cells", feats * 1 if False else feats, backend="anndata")
    dt = dt.hcs.add_table(fps[1], "more", feats[["area"]], backend="csv")
    dt = dt.hcs.add_table("", "conditions", pd.DataFrame({"drug": ["x", "y"]}), backend="json")
    out = root / f"base-{version}.zarr"
    dt.hcs.to_zarr(out)
    shutil.rmtree(tmp)
    return out


def _documents(plate: Path) -> list[Path]:
    return sorted(p for p in plate.rglob("*") if p.is_file() and p.name in (
        "zarr.json", ".zattrs", ".zarray", ".zgroup"))


def _chunks(plate: Path) -> list[Path]:
    return sorted(p for p in plate.rglob("*") if p.is_file() and p.name not in (
        "zarr.json", ".zattrs", ".zarray", ".zgroup") and p.suffix not in (
        ".parquet", ".csv"))


# ----------------------------------------------------------------------------- damage


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document (the root included)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def zstd_bomb(size: int) -> bytes:
    """A valid zstd frame of ``size`` zero bytes in RLE blocks (a few KB on disk)."""
    out = bytearray(b"\x28\xb5\x2f\xfd\xe0") + struct.pack("<Q", size)
    n = size
    while n > 0:
        b = min(131072, n)
        n -= b
        out += struct.pack("<I", (1 if n == 0 else 0) | (1 << 1) | (b << 3))[:3] + b"\x00"
    return bytes(out)


def _special(path: Path, rng: random.Random) -> str:
    kind = rng.choice(["dir", "fifo", "devzero"])
    path.unlink()
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return kind


def damage_document(path: Path, rng: random.Random) -> str:
    if path.is_symlink() or not path.is_file():  # a second damage of one made special
        return "already special"
    raw = path.read_bytes()
    try:
        json.loads(raw)
    except ValueError:  # a second damage of one already made no JSON: cut it further
        path.write_bytes(raw[: rng.randrange(max(1, len(raw)))])
        return "truncate (again)"
    if rng.random() < 0.12:  # the whole document
        kind = rng.choice(["truncate", "garbage", "empty", "deep", "special", "not-object"])
        if kind == "truncate":
            path.write_bytes(raw[: rng.randrange(max(1, len(raw)))])
        elif kind == "garbage":
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "deep":
            path.write_text('{"attributes": ' + "[" * 20_000 + "]" * 20_000 + "}"
                            if rng.random() < 0.5 else "[" * 100_000 + "]" * 100_000)
        elif kind == "not-object":
            path.write_text(json.dumps(rng.choice([[], 5, "x", None])))
        else:
            kind = _special(path, rng)
        return f"document {kind}"
    doc = json.loads(raw)
    places = _paths(doc)[1:] or [()]
    where = rng.choice(places)
    op = rng.choice(["delete", "hostile", "hostile", "hostile", "swap", "list", "rename"])
    parent = _get(doc, where[:-1]) if where else None
    key = where[-1] if where else None
    if op == "delete" and parent is not None:
        del parent[key]
    elif op == "swap" and parent is not None:
        parent[key] = json.loads(json.dumps(_get(doc, rng.choice(places)), allow_nan=True))
    elif op == "list" and isinstance(_get(doc, where), list) and _get(doc, where):
        lst = _get(doc, where)
        rng.choice([lst.reverse, lambda: lst.append(lst[0]), lst.pop])()
    elif op == "rename" and isinstance(parent, dict):
        parent[rng.choice(["", "x", key + "_"])] = parent.pop(key)
    elif parent is not None:
        value = rng.choice(HOSTILE)
        parent[key] = "__DEEP__" if value == [] and rng.random() < 0.1 else value
    else:
        op = "noop"
    # nesting deeper than Python's JSON encoder goes, written as text
    path.write_text(json.dumps(doc, allow_nan=True).replace(
        '"__DEEP__"', "[" * 20_000 + "]" * 20_000))
    return f"{op} {'/'.join(map(str, where))}"


def damage_chunk(path: Path, rng: random.Random) -> str:
    if path.is_symlink() or not path.is_file():  # a second damage of one made special
        return "already special"
    raw = path.read_bytes()
    kind = rng.choice(["truncate", "garbage", "empty", "flip", "flip", "bomb", "gzbomb",
                       "special"])
    if kind == "truncate":
        path.write_bytes(raw[: rng.randrange(max(1, len(raw)))])
    elif kind == "garbage":
        path.write_bytes(os.urandom(rng.randrange(1, 600)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "flip" and raw:
        b = bytearray(raw)
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(b))
    elif kind == "bomb":
        path.write_bytes(zstd_bomb(rng.choice([2**20, 2**31, 4 * 2**30])))
    elif kind == "gzbomb":
        import zlib

        path.write_bytes(zlib.compress(bytes(rng.choice([2**20, 2**28])), 9))
    else:
        kind = _special(path, rng)
    return f"chunk {kind}"


def _zip(plate: Path, rng: random.Random) -> Path:
    """The plate as an .ozx (deflated; sometimes with a deflate bomb as one member)."""
    out = plate.with_suffix(".ozx")
    bomb = rng.random() < 0.2
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(plate.rglob("*")):
            if p.is_symlink() or not p.is_file():
                continue  # special files cannot be zipped
            name = str(p.relative_to(plate))
            if bomb and p in _chunks(plate)[:1]:
                zf.writestr(name, bytes(3 * 2**30 // 8))  # inflates to 384 MiB
                bomb = False
            else:
                zf.write(p, name)
    return out


def make_case(bases: dict[str, Path], work: Path, seed: int) -> tuple[Path, str, str]:
    """The damaged plate of case ``seed`` (a copy), what was done, and its base."""
    rng = random.Random(seed)
    version = rng.choice(sorted(bases))
    plate = work / f"case-{seed}.zarr"
    shutil.copytree(bases[version], plate, symlinks=True)
    what = []
    for _ in range(1 if rng.random() < 0.8 else 2):
        if rng.random() < 0.7:
            doc = rng.choice(_documents(plate))
            what.append(f"{doc.relative_to(plate)}: {damage_document(doc, rng)}")
        else:
            chunk = rng.choice(_chunks(plate))
            what.append(f"{chunk.relative_to(plate)}: {damage_chunk(chunk, rng)}")
    if rng.random() < 0.1:
        zipped = _zip(plate, rng)
        what.append("zipped")
        return zipped, "; ".join(what), version
    return plate, "; ".join(what), version


def cleanup(path: Path) -> None:
    """Remove a case, whatever it became (FIFOs, links, unreadable files)."""
    if path.is_file() or path.is_symlink():
        path.unlink()
        return
    for p in path.rglob("*"):
        if not p.is_symlink() and p.exists():
            os.chmod(p, stat.S_IRWXU)
    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- the worker


class Finding(Exception):
    """A case outcome that is neither the right value nor an HcsError."""


def _claimed_bytes(dt: Any) -> int:
    n = 0
    for node in dt.subtree:
        for v in node.data_vars.values():
            n += v.size * v.dtype.itemsize
    return n


def _slices(var: Any) -> tuple[Any, ...]:
    """The first plane's corner (an empty axis, valid zarr, is taken whole)."""
    return tuple((0 if n else slice(None)) if i < var.ndim - 2 else slice(0, 3)
                 for i, n in enumerate(var.shape))


def _zarr_read(plate: Path, enc: dict[str, Any], key: tuple[Any, ...]) -> Any:
    """What zarr-python reads from the same array (None where it cannot)."""
    import numpy as np
    import zarr

    try:
        if str(plate).endswith(".ozx"):
            from zarr.storage import ZipStore

            store: Any = ZipStore(plate, mode="r", read_only=True)
        else:
            store = str(plate)
        arr = zarr.open_array(store, path=enc["zarr_path"], mode="r")
        return np.asarray(arr[key])
    except Exception:  # noqa: BLE001  zarr refusing it is an answer: then the base decides
        return None


def run_case(plate: Path, base: Path, originals: dict[str, Any]) -> str:
    """Run the user's steps on ``plate``; "ok ..." or "hcs <step>: <error>"; raises
    :class:`Finding` for anything else."""
    import warnings

    import numpy as np
    import xarray as xr

    import xarray_hcs

    step = "open"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dt = xr.open_datatree(plate, engine="ome-hcs")
            step = "summary"
            dt.hcs.summary()
            step = "pixels"
            read: dict[str, Any] = {}
            for fp in dt.hcs.field_paths[:2]:
                level = dt[fp].attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
                var = dt[f"{fp}/{level}"]["image"]
                key = _slices(var)
                got = np.asarray(var[key].values)
                read[fp] = got
                ref = _zarr_read(plate, var.encoding, key)
                if ref is None:
                    ref = originals.get((fp, level, var.shape, str(var.dtype)))
                if ref is not None and not np.array_equal(got, ref, equal_nan=True):
                    raise Finding(f"{fp}/{level}: read {got.ravel()[:6]}, stored "
                                  f"{np.asarray(ref).ravel()[:6]}")
            step = "stack"
            if dt.hcs.field_paths:
                st = dt.hcs.stack(0, pad=True, channels="union")
                block = st.isel(well=0, field=0)
                block.isel({d: slice(0, 3) for d in block.dims[-2:]}).values  # noqa: B018
            step = "tables"
            for name in dt.hcs.list_tables(mode="all"):
                dt.hcs.concat_tables(name, strict=False)
            for name in dt.hcs.list_tables(path=""):
                dt.hcs.table("", name)
            step = "to_zarr"
            if _claimed_bytes(dt) <= WRITE_LIMIT:
                out = Path(str(plate) + ".out.zarr")
                dt.hcs.to_zarr(out)
                step = "reopen"
                back = xr.open_datatree(out, engine="ome-hcs")
                for fp, got in read.items():
                    level = back[fp].attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
                    var = back[f"{fp}/{level}"]["image"]
                    again = np.asarray(var[_slices(var)].values)
                    if not np.array_equal(again, got, equal_nan=True):
                        raise Finding(f"written {fp} reads {again.ravel()[:6]}, was "
                                      f"{got.ravel()[:6]}")
                shutil.rmtree(out, ignore_errors=True)
    except xarray_hcs.HcsError as e:
        return f"hcs {step}: {type(e).__name__}"
    except Finding:
        raise
    except BaseException as e:  # noqa: BLE001  anything else is a finding
        raise Finding(f"{step}: {type(e).__name__}: {e}\n{traceback.format_exc()}") from None
    return "ok"


def _originals(base: Path) -> dict[Any, Any]:
    """The undamaged pixels the pixel step reads, by (field, level, shape, dtype)."""
    import numpy as np
    import xarray as xr

    dt = xr.open_datatree(base, engine="ome-hcs")
    out = {}
    for fp in dt.hcs.field_paths:
        level = dt[fp].attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
        var = dt[f"{fp}/{level}"]["image"]
        out[(fp, level, var.shape, str(var.dtype))] = np.asarray(var[_slices(var)].values)
    return out


def worker() -> None:
    """Read ``{"plate": ..., "base": ...}`` lines, answer ``{"outcome": ...}`` lines."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    originals: dict[str, Any] = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        base = job["base"]
        if base not in originals:
            originals[base] = _originals(Path(base))
        try:
            outcome = {"outcome": run_case(Path(job["plate"]), Path(base), originals[base])}
        except Finding as e:
            outcome = {"finding": str(e)}
        print(json.dumps(outcome), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["worker"]:
    worker()
