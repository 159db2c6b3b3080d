#!/usr/bin/env python
"""Write tiny OME-Zarr HCS test plates with each *peer* library's own writer.

Usage (in the peers venv, see README.md / requirements-peers.txt)::

    python make_peer_plates.py [OUTDIR]

OUTDIR defaults to the directory holding this script.  The script is
deterministic (pixel values are arange-based, no randomness) and re-runnable:
it deletes every output it owns (``<writer>-<ver>/`` and ``manifest.json``)
before rewriting it.  It never touches any other file in OUTDIR.

Every plate: rows A,B x columns 1,2 (in the writer's natural naming), but only
3 wells present (A/1, A/2, B/1); 2 fields per well; 2 channels "DAPI","GFP";
z=1, y=x=32, uint16; 2 pyramid levels (2x in y/x); pixel size 0.5 um in y/x;
a "nuclei" uint32 label image on field A/1/0 where the writer can; ngio adds a feature table
on every field.

A manifest.json describing each plate is generated afterwards by reading the
written metadata back with plain ``json``/``zipfile`` (never hand-typed).
"""

from __future__ import annotations

import importlib.metadata as im
import json
import logging
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np

ROWS = ["A", "B"]
COLS = ["1", "2"]
WELLS = [("A", "1"), ("A", "2"), ("B", "1")]  # B/2 deliberately absent
N_FIELDS = 2
CHANNELS = ["DAPI", "GFP"]
NZ, NY, NX = 1, 32, 32
PIXEL_YX = 0.5
CHUNK_YX = 32  # one chunk per (level, array): keeps the file count low
CHUNK_C = 2

warnings.filterwarnings("ignore")


# --------------------------------------------------------------------------
# deterministic data
# --------------------------------------------------------------------------
def field_index(row: str, col: str, field: int) -> int:
    return WELLS.index((row, col)) * N_FIELDS + field


def make_image(row: str, col: str, field: int) -> np.ndarray:
    """(c, z, y, x) uint16; value = 1000*k + 100*c + 10*z + ((y*32+x) % 100)."""
    k = field_index(row, col, field)
    c, z, y, x = np.meshgrid(
        np.arange(len(CHANNELS)),
        np.arange(NZ),
        np.arange(NY),
        np.arange(NX),
        indexing="ij",
    )
    img = 1000 * (k + 1) + 100 * c + 10 * z + ((y * NX + x) % 100)
    return img.astype(np.uint16)


def make_label() -> np.ndarray:
    """(z, y, x) uint32: four 8x8 squares labelled 1..4 (aligned to 2x2 blocks)."""
    lab = np.zeros((NZ, NY, NX), dtype=np.uint32)
    lab[:, 2:10, 2:10] = 1
    lab[:, 2:10, 18:26] = 2
    lab[:, 18:26, 2:10] = 3
    lab[:, 18:26, 18:26] = 4
    return lab


def make_feature_df():
    import pandas as pd

    lab = make_label()
    ids = np.arange(1, 5)
    return pd.DataFrame(
        {
            "label": ids.astype(np.int64),
            "area": np.array([(lab == i).sum() for i in ids], dtype=np.float64),
            "mean_intensity": np.array([100.5, 200.5, 300.5, 400.5]),
            "is_border": np.array([False, False, False, True]),
        }
    )


def label_field(row: str, col: str, field: int) -> bool:
    """The "nuclei" label goes on field 0 of well A/1 only (keeps file count low,
    and gives a mix of labelled and unlabelled fields)."""
    return (row, col, field) == ("A", "1", 0)


def normalize_zip_timestamps(path: Path) -> None:
    """Set every DOS mod-time/date field of a zip to 1980-01-01 00:00, in place.

    Only those 4 bytes per local header / central-directory record change, so
    entry order, duplicates, comment, compression and offsets stay exactly as
    the writer made them, but re-runs become byte-identical.
    """
    data = bytearray(path.read_bytes())
    stamp = (0).to_bytes(2, "little") + ((1 << 5) | 1).to_bytes(2, "little")
    with zipfile.ZipFile(path) as z:
        infos, pos = z.infolist(), z.start_dir
    for info in infos:
        off = info.header_offset
        assert data[off : off + 4] == b"PK\x03\x04"
        data[off + 10 : off + 14] = stamp
        assert data[pos : pos + 4] == b"PK\x01\x02"
        data[pos + 12 : pos + 16] = stamp
        n, m, k = (int.from_bytes(data[pos + o : pos + o + 2], "little") for o in (28, 30, 32))
        pos += 46 + n + m + k
    path.write_bytes(bytes(data))


def rm(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


# --------------------------------------------------------------------------
# ngio
# --------------------------------------------------------------------------
def write_ngio(path: Path, ngff_version: str, table_backend: str) -> dict:
    import ngio
    from ngio import ImageInWellPath, create_empty_plate, create_ome_zarr_from_array
    from ngio.tables import FeatureTable

    images = [
        ImageInWellPath(row=r, column=c, path=str(f))
        for r, c in WELLS
        for f in range(N_FIELDS)
    ]
    plate = create_empty_plate(
        store=str(path),
        name="ngio-test-plate",
        images=images,
        ngff_version=ngff_version,
        overwrite=True,
    )
    # make the 2x2 layout explicit even though B/2 has no well
    for c in COLS:
        plate.add_column(c)
    for r in ROWS:
        plate.add_row(r)
    for r, c in WELLS:
        for f in range(N_FIELDS):
            store = plate.get_image_store(row=r, column=c, image_path=str(f))
            cont = create_ome_zarr_from_array(
                store=store,
                array=make_image(r, c, f),
                pixelsize=PIXEL_YX,
                z_spacing=1.0,
                levels=2,
                axes_names=["c", "z", "y", "x"],
                channels_meta=CHANNELS,
                name=f"{r}{c}_f{f}",
                ngff_version=ngff_version,
                chunks=(CHUNK_C, 1, CHUNK_YX, CHUNK_YX),
                overwrite=True,
            )
            if label_field(r, c, f):
                lbl = cont.derive_label("nuclei", dtype="uint32", overwrite=True)
                lbl.set_array(make_label())
                lbl.consolidate()
                table = FeatureTable(make_feature_df(), reference_label="nuclei")
            else:
                table = FeatureTable(make_feature_df())
            cont.add_table("features", table, backend=table_backend, overwrite=True)
    return {"writer": "ngio", "writer_version": ngio.__version__,
            "extra": {"table_backend": table_backend}}


# --------------------------------------------------------------------------
# ngff-zarr
# --------------------------------------------------------------------------
def write_ngff_zarr(path: Path, ngff_version: str) -> dict:
    import ngff_zarr as nz

    plate_meta = nz.Plate(
        columns=[nz.PlateColumn(name=c) for c in COLS],
        rows=[nz.PlateRow(name=r) for r in ROWS],
        wells=[
            nz.PlateWell(path=f"{r}/{c}", rowIndex=ROWS.index(r), columnIndex=COLS.index(c))
            for r, c in WELLS
        ],
        name="ngff-zarr-test-plate",
        field_count=N_FIELDS,
        acquisitions=[nz.PlateAcquisition(id=0, name="acq0")],
        version=ngff_version,
    )
    with nz.HCSPlateWriter(str(path), plate_meta, version=ngff_version) as writer:
        for r, c in WELLS:
            for f in range(N_FIELDS):
                img = nz.to_ngff_image(
                    make_image(r, c, f),
                    dims=["c", "z", "y", "x"],
                    scale={"z": 1.0, "y": PIXEL_YX, "x": PIXEL_YX},
                    axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
                    channel_names=CHANNELS,
                )  # default name "image" -> level paths "scale0/image", ...
                ms = nz.to_multiscales(
                    img,
                    scale_factors=[{"z": 1, "y": 2, "x": 2}],
                    chunks={"c": CHUNK_C, "z": 1, "y": CHUNK_YX, "x": CHUNK_YX},
                    method=nz.Methods.ITKWASM_BIN_SHRINK,
                )
                # ngff-zarr writes no "omero" block unless it is set explicitly
                ms.metadata.omero = nz.compute_omero_from_ngff_image(img)
                writer.write_well_image(ms, row_name=r, column_name=c, field_index=f)
    return {"writer": "ngff-zarr", "writer_version": nz.__version__}


# --------------------------------------------------------------------------
# ome-zarr-py
# --------------------------------------------------------------------------
def write_ome_zarr(path: Path, ngff_version: str) -> dict:
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr_models.common.omero import Omero
    from ome_zarr.writer import (
        write_image,
        write_labels,
        write_plate_metadata,
        write_well_metadata,
    )

    fmt = FormatV04() if ngff_version == "0.4" else FormatV05()
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    write_plate_metadata(
        root,
        ROWS,
        COLS,
        [f"{r}/{c}" for r, c in WELLS],
        fmt=fmt,
        name="ome-zarr-test-plate",
        field_count=N_FIELDS,
    )
    scale = {"c": 1.0, "z": 1.0, "y": PIXEL_YX, "x": PIXEL_YX}
    units = {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
    for r, c in WELLS:
        row_group = root.require_group(r)
        well_group = row_group.require_group(c)
        write_well_metadata(well_group, [str(f) for f in range(N_FIELDS)], fmt=fmt)
        for f in range(N_FIELDS):
            field_group = well_group.require_group(str(f))
            write_image(
                make_image(r, c, f),
                field_group,
                scale_factors=[2],
                fmt=fmt,
                axes=["c", "z", "y", "x"],
                scale=scale,
                axes_units=units,
                storage_options={"chunks": (CHUNK_C, 1, CHUNK_YX, CHUNK_YX)},
                name=f"{r}{c}_f{f}",
                # ome-zarr 0.21 documents a plain dict here but its setter only
                # accepts an ome_zarr_models Omero instance.
                omero=Omero.model_validate(
                    {
                        "channels": [
                            {"label": ch, "color": col, "active": True,
                             "window": {"min": 0, "max": 65535, "start": 0, "end": 8000}}
                            for ch, col in zip(CHANNELS, ["0000FF", "00FF00"])
                        ]
                    }
                ),
            )
            if label_field(r, c, f):
                write_labels(
                    make_label(),
                    field_group,
                    name="nuclei",
                    scale_factors=[2],
                    fmt=fmt,
                    axes=["z", "y", "x"],
                    scale={"z": 1.0, "y": PIXEL_YX, "x": PIXEL_YX},
                    axes_units=units,
                    storage_options={"chunks": (1, CHUNK_YX, CHUNK_YX)},
                )
    return {"writer": "ome-zarr", "writer_version": im.version("ome-zarr")}


# --------------------------------------------------------------------------
# iohub
# --------------------------------------------------------------------------
def write_iohub(path: Path, ngff_version: str) -> dict:
    import iohub
    from iohub.ngff import TransformationMeta, open_ome_zarr

    logging.getLogger("iohub.ngff.nodes").setLevel(logging.ERROR)  # creation-time noise

    with open_ome_zarr(
        str(path), layout="hcs", mode="w", channel_names=CHANNELS, version=ngff_version
    ) as plate:
        for r, c in WELLS:
            for f in range(N_FIELDS):
                pos = plate.create_position(
                    r, c, str(f), row_index=ROWS.index(r), col_index=COLS.index(c)
                )
                data = make_image(r, c, f)[None]  # iohub is always TCZYX
                pos.create_image(
                    "0",
                    data,
                    chunks=(1, CHUNK_C, 1, CHUNK_YX, CHUNK_YX),
                    transform=[
                        TransformationMeta(
                            type="scale", scale=[1.0, 1.0, 1.0, PIXEL_YX, PIXEL_YX]
                        )
                    ],
                )
                pos.compute_pyramid(levels=2, method="mean", dims={"y", "x"})
                if label_field(r, c, f):
                    lab = make_label()[None]  # TZYX
                    pl = pos.create_label(
                        "nuclei", lab, chunks=(1, 1, CHUNK_YX, CHUNK_YX), pyramid_levels=2
                    )
                    # iohub only allocates (zeros) the label pyramid levels; fill
                    # level 1 via iohub's array handle with a nearest downsample.
                    lvl1 = pl["1"]
                    lvl1[...] = lab[..., : lvl1.shape[-3], ::2, ::2]
    return {"writer": "iohub", "writer_version": iohub.__version__}


# --------------------------------------------------------------------------
# manifest: read back what was written, with plain json / zipfile
# --------------------------------------------------------------------------
class Tree:
    """Read zarr metadata documents from a directory store or an .ozx zip."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        if self.zip is not None:
            self.names = set(self.zip.namelist())

    def read(self, key: str):
        if self.zip is not None:
            if key not in self.names:
                return None
            return json.loads(self.zip.read(key))
        p = self.path / key
        return json.loads(p.read_text()) if p.exists() else None

    def count_files(self) -> int:
        if self.zip is not None:
            return len([n for n in self.names if not n.endswith("/")])
        return sum(1 for p in self.path.rglob("*") if p.is_file())

    def node(self, rel: str):
        """Return (zarr_format, node_type, attrs, array_meta) for a node."""
        pre = f"{rel}/" if rel else ""
        z3 = self.read(pre + "zarr.json")
        if z3 is not None:
            return 3, z3.get("node_type"), z3.get("attributes", {}), z3
        zarray = self.read(pre + ".zarray")
        attrs = self.read(pre + ".zattrs") or {}
        if zarray is not None:
            return 2, "array", attrs, zarray
        if self.read(pre + ".zgroup") is not None:
            return 2, "group", attrs, None
        return None, None, {}, None

    def ome(self, rel: str) -> dict:
        fmt, _, attrs, _ = self.node(rel)
        return attrs.get("ome", attrs) if fmt == 3 else attrs


def describe(root: Path, plate_path: Path, info: dict, ngff_version: str) -> dict:
    t = Tree(plate_path)
    zfmt, ntype, _, _ = t.node("")
    pm = t.ome("")["plate"]
    wells = [w["path"] for w in pm["wells"]]
    fields = {}
    for w in wells:
        fields[w] = [img["path"] for img in t.ome(w)["well"]["images"]]
    w0 = wells[0]
    f0 = f"{w0}/{fields[w0][0]}"
    ms = t.ome(f0)["multiscales"][0]
    levels = [d["path"] for d in ms["datasets"]]
    _, _, _, arr0 = t.node(f"{f0}/{levels[0]}")
    if zfmt == 3:
        shape0, dtype0 = arr0["shape"], arr0["data_type"]
    else:
        shape0, dtype0 = arr0["shape"], np.dtype(arr0["dtype"]).name
    omero = t.ome(f0).get("omero", {})
    labels, tables, labels_where = {}, {}, {}
    for w in wells:
        for f in fields[w]:
            fp = f"{w}/{f}"
            lg = t.ome(f"{fp}/labels")
            if lg.get("labels"):
                labels[fp] = lg["labels"]
                labels_where[fp] = "labels group"
            else:
                # iohub lists labels in the *image* group: {"labels": {"labels": [...]}}
                il = t.ome(fp).get("labels")
                if isinstance(il, dict) and il.get("labels"):
                    labels[fp] = il["labels"]
                    labels_where[fp] = "image group attrs 'labels.labels'"
            tg = t.node(f"{fp}/tables")[2]
            tnames = tg.get("tables") or tg.get("ome", {}).get("tables")
            if tnames:
                tables[fp] = tnames
    label_levels = {}
    for fp, names in labels.items():
        for n in names:
            lms = t.ome(f"{fp}/labels/{n}").get("multiscales", [{}])[0]
            label_levels[f"{fp}/labels/{n}"] = [d["path"] for d in lms.get("datasets", [])]
    out = {
        "path": plate_path.relative_to(root).as_posix(),
        "writer": info["writer"],
        "writer_version": info["writer_version"],
        "ngff_version": ngff_version,
        "zarr_format": zfmt,
        "container": "ozx" if t.zip is not None else "directory",
        "plate_version_attr": pm.get("version"),
        "rows": [r["name"] for r in pm["rows"]],
        "columns": [c["name"] for c in pm["columns"]],
        "wells": wells,
        "fields": fields,
        "first_field": f0,
        "level_paths": levels,
        "level_coordinate_transformations": [
            d.get("coordinateTransformations") for d in ms["datasets"]
        ],
        "label_level_paths": label_levels,
        "axes": [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])],
        "channel_labels": [ch.get("label") for ch in omero.get("channels", [])],
        "level0_shape": shape0,
        "level0_dtype": dtype0,
        "labels": labels,
        "label_names": sorted({n for v in labels.values() for n in v}),
        "labels_listed_in": sorted(set(labels_where.values())),
        "tables": tables,
        "table_names": sorted({n for v in tables.values() for n in v}),
        "n_files": t.count_files(),
    }
    if t.zip is not None:
        out["zip_comment"] = t.zip.comment.decode("utf-8", "replace")
        names = t.zip.namelist()
        out["zip_first_entry"] = names[0]
        out["zip_entries"] = len(names)
        out["zip_duplicate_names"] = sorted({n for n in names if names.count(n) > 1})
        out["zip_compress_types"] = sorted({i.compress_type for i in t.zip.infolist()})
    out.update(info.get("extra", {}))
    return out


def verify(plate_path: Path, desc: dict) -> None:
    """Read level 0 of every field (and every label) back with zarr and compare."""
    import zarr

    store = (
        zarr.storage.ZipStore(str(plate_path), mode="r")
        if plate_path.is_file()
        else str(plate_path)
    )
    root = zarr.open_group(store, mode="r")
    lvl0 = desc["level_paths"][0]
    for w, flist in desc["fields"].items():
        r, c = w.split("/")
        c = COLS[int(c) - 1]  # "01" -> "1"
        for f in flist:
            got = np.asarray(root[f"{w}/{f}/{lvl0}"][...])
            exp = make_image(r, c, int(f)).reshape(got.shape)
            if not np.array_equal(got, exp):
                raise AssertionError(f"{plate_path}: pixel mismatch in {w}/{f}")
    for key, lpaths in desc["label_level_paths"].items():
        got = np.asarray(root[f"{key}/{lpaths[0]}"][...])
        if not np.array_equal(got, make_label().reshape(got.shape)):
            raise AssertionError(f"{plate_path}: label mismatch in {key}")


# --------------------------------------------------------------------------
def main(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = [
        # (dir, ngff_version, filename, writer-call)
        ("ngio-0.4", "0.4", "plate.zarr", lambda p: write_ngio(p, "0.4", "anndata")),
        ("ngio-0.5", "0.5", "plate.zarr", lambda p: write_ngio(p, "0.5", "parquet")),
        ("ngff-zarr-0.4", "0.4", "plate.zarr", lambda p: write_ngff_zarr(p, "0.4")),
        ("ngff-zarr-0.5", "0.5", "plate.zarr", lambda p: write_ngff_zarr(p, "0.5")),
        ("ngff-zarr-0.5", "0.5", "plate.ozx", lambda p: write_ngff_zarr(p, "0.5")),
        ("ome-zarr-0.4", "0.4", "plate.zarr", lambda p: write_ome_zarr(p, "0.4")),
        ("ome-zarr-0.5", "0.5", "plate.zarr", lambda p: write_ome_zarr(p, "0.5")),
        ("iohub-0.4", "0.4", "plate.zarr", lambda p: write_iohub(p, "0.4")),
        # iohub also zips a 0.4 (zarr v2) plate; RFC-9 itself only covers zarr v3
        ("iohub-0.4", "0.4", "plate.ozx", lambda p: write_iohub(p, "0.4")),
        ("iohub-0.5", "0.5", "plate.zarr", lambda p: write_iohub(p, "0.5")),
        ("iohub-0.5", "0.5", "plate.ozx", lambda p: write_iohub(p, "0.5")),
    ]
    for d in {j[0] for j in jobs}:
        rm(outdir / d)
    rm(outdir / "manifest.json")

    manifest = {"generator": "make_peer_plates.py",
                "python": sys.version.split()[0], "plates": []}
    for d, ver, fname, fn in jobs:
        target = outdir / d / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {target.relative_to(outdir)}", flush=True)
        info = fn(target)
        if target.suffix == ".ozx":
            normalize_zip_timestamps(target)
        desc = describe(outdir, target, info, ver)
        verify(target, desc)
        manifest["plates"].append(desc)
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest['plates'])} plates + manifest.json to {outdir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
