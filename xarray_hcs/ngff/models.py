"""Version-neutral OME-NGFF metadata models.

The codecs (:mod:`.v04`, :mod:`.v05`, :mod:`.v06`) turn a node's attributes into one
*version-neutral* ``ome`` dict shaped like NGFF 0.5's ``attributes["ome"]``
(``{"version": ..., "plate": {...}}``, with the per-object ``version`` keys of 0.4 lifted out).
The models here parse those dicts into typed, immutable objects, checking types as they go, and
serialise them back (``to_dict``), keeping every key they do not know in ``extra`` so that a
round trip loses nothing. This layer knows nothing of xarray or zarr.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import HcsMetadataError, HcsPathError

__all__ = [
    "Axis",
    "Acquisition",
    "PlateWell",
    "Plate",
    "WellImage",
    "Well",
    "ScaleLevel",
    "Multiscale",
    "Channel",
    "Omero",
    "ImageLabel",
    "check_relative_path",
    "check_name",
]

SPACE, TIME, CHANNEL = "space", "time", "channel"


# --------------------------------------------------------------------------- helpers


def _expect(value: Any, types: type | tuple[type, ...], what: str, path: str | None) -> Any:
    # bool is an int subclass; JSON true must never pass as an index or a scale
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise HcsMetadataError(f"{what} must be {_type_names(types)}, got {value!r}", path)
    if not isinstance(value, types):
        raise HcsMetadataError(
            f"{what} must be {_type_names(types)}, got {type(value).__name__} {value!r}", path
        )
    return value


def _type_names(types: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer",
             float: "a number", bool: "a boolean"}
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in ts)


def _require(d: Mapping[str, Any], key: str, what: str, path: str | None) -> Any:
    if key not in d:
        raise HcsMetadataError(f"{what} has no required key {key!r}", path)
    return d[key]


def _extra(d: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


def _numbers(value: Any, what: str, path: str | None) -> tuple[float, ...]:
    _expect(value, list, what, path)
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise HcsMetadataError(f"{what} must hold numbers, got {v!r}", path)
        if not math.isfinite(v):
            raise HcsMetadataError(f"{what} must hold finite numbers, got {v!r}", path)
        out.append(float(v))
    return tuple(out)


def check_relative_path(p: Any, what: str, where: str | None, *, parts: int | None = None) -> str:
    """Return ``p`` if it is a safe relative store path, else raise :class:`HcsPathError`.

    Safe means: a non-empty string of ``/``-separated components, none of them empty, ``.`` or
    ``..``, not absolute, no backslashes or control characters. ``parts`` fixes the number of
    components (a well path is ``row/column``).
    """
    if not isinstance(p, str) or not p:
        raise HcsPathError(f"{what} must be a non-empty string, got {p!r}", where)
    comps = p.split("/")
    if p.startswith("/") or "\\" in p or ":" in comps[0]:
        raise HcsPathError(
            f"{what} {p!r} is absolute; only paths relative to the node are allowed", where)
    for c in comps:
        if c in ("", ".", ".."):
            raise HcsPathError(f"{what} {p!r} has an unsafe component {c!r}", where)
        if any(ord(ch) < 32 for ch in c):
            raise HcsPathError(f"{what} {p!r} has a control character", where)
    if parts is not None and len(comps) != parts:
        raise HcsPathError(f"{what} {p!r} must have {parts} component(s)", where)
    return p


def check_name(name: Any, what: str, where: str | None) -> str:
    """A row, column or field name: alphanumeric, as the plate schema demands."""
    if not isinstance(name, str) or not name or not name.isascii() or not name.isalnum():
        raise HcsPathError(f"{what} must be a non-empty alphanumeric string, got {name!r}", where)
    return name


# --------------------------------------------------------------------------- plate


@dataclass(frozen=True, slots=True)
class Acquisition:
    id: int
    name: str | None = None
    maximumfieldcount: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, path: str | None) -> Acquisition:
        _expect(d, dict, "plate acquisition", path)
        aid = _expect(_require(d, "id", "plate acquisition", path), int, "acquisition id", path)
        if aid < 0:
            raise HcsMetadataError(f"acquisition id must be >= 0, got {aid}", path)
        name = d.get("name")
        if name is not None:
            _expect(name, str, "acquisition name", path)
        mfc = d.get("maximumfieldcount")
        if mfc is not None:
            _expect(mfc, int, "acquisition maximumfieldcount", path)
        return cls(aid, name, mfc, _extra(d, {"id", "name", "maximumfieldcount"}))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.name is not None:
            out["name"] = self.name
        if self.maximumfieldcount is not None:
            out["maximumfieldcount"] = self.maximumfieldcount
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class PlateWell:
    path: str
    row_index: int
    column_index: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def row(self) -> str:
        return self.path.split("/")[0]

    @property
    def column(self) -> str:
        return self.path.split("/")[1]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rowIndex": self.row_index,
                "columnIndex": self.column_index, **self.extra}


@dataclass(frozen=True, slots=True)
class Plate:
    """The ``plate`` object of a plate group's metadata."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    wells: tuple[PlateWell, ...]
    acquisitions: tuple[Acquisition, ...] = ()
    name: str | None = None
    field_count: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, path: str | None = None) -> Plate:
        """Parse and check a plate dict (version-neutral: no ``version`` key needed)."""
        _expect(d, dict, "plate metadata", path)
        rows = tuple(
            check_name(_require(_expect(r, dict, "plate row", path), "name", "plate row", path),
                       "row name", path)
            for r in _expect(_require(d, "rows", "plate", path), list, "plate rows", path)
        )
        columns = tuple(
            check_name(_require(_expect(c, dict, "plate column", path), "name", "plate column",
                                path), "column name", path)
            for c in _expect(_require(d, "columns", "plate", path), list, "plate columns", path)
        )
        for what, names in (("row", rows), ("column", columns)):
            if len(set(names)) != len(names):
                raise HcsMetadataError(f"plate {what} names are not unique: {list(names)}", path)
        wells = []
        seen: set[str] = set()
        for w in _expect(_require(d, "wells", "plate", path), list, "plate wells", path):
            _expect(w, dict, "plate well", path)
            wpath = check_relative_path(_require(w, "path", "plate well", path), "well path",
                                        path, parts=2)
            ri = _expect(_require(w, "rowIndex", f"plate well {wpath!r}", path), int,
                         f"rowIndex of well {wpath!r}", path)
            ci = _expect(_require(w, "columnIndex", f"plate well {wpath!r}", path), int,
                         f"columnIndex of well {wpath!r}", path)
            if not (0 <= ri < len(rows)) or not (0 <= ci < len(columns)):
                raise HcsMetadataError(
                    f"well {wpath!r} has rowIndex {ri} / columnIndex {ci} outside the plate's "
                    f"{len(rows)} rows / {len(columns)} columns", path)
            r, c = wpath.split("/")
            if rows[ri] != r or columns[ci] != c:
                raise HcsMetadataError(
                    f"well path {wpath!r} disagrees with rowIndex {ri} ({rows[ri]!r}) / "
                    f"columnIndex {ci} ({columns[ci]!r})", path)
            if wpath in seen:
                raise HcsMetadataError(f"well {wpath!r} is listed twice", path)
            seen.add(wpath)
            wells.append(PlateWell(wpath, ri, ci, _extra(w, {"path", "rowIndex", "columnIndex"})))
        acqs = tuple(Acquisition.from_dict(a, path)
                     for a in _expect(d.get("acquisitions", []), list, "plate acquisitions", path))
        if len({a.id for a in acqs}) != len(acqs):
            raise HcsMetadataError("plate acquisition ids are not unique", path)
        name = d.get("name")
        if name is not None:
            _expect(name, str, "plate name", path)
        fc = d.get("field_count")
        if fc is not None:
            _expect(fc, int, "plate field_count", path)
        extra = _extra(d, {"rows", "columns", "wells", "acquisitions", "name", "field_count",
                           "version"})
        return cls(rows, columns, tuple(wells), acqs, name, fc, extra)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.acquisitions:
            out["acquisitions"] = [a.to_dict() for a in self.acquisitions]
        out["columns"] = [{"name": c} for c in self.columns]
        if self.field_count is not None:
            out["field_count"] = self.field_count
        if self.name is not None:
            out["name"] = self.name
        out["rows"] = [{"name": r} for r in self.rows]
        out["wells"] = [w.to_dict() for w in self.wells]
        out.update(self.extra)
        return out

    @property
    def well_paths(self) -> tuple[str, ...]:
        return tuple(w.path for w in self.wells)

    @property
    def acquisition_ids(self) -> tuple[int, ...]:
        return tuple(a.id for a in self.acquisitions)


# --------------------------------------------------------------------------- well


@dataclass(frozen=True, slots=True)
class WellImage:
    path: str
    acquisition: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.acquisition is not None:
            out["acquisition"] = self.acquisition
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class Well:
    images: tuple[WellImage, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, path: str | None = None,
                  acquisition_ids: Sequence[int] | None = None) -> Well:
        """Parse a well dict; ``acquisition_ids`` (from the plate) checks that ids are declared."""
        _expect(d, dict, "well metadata", path)
        images = []
        seen: set[str] = set()
        for im in _expect(_require(d, "images", "well", path), list, "well images", path):
            _expect(im, dict, "well image", path)
            ipath = check_relative_path(_require(im, "path", "well image", path), "image path",
                                        path, parts=1)
            if ipath in seen:
                raise HcsMetadataError(f"image path {ipath!r} is listed twice", path)
            seen.add(ipath)
            acq = im.get("acquisition")
            if acq is not None:
                _expect(acq, int, f"acquisition of image {ipath!r}", path)
                if acquisition_ids is not None and acq not in acquisition_ids:
                    raise HcsMetadataError(
                        f"image {ipath!r} names acquisition {acq}, which the plate does not "
                        f"declare (declared: {list(acquisition_ids)})", path)
            images.append(WellImage(ipath, acq, _extra(im, {"path", "acquisition"})))
        return cls(tuple(images), _extra(d, {"images", "version"}))

    def to_dict(self) -> dict[str, Any]:
        return {"images": [i.to_dict() for i in self.images], **self.extra}


# --------------------------------------------------------------------------- multiscales


@dataclass(frozen=True, slots=True)
class Axis:
    name: str
    type: str | None = None
    unit: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.type is not None:
            out["type"] = self.type
        if self.unit is not None:
            out["unit"] = self.unit
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class ScaleLevel:
    """One ``datasets[]`` entry: the level's array path and its scale/translation."""

    path: str
    scale: tuple[float, ...]
    translation: tuple[float, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        cts: list[dict[str, Any]] = [{"type": "scale", "scale": list(self.scale)}]
        if self.translation is not None:
            cts.append({"type": "translation", "translation": list(self.translation)})
        return {"path": self.path, "coordinateTransformations": cts, **self.extra}


def _parse_transforms(cts: Any, ndim: int, what: str, path: str | None,
                      required: bool) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Return (scale, translation) from a 0.4/0.5 coordinateTransformations list."""
    if cts is None:
        if required:
            raise HcsMetadataError(f"{what} has no coordinateTransformations", path)
        return None, None
    _expect(cts, list, f"coordinateTransformations of {what}", path)
    scale = translation = None
    for i, t in enumerate(cts):
        _expect(t, dict, f"coordinate transformation of {what}", path)
        kind = t.get("type")
        if kind == "scale":
            if i != 0:
                raise HcsMetadataError(f"{what}: the scale transformation must come first", path)
            if "scale" not in t:
                raise HcsMetadataError(f"{what}: scale given by path is not supported", path)
            scale = _numbers(t["scale"], f"scale of {what}", path)
        elif kind == "translation":
            if scale is None:
                raise HcsMetadataError(f"{what}: translation must come after scale", path)
            if translation is not None:
                raise HcsMetadataError(f"{what}: more than one translation", path)
            if "translation" not in t:
                raise HcsMetadataError(f"{what}: translation given by path is not supported", path)
            translation = _numbers(t["translation"], f"translation of {what}", path)
        elif kind == "identity" and len(cts) == 1:
            scale = (1.0,) * ndim
        else:
            raise HcsMetadataError(f"{what}: unsupported coordinate transformation {kind!r}", path)
    if required and scale is None:
        raise HcsMetadataError(f"{what} has no scale transformation", path)
    for name, v in (("scale", scale), ("translation", translation)):
        if v is not None and len(v) != ndim:
            raise HcsMetadataError(
                f"{what}: {name} has {len(v)} values for {ndim} axes", path)
    return scale, translation


_AXIS_ORDER = {TIME: 0, CHANNEL: 1}


def check_axes(axes: Sequence[Axis], path: str | None) -> None:
    """The 0.4/0.5 rules on axes the JSON schemas only partly express."""
    names = [a.name for a in axes]
    if not 2 <= len(axes) <= 5:
        raise HcsMetadataError(f"multiscales must have 2 to 5 axes, got {names}", path)
    if len(set(names)) != len(names):
        raise HcsMetadataError(f"axis names are not unique: {names}", path)
    kinds = [a.type for a in axes]
    n_space = sum(k == SPACE for k in kinds)
    if not 2 <= n_space <= 3:
        raise HcsMetadataError(f"multiscales must have 2 or 3 space axes, got {names}", path)
    if kinds.count(TIME) > 1:
        raise HcsMetadataError(f"more than one time axis: {names}", path)
    # order: time, then channel/custom, then space; space axes last
    rank = [_AXIS_ORDER.get(k, 1) if k != SPACE else 2 for k in kinds]
    if rank != sorted(rank):
        raise HcsMetadataError(
            f"axes are out of order {names}: time first, then channel, then space", path)


@dataclass(frozen=True, slots=True)
class Multiscale:
    """One ``multiscales[]`` entry."""

    axes: tuple[Axis, ...]
    datasets: tuple[ScaleLevel, ...]
    scale: tuple[float, ...] | None = None
    translation: tuple[float, ...] | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, path: str | None = None) -> Multiscale:
        _expect(d, dict, "multiscales entry", path)
        axes = []
        for a in _expect(_require(d, "axes", "multiscales entry", path), list, "axes", path):
            if isinstance(a, str):  # NGFF 0.3 style, still seen in the wild
                a = {"name": a, "type": {"t": TIME, "c": CHANNEL}.get(a.lower(), SPACE)}
            _expect(a, dict, "axis", path)
            name = _expect(_require(a, "name", "axis", path), str, "axis name", path)
            typ = a.get("type")
            if typ is not None:
                _expect(typ, str, f"type of axis {name!r}", path)
            unit = a.get("unit")
            if unit is not None:
                _expect(unit, str, f"unit of axis {name!r}", path)
            axes.append(Axis(name, typ, unit, _extra(a, {"name", "type", "unit"})))
        axes_t = tuple(axes)
        check_axes(axes_t, path)
        levels = []
        seen: set[str] = set()
        ds_list = _expect(_require(d, "datasets", "multiscales entry", path), list, "datasets",
                          path)
        if not ds_list:
            raise HcsMetadataError("multiscales datasets is empty", path)
        for ds in ds_list:
            _expect(ds, dict, "multiscales dataset", path)
            lpath = check_relative_path(_require(ds, "path", "multiscales dataset", path),
                                        "dataset path", path)
            if lpath in seen:
                raise HcsMetadataError(f"dataset path {lpath!r} is listed twice", path)
            seen.add(lpath)
            scale, translation = _parse_transforms(
                ds.get("coordinateTransformations"), len(axes_t), f"dataset {lpath!r}", path,
                required=True)
            assert scale is not None
            if any(s <= 0 for s in scale):
                raise HcsMetadataError(f"dataset {lpath!r}: scale must be positive, got "
                                       f"{list(scale)}", path)
            levels.append(ScaleLevel(lpath, scale, translation,
                                     _extra(ds, {"path", "coordinateTransformations"})))
        scale, translation = _parse_transforms(
            d.get("coordinateTransformations"), len(axes_t), "multiscales", path, required=False)
        name = d.get("name")
        if name is not None and not isinstance(name, str):
            name = str(name)
        extra = _extra(d, {"axes", "datasets", "coordinateTransformations", "name", "version"})
        return cls(axes_t, tuple(levels), scale, translation, name, extra)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"axes": [a.to_dict() for a in self.axes],
                               "datasets": [lv.to_dict() for lv in self.datasets]}
        if self.scale is not None:
            cts: list[dict[str, Any]] = [{"type": "scale", "scale": list(self.scale)}]
            if self.translation is not None:
                cts.append({"type": "translation", "translation": list(self.translation)})
            out["coordinateTransformations"] = cts
        if self.name is not None:
            out["name"] = self.name
        out.update(self.extra)
        return out

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    def effective(self, level: ScaleLevel) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Scale and translation of a level, with the multiscales-level transform applied."""
        n = len(self.axes)
        s = level.scale
        t = level.translation or (0.0,) * n
        if self.scale is not None:
            ms, mt = self.scale, self.translation or (0.0,) * n
            # outer(x) = ms * inner(x) + mt, inner(i) = s * i + t
            s = tuple(a * b for a, b in zip(ms, s, strict=True))
            t = tuple(a * b + c for a, b, c in zip(ms, t, mt, strict=True))
        return s, t


# --------------------------------------------------------------------------- omero / labels


@dataclass(frozen=True, slots=True)
class Channel:
    label: str | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Omero:
    channels: tuple[Channel, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, path: str | None = None) -> Omero:
        _expect(d, dict, "omero metadata", path)
        chans = []
        for ch in _expect(d.get("channels", []), list, "omero channels", path):
            _expect(ch, dict, "omero channel", path)
            label = ch.get("label")
            if label is not None and not isinstance(label, str):
                label = str(label)
            chans.append(Channel(label, _extra(ch, {"label"})))
        return cls(tuple(chans), _extra(d, {"channels"}))

    def labels(self, n: int) -> list[str]:
        """``n`` unique channel labels: the written ones (each at its first place), and for a
        channel without one (or with a repeated one) ``c<i>``, made unique against every
        written label, so that no channel ever takes another's name."""
        written = [self.channels[i].label if i < len(self.channels) else None for i in range(n)]
        out: list[str | None] = [None] * n
        taken: set[str] = set()
        for i, lab in enumerate(written):
            if lab and lab not in taken:
                out[i] = lab
                taken.add(lab)
        taken |= {lab for lab in written if lab}
        for i in range(n):
            if out[i] is None:
                name, k = f"c{i}", 1
                while name in taken:
                    name, k = f"c{i}_{k}", k + 1
                out[i] = name
                taken.add(name)
        return [str(lab) for lab in out]


@dataclass(frozen=True, slots=True)
class ImageLabel:
    source: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, path: str | None = None) -> ImageLabel:
        _expect(d, dict, "image-label metadata", path)
        src = d.get("source")
        if src is not None:
            _expect(src, dict, "image-label source", path)
        return cls(src, _extra(d, {"source", "version"}))


def parse_labels_list(value: Any, path: str | None) -> tuple[str, ...]:
    """The ``labels`` list of a labels group: safe relative paths."""
    _expect(value, list, "labels list", path)
    return tuple(check_relative_path(v, "label path", path) for v in value)
