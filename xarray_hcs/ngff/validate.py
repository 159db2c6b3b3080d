"""Strict validation: the rules of the spec that tolerant reading lets pass.

Reading always enforces what would make the tree wrong (see :mod:`.models`: contradictory well
indices, undeclared acquisitions, axis order, transform lengths, unsafe paths...). With
``validate=True`` these stricter rules are checked as well, the ones real writers break without
harm: missing ``version`` keys, units outside the spec's lists, levels that do not get coarser,
channel counts that disagree with ``omero``, non-integer label images, field counts that
contradict the wells. Each check collects every problem of a node and raises one
:class:`~xarray_hcs.errors.HcsMetadataError` listing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import HcsMetadataError
from .models import Multiscale, Omero, Plate, Well

__all__ = ["SPACE_UNITS", "TIME_UNITS", "version_stated", "check_plate", "check_well",
           "check_image"]

SPACE_UNITS = frozenset("""angstrom attometer centimeter decimeter exameter femtometer foot
gigameter hectometer inch kilometer megameter meter micrometer mile millimeter nanometer
parsec petameter picometer terameter yard yoctometer yottameter zeptometer zettameter""".split())
TIME_UNITS = frozenset("""attosecond centisecond day decisecond exasecond femtosecond gigasecond
hectosecond hour kilosecond megasecond microsecond millisecond minute nanosecond petasecond
picosecond second terasecond yoctosecond yottasecond zeptosecond zettasecond""".split())


def _raise(problems: list[str], path: str | None) -> None:
    if problems:
        raise HcsMetadataError("does not validate: " + "; ".join(problems), path)


def version_stated(attrs: dict[str, Any], zarr_format: int, key: str) -> bool:
    """Whether the raw attributes state the OME-NGFF version where the spec puts it."""
    if zarr_format == 3 and "ome" in attrs:
        return isinstance(attrs["ome"], dict) and "version" in attrs["ome"]
    obj = attrs.get(key)
    if key == "multiscales":
        return isinstance(obj, list) and all(isinstance(m, dict) and "version" in m
                                             for m in obj)
    if key == "labels":  # 0.4 labels groups carry no version
        return True
    return isinstance(obj, dict) and "version" in obj


def check_plate(plate: Plate, wells: Sequence[tuple[str, Well]], path: str | None) -> None:
    """Field counts declared by the plate against what its wells hold."""
    problems = []
    counts = [len(w.images) for _, w in wells]
    if plate.field_count is not None and counts and max(counts) > plate.field_count:
        problems.append(f"field_count is {plate.field_count} but a well holds {max(counts)} "
                        "fields")
    for acq in plate.acquisitions:
        if acq.maximumfieldcount is None:
            continue
        for wpath, w in wells:
            n = sum(im.acquisition == acq.id for im in w.images)
            if n > acq.maximumfieldcount:
                problems.append(f"acquisition {acq.id} has maximumfieldcount "
                                f"{acq.maximumfieldcount} but well {wpath} holds {n} of its "
                                "fields")
                break
    _raise(problems, path)


def check_well(well: Well, plate: Plate, path: str | None) -> None:
    problems = []
    for im in well.images:
        if not (im.path.isascii() and im.path.isalnum()):
            problems.append(f"image path {im.path!r} is not alphanumeric")
        if im.acquisition is not None and not plate.acquisitions:
            # (with declared acquisitions, reading itself refuses an undeclared id)
            problems.append(f"image {im.path!r} names acquisition {im.acquisition}, but the "
                            "plate declares no acquisitions")
        if len(plate.acquisitions) > 1 and im.acquisition is None:
            problems.append(f"image {im.path!r} names no acquisition although the plate "
                            f"has {len(plate.acquisitions)}")
    _raise(problems, path)


def check_image(ms: Multiscale, omero: Omero | None, shapes: Sequence[tuple[int, ...]],
                dtypes: Sequence[np.dtype], path: str | None, *, label: bool = False) -> None:
    """Axes, units, the pyramid's order, channel counts and label dtypes of one image."""
    problems = []
    for ax in ms.axes:
        if ax.type is None:
            problems.append(f"axis {ax.name!r} has no type")
        elif ax.type == "space" and ax.unit is not None and ax.unit not in SPACE_UNITS:
            problems.append(f"axis {ax.name!r} has unit {ax.unit!r}, not a space unit of the "
                            "spec")
        elif ax.type == "time" and ax.unit is not None and ax.unit not in TIME_UNITS:
            problems.append(f"axis {ax.name!r} has unit {ax.unit!r}, not a time unit of the "
                            "spec")
    for prev, cur, (lp, lc) in zip(ms.datasets, ms.datasets[1:],
                                   zip(shapes, shapes[1:], strict=False), strict=False):
        if any(c < p for c, p in zip(cur.scale, prev.scale, strict=True)):
            problems.append(f"level {cur.path!r} has a finer scale than {prev.path!r}: "
                            "levels must go from fine to coarse")
        if any(c > p for c, p in zip(lc, lp, strict=True)):
            problems.append(f"level {cur.path!r} is larger than {prev.path!r} "
                            f"({list(lc)} > {list(lp)})")
    chan = [i for i, a in enumerate(ms.axes) if a.type == "channel"]
    if omero is not None and chan and shapes and omero.channels:
        n = shapes[0][chan[0]]
        if len(omero.channels) != n:
            problems.append(f"omero lists {len(omero.channels)} channels but the image has {n}")
    if label:
        for dt in dtypes:
            if not np.issubdtype(dt, np.integer):
                problems.append(f"label image has dtype {dt}; labels must be integers")
                break
    _raise(problems, path)
