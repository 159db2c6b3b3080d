"""The xarray backend: ``xr.open_datatree(store, engine="ome-hcs")``.

A thin adapter in the manner of rioxarray's ``xarray_plugin``: it turns xarray's calls into
:class:`~xarray_hcs.tree.OpenOptions` and hands them to :mod:`xarray_hcs.open`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import xarray as xr
from xarray.backends import BackendEntrypoint

from ._xarray_internals import mark_indexed
from .errors import HcsSelectionError, HcsTypeError
from .open import plate_groups, plate_tree
from .tree import OpenOptions

__all__ = ["OmeHcsBackendEntrypoint"]

_PARAMS = ("level", "pad", "channels", "acquisition", "wells", "fields", "levels", "labels",
           "tables",
           "storage_options",
           "consolidated", "validate", "on_missing", "group", "drop_variables")


#: the options of open_datatree / open_groups (open_dataset also takes level, pad, channels)
_TREE_PARAMS = tuple(p for p in _PARAMS if p not in ("level", "pad", "channels"))


def _options(acquisition: Any = None, wells: Any = None, fields: Any = None, levels: Any = None,
             labels: Any = True, validate: bool = False, on_missing: str = "raise",
             tables: bool = True) -> OpenOptions:
    # chunks stay None: xarray owns ``chunks=`` and chunks our lazy arrays itself
    return OpenOptions(acquisition=acquisition, wells=wells, fields=fields, levels=levels,
                       labels=labels, validate=validate, on_missing=on_missing,  # type: ignore
                       tables=tables)


#: xarray's CF decoding options, which it passes to every engine: images have nothing to
#: decode, so they are accepted and change nothing
_DECODERS = ("mask_and_scale", "decode_times", "decode_timedelta", "concat_characters",
             "use_cftime", "decode_coords", "decode_cf")


def _refuse_unknown(call: str, kwargs: dict[str, Any], ours: Iterable[str]) -> None:
    """A misspelt option (``well=``, ``levle=``, ``chunk=``) would otherwise open the whole
    plate without a word: a TypeError naming it and the options there are, as xarray's own
    engines raise."""
    kwargs = {k: v for k, v in kwargs.items() if k not in _DECODERS}
    if not kwargs:
        return
    import difflib
    import inspect

    xarray_own = [p for p in inspect.signature(getattr(xr, call)).parameters
                  if p not in ("filename_or_obj", "kwargs", "engine", *_DECODERS)]
    known = sorted({*ours, *xarray_own})
    hints = []
    for k in kwargs:
        close = difflib.get_close_matches(k, known, n=1, cutoff=0.6)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise HcsTypeError(
        f"{call}(engine='ome-hcs') got unexpected keyword argument(s) {', '.join(hints)}; "
        f"the ome-hcs engine takes {', '.join(sorted(set(ours)))}, and xarray's own "
        f"{', '.join(sorted(set(xarray_own)))}")


def looks_like_plate(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a local plate: an ``.ozx`` file, or a folder whose root document
    holds plate metadata (read without zarr: this runs for every file xarray is asked to
    open)."""
    p = Path(path)
    if p.suffix.lower() == ".ozx" and p.is_file():
        return True
    for name in ("zarr.json", ".zattrs"):
        doc = p / name
        if doc.is_file() and doc.stat().st_size < 64 << 20:
            try:
                attrs = json.loads(doc.read_bytes())
            except ValueError:
                return False
            if name == "zarr.json":  # any JSON may be there: only a plate's says "plate"
                attrs = attrs.get("attributes") if isinstance(attrs, dict) else None
                attrs = attrs.get("ome") if isinstance(attrs, dict) else None
            return isinstance(attrs, dict) and "plate" in attrs
    return False


class OmeHcsBackendEntrypoint(BackendEntrypoint):
    """Open OME-Zarr High Content Screening plates (OME-NGFF 0.4 / 0.5) with xarray.

    Options (all optional): ``acquisition``, ``wells``, ``fields``, ``levels``, ``labels``,
    ``tables``, ``storage_options``, ``consolidated``, ``validate``, ``on_missing``; see
    :func:`xarray_hcs.open_plate`.
    """

    description = "OME-Zarr HCS plates (OME-NGFF 0.4/0.5) as DataTrees"
    url = "https://github.com/xarray-hcs/xarray-hcs"
    open_dataset_parameters = _PARAMS
    supports_groups = True

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        # xarray asks engines alphabetically, "ome-hcs" before "zarr": claim only real plates
        if isinstance(filename_or_obj, str | os.PathLike):
            s = os.fspath(filename_or_obj)
            if "://" in s:
                return False
            try:
                return looks_like_plate(s)
            except OSError:
                return False
        return False

    def open_datatree(self, filename_or_obj: Any, *, acquisition: Any = None, wells: Any = None,
                      fields: Any = None, levels: Any = None, labels: Any = True,
                      storage_options: dict[str, Any] | None = None,
                      consolidated: bool | None = None, validate: bool = False,
                      on_missing: str = "raise", group: str | None = None,
                      drop_variables: str | Iterable[str] | None = None, tables: bool = True,
                      **kwargs: Any) -> xr.DataTree:
        _refuse_unknown("open_datatree", kwargs, _TREE_PARAMS)
        opts = _options(acquisition, wells, fields, levels, labels, validate, on_missing,
                        tables)
        tree = plate_tree(filename_or_obj, opts, storage_options, consolidated)
        if group not in (None, "", "/"):
            from .metadata import node_at

            node = node_at(tree, str(group).strip("/"))
            if node is None:
                raise HcsSelectionError(f"the plate holds no node {group!r} (a group is "
                                        "'row/column/field' or deeper)", str(filename_or_obj))
            tree = node
            tree.orphan()
        return mark_indexed(tree)

    def open_groups_as_dict(self, filename_or_obj: Any, *, acquisition: Any = None,
                            wells: Any = None, fields: Any = None, levels: Any = None,
                            labels: Any = True, storage_options: dict[str, Any] | None = None,
                            consolidated: bool | None = None, validate: bool = False,
                            on_missing: str = "raise", group: str | None = None,
                            drop_variables: str | Iterable[str] | None = None,
                            tables: bool = True, **kwargs: Any) -> dict[str, xr.Dataset]:
        _refuse_unknown("open_groups", kwargs, _TREE_PARAMS)
        opts = _options(acquisition, wells, fields, levels, labels, validate, on_missing,
                        tables)
        groups = plate_groups(filename_or_obj, opts, storage_options, consolidated)
        if group not in (None, "", "/"):
            prefix = "/" + group.strip("/")
            groups = {k: v for k, v in groups.items() if k == prefix or
                      k.startswith(prefix + "/")}
        return groups

    def open_dataset(self, filename_or_obj: Any, *, group: str | None = None,
                     level: int | str | None = None, acquisition: Any = None,
                     wells: Any = None, fields: Any = None,
                     levels: Any = None, labels: Any = True,
                     storage_options: dict[str, Any] | None = None,
                     consolidated: bool | None = None, validate: bool = False,
                     on_missing: str = "raise",
                     drop_variables: str | Iterable[str] | None = None, pad: bool = False,
                     channels: str = "exact", **kwargs: Any) -> xr.Dataset:
        """The plate stacked at one level, ``(well, field, <image dims>)``, or one node.

        ``level=0`` (the default when no ``group`` is given) stacks every selected field of
        that level into one lazy variable (see ``DataTree.hcs.stack``, whose ``pad`` and
        ``channels`` it takes); ``group="B/03/0/0"`` returns that node's Dataset instead.
        """
        _refuse_unknown("open_dataset", kwargs, _PARAMS)
        if group in (None, "", "/"):
            from .stack import stack_tree

            lv = 0 if level is None else level
            opts = _options(acquisition, wells, fields, [lv], False, validate, on_missing,
                            tables=False)
            tree = plate_tree(filename_or_obj, opts, storage_options, consolidated)
            # the tree holds just that level now: the first (and only) one listed
            ds = stack_tree(tree, tree.hcs.field_paths, tree.hcs.wells, 0, pad=pad,
                            channels=channels)  # type: ignore[arg-type]
            ds.attrs["ome"] = tree.attrs["ome"]
            ds.set_close(tree.close)
            return ds
        path = group.strip("/")
        parts = path.split("/")
        opts = _options(acquisition, wells if wells is not None or len(parts) < 2 else
                        [f"{parts[0]}/{parts[1]}"], fields, levels, labels, validate,
                        on_missing)
        tree = plate_tree(filename_or_obj, opts, storage_options, consolidated)
        try:
            node = tree[path]
        except KeyError:
            raise HcsSelectionError("no such node in the plate", path) from None
        if not isinstance(node, xr.DataTree):
            raise HcsSelectionError("is a variable, not a node", path)
        ds = node.to_dataset(inherit=True)
        if drop_variables is not None:
            ds = ds.drop_vars([drop_variables] if isinstance(drop_variables, str)
                              else list(drop_variables), errors="ignore")
        ds.set_close(tree.close)
        return ds
