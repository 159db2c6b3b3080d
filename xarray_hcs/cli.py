"""The ``xarray-hcs`` command line: ``demo`` and ``info``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import dask
    import numpy as np
    import xarray as xr

    from .sample import DEMO, write_sample_plate

    t0 = time.perf_counter()
    if args.dir is None:
        tmp = tempfile.mkdtemp(prefix="xarray-hcs-demo-")
        path = Path(tmp) / "plate.zarr"
    else:
        path = Path(args.dir)
        if path.suffix != ".zarr":
            path = path / "plate.zarr"
    write_sample_plate(path, DEMO, overwrite=True)
    t1 = time.perf_counter()
    print(f"wrote the sample plate to {path} in {t1 - t0:.1f} s\n")

    dt = xr.open_datatree(path, engine="ome-hcs", chunks={})
    t2 = time.perf_counter()
    print(dt.hcs.summary())
    print(f"\nopened with xr.open_datatree(..., engine='ome-hcs') in {t2 - t1:.2f} s")

    # one lazy mean per field at level 0, computed together by dask
    means = {p: dt[f"{p}/0"]["image"].mean(dim=[d for d in dt[f"{p}/0"]["image"].dims
                                                if d != "c"])
             for p in dt.hcs.field_paths}
    (computed,) = dask.compute(means)
    t3 = time.perf_counter()
    channels = list(dt[dt.hcs.field_paths[0]].coords["c"].values)
    rows, cols = dt.hcs.rows, dt.hcs.columns
    for ci, ch in enumerate(channels):
        total = np.zeros((len(rows), len(cols)))
        count = np.zeros((len(rows), len(cols)))
        for p, m in computed.items():
            r, c, _ = p.split("/")
            total[rows.index(r), cols.index(c)] += float(m.values[ci])
            count[rows.index(r), cols.index(c)] += 1
        with np.errstate(invalid="ignore"):
            grid = total / count
        print(f"\nmean intensity per well, channel {ch}:")
        print("      " + " ".join(f"{c:>6}" for c in cols))
        for r, line in zip(rows, grid, strict=True):
            print(f"{r:>5} " + " ".join(f"{v:6.0f}" for v in line))
    print(f"\ncomputed {len(means)} field means with dask in {t3 - t2:.2f} s "
          f"(total {t3 - t0:.1f} s)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .open import open_plate

    dt = open_plate(args.path, chunks=None, labels=True)
    print(dt.hcs.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xarray-hcs`` command."""
    from .errors import HcsError

    parser = argparse.ArgumentParser(prog="xarray-hcs",
                                     description="OME-Zarr HCS plates with xarray")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="write the built-in sample plate, open it, analyse it")
    p.add_argument("dir", nargs="?", default=None,
                   help="where to write the plate (default: a temporary directory)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("info", help="print a summary of a plate")
    p.add_argument("path", help="path or URL of the plate (.zarr, .ozx)")
    p.set_defaults(func=_info)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except HcsError as e:
        print(f"xarray-hcs: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
