"""A writer process for the concurrency and crash tests: adds images to a plate in a loop.

    python tests/_writer_proc.py PLATE WORKER N [WELLS...]
"""

from __future__ import annotations

import sys

import numpy as np
import xarray as xr

import xarray_hcs


def image(worker: int, i: int) -> xr.DataArray:
    value = worker * 1000 + i + 1  # identifies the image: checked after the run
    return xr.DataArray(np.full((2, 1, 16, 16), value, dtype="uint16"),
                        dims=("c", "z", "y", "x"), coords={"c": ["DAPI", "GFP"]})


def main() -> None:
    plate, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    wells = sys.argv[4:] or ["A/1", "A/2", "B/1", "B/2"]
    for i in range(n):
        row, col = wells[(worker + i) % len(wells)].split("/")
        xarray_hcs.add_image(plate, row, col, image(worker, i), levels=2, timeout=300)
        print(worker, i, flush=True)


if __name__ == "__main__":
    main()
