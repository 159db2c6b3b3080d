"""The ``xarray-hcs`` command line: ``demo``, ``info``, ``montage`` and ``heatmap``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import shutil

    if args.dir is None:  # a plate of its own, deleted at the end: the demo leaves nothing
        with tempfile.TemporaryDirectory(prefix="xarray-hcs-demo-") as tmp:
            code = _run_demo(Path(tmp) / "plate.zarr", keep=False)
        return code
    path = Path(args.dir)
    if path.suffix != ".zarr":
        path = path / "plate.zarr"
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists() and not parent.is_dir():
            print(f"xarray-hcs: error: {parent} is a file, not a folder: give a folder for "
                  "the demo's plate and pictures", file=sys.stderr)
            return 2
        if parent.exists():
            break
    if path.exists() or path.is_symlink():
        if not args.overwrite:
            print(f"xarray-hcs: error: {path} exists; pass --overwrite to replace it (or "
                  "choose another folder)", file=sys.stderr)
            return 2
        if not _is_plate(path):  # --overwrite replaces a plate, nothing else
            print(f"xarray-hcs: error: {path} is not an OME-Zarr plate: --overwrite replaces "
                  "only a plate (delete it yourself if it is no longer needed)",
                  file=sys.stderr)
            return 2
        shutil.rmtree(path)
    return _run_demo(path, keep=True)


def _is_plate(path: Path) -> bool:
    """Whether ``path`` is a folder (not a link to one) holding an OME-Zarr plate."""
    from .backend import looks_like_plate

    return path.is_dir() and not path.is_symlink() and looks_like_plate(path)


def _run_demo(path: Path, keep: bool) -> int:
    import xarray as xr

    from .sample import DEMO, write_sample_plate

    t0 = time.perf_counter()
    write_sample_plate(path, DEMO)
    t1 = time.perf_counter()
    print(f"wrote the sample plate to {path} in {t1 - t0:.1f} s\n")

    dt = xr.open_datatree(path, engine="ome-hcs")
    t2 = time.perf_counter()
    print(dt.hcs.summary())
    print(f"\nopened with xr.open_datatree(..., engine='ome-hcs') in {t2 - t1:.2f} s")

    # one mean per field and channel at level 0, every field a dask task
    means = dt.hcs.map_fields(lambda im: im.mean([d for d in im.dims if d != "c"]))
    t3 = time.perf_counter()
    per_well = means["image"].mean("field")
    rows, cols = dt.hcs.rows, dt.hcs.columns
    for ch in per_well["c"].values:
        grid = per_well.sel(c=ch)
        print(f"\nmean intensity per well, channel {ch}:")
        print("      " + " ".join(f"{c:>6}" for c in cols))
        for r in rows:
            line = [float(grid.sel(well=f"{r}/{c}")) if f"{r}/{c}" in grid["well"]
                    else float("nan") for c in cols]
            print(f"{r:>5} " + " ".join(f"{v:6.0f}" for v in line))
    print(f"\ncomputed {len(dt.hcs.field_paths)} field means with dask (map_fields) in "
          f"{t3 - t2:.2f} s")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("(install matplotlib, or xarray-hcs[plot], for the montage and heatmap pictures)")
        return 0
    out = path.parent
    first = str(per_well["c"].values[0])
    ax = dt.hcs.plot_montage(channel=first)
    ax.figure.savefig(out / "montage.png", dpi=110)
    ax = dt.hcs.plot_plate(per_well.sel(c=first, drop=True),
                           label=f"mean {first} intensity", title="mean intensity per well")
    ax.figure.savefig(out / "heatmap.png", dpi=110)
    total = time.perf_counter() - t0
    if keep:
        print(f"pictures: {out / 'montage.png'} and {out / 'heatmap.png'} (total {total:.1f} s)")
    else:
        print(f"drew the plate montage and heatmap (total {total:.1f} s); the plate and "
              "pictures were temporary: `xarray-hcs demo DIR` keeps them in DIR")
    return 0


def _check_out(out: str) -> None:
    """Refuse a picture path that cannot be written before the plate is read, not after."""
    import os

    from .errors import HcsValueError

    p = Path(out)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise HcsValueError(f"the folder {str(parent)!r} does not exist", out)
    if not os.access(parent, os.W_OK):
        raise HcsValueError(f"the folder {str(parent)!r} is not writable", out)
    if p.is_dir():
        raise HcsValueError("is a folder; give the picture's file name", out)
    kinds = ("png", "pdf", "svg", "jpg", "jpeg", "tif", "tiff", "eps", "ps", "webp")
    if p.suffix.lower().lstrip(".") not in kinds:
        raise HcsValueError(f"the picture must end in one of .{', .'.join(kinds)}", out)


def _montage(args: argparse.Namespace) -> int:
    from .open import open_plate

    _check_out(args.out)
    dt = open_plate(args.path, chunks=None, labels=False, tables=False)
    channel: object = args.channel
    if isinstance(channel, str) and channel.isdigit():
        channel = int(channel)
    ax = dt.hcs.plot_montage(level=_level(args.level), channel=channel, agg=args.agg,
                             channels=args.channels, pad=args.pad)
    ax.figure.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out}")
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    from .open import open_plate

    _check_out(args.out)
    dt = open_plate(args.path, chunks=None, labels=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = dt.hcs.concat_tables(args.table, strict=False, columns=[args.column])
    if df.empty:
        why = f": {caught[0].message}" if caught else ""
        print(f"xarray-hcs: error: no field has a table {args.table!r} with a column "
              f"{args.column!r}{why}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"xarray-hcs: warning: {w.message}", file=sys.stderr)
    values = df.groupby(["row", "column"], observed=True)[args.column].agg(args.agg)
    ax = dt.hcs.plot_plate(values, label=f"{args.agg} of {args.column}",
                           title=f"{args.table}: {args.column}")
    ax.figure.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out}")
    return 0


def _level(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _info(args: argparse.Namespace) -> int:
    from .open import open_plate

    dt = open_plate(args.path, chunks=None, labels=True)
    print(dt.hcs.summary())
    return 0


def _dpi(text: str) -> int:
    try:
        dpi = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 10 <= dpi <= 1200:
        raise argparse.ArgumentTypeError(f"{dpi} is not between 10 and 1200")
    return dpi


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xarray-hcs`` command."""
    from .errors import HcsError

    parser = argparse.ArgumentParser(prog="xarray-hcs",
                                     description="OME-Zarr HCS plates with xarray")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"xarray-hcs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="write the built-in sample plate, open it, analyse it")
    p.add_argument("dir", nargs="?", default=None,
                   help="a folder to write the plate and pictures to and keep them in "
                        "(default: a temporary folder, deleted at the end)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a plate already at DIR/plate.zarr")
    p.set_defaults(func=_demo)
    p = sub.add_parser("info", help="print a summary of a plate")
    p.add_argument("path", help="path or URL of the plate (.zarr, .ozx)")
    p.set_defaults(func=_info)
    p = sub.add_parser("montage", help="draw the whole plate, fields tiled in each well")
    p.add_argument("path", help="path or URL of the plate")
    p.add_argument("out", help="the picture to write (.png, .pdf, .svg)")
    p.add_argument("--level", default="-1", help="level index or path (default -1, coarsest)")
    p.add_argument("--channel", default="0", help="channel label or index (default 0)")
    p.add_argument("--agg", default="max", choices=["max", "mean", "min", "median"],
                   help="projection over z and t (default max)")
    p.add_argument("--channels", default="exact", choices=["exact", "union"],
                   help="fields whose channel sets differ: refuse (exact, default) or align "
                        "them by label (union)")
    p.add_argument("--pad", action="store_true",
                   help="pad fields of different sizes instead of refusing them")
    p.add_argument("--dpi", type=_dpi, default=110, help="dots per inch, 10 to 1200")
    p.set_defaults(func=_montage)
    p = sub.add_parser("heatmap", help="a plate heatmap of one column of a per-image table")
    p.add_argument("path", help="path or URL of the plate")
    p.add_argument("out", help="the picture to write (.png, .pdf, .svg)")
    p.add_argument("--table", required=True, help="table name (as in list_tables)")
    p.add_argument("--column", required=True, help="the table column to show")
    p.add_argument("--agg", default="mean", choices=["mean", "median", "sum", "count",
                                                      "min", "max"],
                   help="how the rows of a well are combined (default mean)")
    p.add_argument("--dpi", type=_dpi, default=110, help="dots per inch, 10 to 1200")
    p.set_defaults(func=_heatmap)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except HcsError as e:
        print(f"xarray-hcs: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system's refusals: no traceback, the reason and the file
        print(f"xarray-hcs: error: {e.strerror or e}"
              f"{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
