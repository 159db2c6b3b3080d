"""Label images written level for level with their image.

The spec (and ome-zarr-models, which checks it) wants a label image to have as many
resolution levels as the image it labels; some writers (iohub) write fewer. On write the
missing levels are made from the label's finest level by nearest-neighbour sampling onto the
grid of the image's level (labels are ids: never averaged), lazily, so they stream to the
store like any other level. Nothing the label had is changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .ngff import Multiscale

if TYPE_CHECKING:
    from .metadata import ImageSpec, LevelSpec

__all__ = ["complete_label_levels"]


def _spatial(ms: Multiscale) -> list[bool]:
    return [a.type == "space" or (a.type is None and a.name.lower() in ("x", "y", "z"))
            for a in ms.axes]


def _same_grid(a: LevelSpec, i: int, b: LevelSpec, j: int) -> bool:
    return (a.variable.shape[i] == b.variable.shape[j]
            and bool(np.isclose(a.scale[i], b.scale[j], rtol=1e-9, atol=0))
            and bool(np.isclose(a.translation[i], b.translation[j], rtol=1e-9,
                                atol=1e-9 * abs(a.scale[i]))))


def complete_label_levels(image: ImageSpec, label: ImageSpec) -> None:
    """Add to ``label`` (in place) the levels its image has and it lacks."""
    if len(label.levels) >= len(image.levels) or not label.levels:
        return
    ims = Multiscale.from_dict(image.ome["multiscales"][0], image.path)
    lms = Multiscale.from_dict(label.ome["multiscales"][0], label.path)
    img_axes = list(ims.axis_names)
    spatial = _spatial(lms)
    base, img0 = label.levels[0], image.levels[0]
    shared = [(i, img_axes.index(name)) for i, name in enumerate(lms.axis_names)
              if spatial[i] and name in img_axes]
    same_grid = all(_same_grid(base, i, img0, j) for i, j in shared)
    used = {lv.path for lv in label.levels}
    datasets = label.ome["multiscales"][0]["datasets"]
    for k in range(len(label.levels), len(image.levels)):
        imgk = image.levels[k]
        scale, trans = list(base.scale), list(base.translation)
        picks: dict[str, np.ndarray] = {}
        for i, j in shared:
            if same_grid:
                s, t, n = imgk.scale[j], imgk.translation[j], imgk.variable.shape[j]
            else:  # the label on a grid of its own: the image's step from its level 0
                s = base.scale[i] * imgk.scale[j] / img0.scale[j]
                t = base.translation[i] + (imgk.translation[j] - img0.translation[j]) * (
                    base.scale[i] / img0.scale[j])
                n = max(1, int(base.variable.shape[i] * base.scale[i] / s))
            centres = t + s * np.arange(n)
            idx = np.floor((centres - base.translation[i]) / base.scale[i] + 0.5)
            picks[base.variable.dims[i]] = np.clip(idx, 0, base.variable.shape[i] - 1).astype(
                np.int64)
            scale[i], trans[i] = float(s), float(t)
        var = base.variable.isel(picks)
        path = imgk.path if imgk.path not in used else _free(used, k)
        used.add(path)
        level_type = type(base)
        label.levels.append(level_type(path, var, scale, trans, base.chunks, base.fill))
        datasets.append({"path": path, "coordinateTransformations": _written(lms, scale,
                                                                             trans)})


def _free(used: set[str], k: int) -> str:
    path = str(k)
    while path in used:
        path += "_"
    return path


def _written(ms: Multiscale, scale: list[float], trans: list[float]) -> list[dict[str, Any]]:
    """A level's transforms as its dataset entry states them (inside any multiscales-level
    transform)."""
    if ms.scale is not None:
        outer_t = ms.translation or (0.0,) * len(scale)
        scale = [a / b for a, b in zip(scale, ms.scale, strict=True)]
        trans = [(a - t) / b for a, t, b in zip(trans, outer_t, ms.scale, strict=True)]
    return [{"type": "scale", "scale": list(scale)},
            {"type": "translation", "translation": list(trans)}]
