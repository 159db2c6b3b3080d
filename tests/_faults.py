"""Child processes for the fault tests: one plate edit, killed at its Nth file-system change.

    python tests/_faults.py N add PLATE ROW COL VALUE
    python tests/_faults.py N remove PLATE ROW COL FIELD
    python tests/_faults.py N overwrite SRC DST

Every change a writer makes to the store (a file created or replaced, a file or folder
deleted, a folder made) is counted; at the Nth the process ends at once with
``os._exit(137)``, as SIGKILL would leave it: no cleanup, no flush. ``N = 0`` kills nothing
and prints the number of changes the edit made ("changes K"), so a test can kill it at every
one of them. Events, not timing, decide where the kill falls: the same N is the same moment
on any machine, however loaded.
"""

from __future__ import annotations

import builtins
import io
import os
import sys
from typing import Any

_count = 0
_kill_at = 0


def _changed() -> None:
    global _count
    _count += 1
    if _count == _kill_at:
        os._exit(137)


def _hook(module: Any, name: str, writes: Any = None) -> None:
    real = getattr(module, name)

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if writes is None or writes(*args, **kwargs):
            _changed()
        return real(*args, **kwargs)

    setattr(module, name, hooked)


def _opens_for_writing(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> bool:
    return any(c in mode for c in "wax+")


def _os_open_writes(path: Any, flags: int, *args: Any, **kwargs: Any) -> bool:
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def install(kill_at: int) -> None:
    global _kill_at
    _kill_at = kill_at
    for name in ("replace", "rename", "unlink", "remove", "rmdir", "mkdir"):
        _hook(os, name)
    _hook(os, "open", _os_open_writes)
    _hook(builtins, "open", _opens_for_writing)
    io.open = builtins.open  # pathlib opens through io.open


def main(argv: list[str]) -> None:
    import numpy as np
    import xarray as xr

    import xarray_hcs

    n, op, *args = argv
    install(int(n))
    if op == "add":
        plate, row, col, value = args
        img = xr.DataArray(np.full((2, 1, 16, 16), int(value), "uint16"),
                           dims=("c", "z", "y", "x"), coords={"c": ["DAPI", "GFP"]})
        print(xarray_hcs.add_image(plate, row, col, img, levels=2), flush=True)
    elif op == "remove":
        plate, row, col, field = args
        print(xarray_hcs.remove_image(plate, row, col, field), flush=True)
    elif op == "overwrite":
        src, dst = args
        xr.open_datatree(src, engine="ome-hcs").hcs.to_zarr(dst, mode="w")
    print(f"changes {_count}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
