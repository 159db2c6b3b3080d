"""Tables across a plate tree: list, read, concatenate, add, and ROI selection.

A table is a node ``<image>/tables/<name>`` (``/tables/<name>`` for plate-level tables) whose
attrs are the table group's attributes; its rows are in the node's ``encoding["ome_table"]``:
a :class:`~xarray_hcs.tables.TableSource` (read from the store on demand) or a DataFrame (added
in memory). The ``tables`` node's attrs list the names, as the store does.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ._xarray_internals import NodeSpec, assemble_tree, spec_of
from .edit import plate_of
from .errors import (
    HcsError,
    HcsExistsError,
    HcsMetadataError,
    HcsMissingWarning,
    HcsNotFoundError,
    HcsPathError,
    HcsSelectionError,
    HcsTableError,
    HcsWarning,
)
from .metadata import coord_transform, node_at
from .ngff import Well, check_relative_path
from .store import in_turn, run_sync
from .tables import (
    BACKENDS,
    ROI_COLUMNS,
    TABLES,
    TableMeta,
    TableSource,
    anndata_columns,
    held_rows,
    normalize_table,
    table_for_writing,
)

__all__ = ["list_tables", "read_table_node", "concat_tables", "add_table", "remove_table",
           "table_nodes", "roi"]

#: columns ``concat_tables`` adds in front of every table's own
KEY_COLUMNS = ("row", "column", "field")


_Field = tuple[str, str, str, int | None, xr.DataTree]


def _fields(tree: xr.DataTree, acquisition: int | None) -> list[_Field]:
    """(row, column, field, acquisition, node) of every field in the tree, in plate order."""
    out = []
    plate = plate_of(tree)
    for w in plate.wells:
        rnode = tree.children.get(w.row)
        wnode = rnode.children.get(w.column) if rnode is not None else None
        if wnode is None:
            continue
        well = Well.from_dict(wnode.attrs["ome"]["well"], f"/{w.path}")
        children = wnode.children
        for im in well.images:
            node = children.get(im.path)
            if node is None:
                continue
            if acquisition is not None and im.acquisition != acquisition:
                continue
            out.append((w.row, w.column, im.path, im.acquisition, node))
    return out


def table_nodes(node: xr.DataTree) -> dict[str, xr.DataTree]:
    """``{name: table node}`` of one image (or the plate) node, in the listed order."""
    tnode = node.children.get(TABLES) if node is not None else None
    if tnode is None:
        return {}
    listed = tnode.attrs.get(TABLES, [])
    names = [n for n in listed if n in tnode.children]
    return {n: tnode.children[n] for n in names}


def _acq_id(tree: xr.DataTree, acquisition: int | str | None) -> int | None:
    if acquisition is None:
        return None
    from .tree import resolve_acquisition

    return resolve_acquisition(plate_of(tree), acquisition, "/")


def list_tables(tree: xr.DataTree, mode: str = "common", acquisition: int | str | None = None,
                path: str | None = None, kind: str | Sequence[str] | None = None
                ) -> list[str]:
    """Names of the tables of every field (``"common"``: in all of them; ``"all"``: in any),
    or of the node at ``path`` (``""`` for plate-level tables); only those of ``kind``
    (table types, e.g. ``"feature_table"``) if given."""
    kinds = None if kind is None else {kind} if isinstance(kind, str) else set(kind)

    def names(node: xr.DataTree) -> list[str]:
        return [n for n, t in table_nodes(node).items()
                if kinds is None or _meta(t).type in kinds]

    if path is not None:
        node = node_at(tree, path)
        if node is None:
            raise HcsSelectionError("no such node in the tree", f"/{path.strip('/')}")
        return names(node)
    if mode not in ("common", "all"):
        raise ValueError(f"mode must be 'common' or 'all', got {mode!r}")
    per_field = [names(node) for *_, node in _fields(tree, _acq_id(tree, acquisition))]
    if not per_field:
        return []
    ordered = list(dict.fromkeys(n for names in per_field for n in names))
    if mode == "all":
        return ordered
    common = set(per_field[0]).intersection(*map(set, per_field[1:]))
    return [n for n in ordered if n in common]


def _meta(node: xr.DataTree) -> TableMeta:
    return TableMeta.from_attrs(dict(node.attrs), node.path)


async def _read(node: xr.DataTree, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    return await held_rows(node.encoding.get("ome_table"), _meta(node), node.path, columns)


def _table_node(tree: xr.DataTree, path: str, name: str) -> tuple[xr.DataTree, xr.DataTree]:
    """(the node at ``path``, its table ``name``), or an HcsSelectionError naming what lacks."""
    node = node_at(tree, path)
    if node is None:
        raise HcsSelectionError("no such node in the tree", f"/{path.strip('/')}")
    tables = table_nodes(node)
    if name not in tables:
        raise HcsSelectionError(f"has no table {name!r} (it has: {list(tables) or 'none'})",
                                node.path)
    return node, tables[name]


def read_table_node(tree: xr.DataTree, path: str, name: str,
                    columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The table ``name`` of the image (or plate, ``path=""``) at ``path``."""
    return run_sync(_read(_table_node(tree, path, name)[1], _columns(columns)))


def _columns(columns: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if columns is None:
        return None
    return (columns,) if isinstance(columns, str) else tuple(columns)


def concat_tables(tree: xr.DataTree, name: str, acquisition: int | str | None = None,
                  strict: bool = True, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One DataFrame of table ``name`` over every field; see ``HcsAccessor.concat_tables``."""
    acq = _acq_id(tree, acquisition)
    fields = _fields(tree, acq)
    with_acq = bool(plate_of(tree).acquisitions)
    jobs, keys = [], []
    for r, c, f, a, fnode in fields:
        node = table_nodes(fnode).get(name)
        if node is None:
            if strict:
                raise HcsNotFoundError(f"has no table {name!r} (pass strict=False to skip "
                                       "fields without it)", f"/{r}/{c}/{f}")
            continue
        jobs.append(node)
        keys.append((r, c, f, a))
    if not jobs and fields:  # a misspelt name would give an empty frame without a word
        held = sorted({t for *_, fnode in fields for t in table_nodes(fnode)})
        raise HcsSelectionError(f"no field has a table {name!r} (the fields' tables: "
                                f"{held or 'none'})", "/")
    blocks = run_sync(_read_blocks(jobs, strict, _columns(columns)))
    front_names = [*KEY_COLUMNS, *(("acquisition",) if with_acq else ())]
    if not blocks:
        return pd.DataFrame(columns=front_names)
    return _labelled(keys, blocks, with_acq)


#: (positions of the tables in the job list, their row counts, their rows one under another)
_Block = tuple[list[int], list[int], pd.DataFrame]


async def _read_blocks(nodes: list[xr.DataTree], strict: bool,
                       columns: tuple[str, ...] | None) -> list[_Block]:
    """The tables of ``nodes`` as blocks of rows: parquet tables of one kind together (see
    :func:`~xarray_hcs.tables.parquet_block`), every other table on its own."""
    from .tables import _required_bytes, parquet_block

    groups: dict[tuple[Any, ...], list[int]] = {}
    single = []
    for i, n in enumerate(nodes):
        held = n.encoding.get("ome_table")
        if isinstance(held, TableSource) and held._cache is None and n.attrs.get(
                "backend") == "parquet":
            meta = _meta(n)
            groups.setdefault((id(held.ps), meta.key, meta.key_type), []).append(i)
        else:
            single.append(i)
    blocks: list[_Block] = []
    for members in groups.values():
        if len(members) < 2:
            single.extend(members)
            continue
        held0 = nodes[members[0]].encoding["ome_table"]
        try:
            raws = await held0.ps.gather(*(
                _required_bytes(held0.ps, nodes[i].encoding["ome_table"].path, "table.parquet")
                for i in members))
        except HcsError:
            single.extend(members)  # one by one: strict raises, lenient warns and skips
            continue
        block = parquet_block(raws, _meta(nodes[members[0]]), columns)
        if block is None:
            single.extend(members)
            continue
        blocks.append((members, block[1], block[0]))
    single.sort()
    frames = await _gather([nodes[i] for i in single], strict, columns)
    for i, df in zip(single, frames, strict=True):
        if df is not None:
            blocks.append(([i], [len(df)], df))
    return blocks


def _repeated(values: list[str], counts: np.ndarray) -> Any:
    """``values[i]`` repeated ``counts[i]`` times, as pandas strings: taken from the distinct
    values in Arrow (building the strings one by one costs 10x more at plate scale)."""
    import pyarrow as pa

    distinct = list(dict.fromkeys(values))
    pos = {v: i for i, v in enumerate(distinct)}
    idx = np.repeat(np.array([pos[v] for v in values], dtype=np.int32), counts)
    arr = pa.array(distinct, type=pa.large_string()).take(pa.array(idx))
    return pd.array(arr, dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def _labelled(keys: list[tuple[str, str, str, int | None]], blocks: list[_Block],
              with_acq: bool) -> pd.DataFrame:
    """The blocks' rows in plate order, with ``row``, ``column``, ``field`` (``acquisition``)
    and the original index in front, indexed ``{row}_{column}_{field}_{index}``.

    Built column-wise over the whole plate (one concat, repeated key arrays), not per table:
    per-table frames cost ~1 ms each, which at 384 fields is most of the time.
    """
    frames = [b[2] for b in blocks]
    body = pd.concat(frames, axis=0) if len(frames) > 1 else frames[0]
    # each row's index name: tables of different index keys give each key its own column
    index_names = [df.index.name if df.index.name is not None else "index" for df in frames]
    row_name = np.repeat(np.arange(len(frames)), [len(df) for df in frames])
    # where each table's rows are in ``body``, then the tables in plate order
    spans: dict[int, tuple[int, int]] = {}
    start = 0
    for positions, lengths, _ in blocks:
        for pos, n in zip(positions, lengths, strict=True):
            spans[pos] = (start, n)
            start += n
    order = sorted(spans)
    perm = np.concatenate([np.arange(spans[p][0], spans[p][0] + spans[p][1]) for p in order])
    if not np.array_equal(perm, np.arange(len(perm))):
        body = body.take(perm)
        row_name = row_name[perm]
    counts = np.array([spans[p][1] for p in order], dtype=np.int64)
    keys = [keys[p] for p in order]
    orig = body.index
    index = _row_names(keys, counts, orig, "_")
    if not index.is_unique:
        # "_" also occurs in field paths and table indexes ("0_1" + "x" is "0" + "1_x"):
        # "/" never does in a row, column or field name, so that form is unique
        index = _row_names(keys, counts, orig, "/")
        warnings.warn("concat_tables: the '{row}_{column}_{field}_{index}' row names repeat "
                      "(a field path or index holds '_'), so rows are named "
                      "'{row}/{column}/{field}/{index}'", HcsWarning, stacklevel=4)
    front: dict[str, Any] = {name: _repeated([k[i] for k in keys], counts)
                             for i, name in enumerate(KEY_COLUMNS)}
    if with_acq:
        front["acquisition"] = np.repeat(np.array([-1 if k[3] is None else k[3]
                                                   for k in keys], dtype=np.int64), counts)
    distinct = list(dict.fromkeys(index_names))
    body = body.set_axis(index, axis=0)
    for name in front:  # the table's own column of that name must say the same, or it stays
        if name in body.columns:
            _same_as_key(body[name], front[name], name)
    if len(distinct) == 1:
        if distinct[0] in body.columns:
            _same_as_key(body[distinct[0]], orig.to_numpy(), distinct[0])
        front[distinct[0]] = orig.to_numpy()
    else:
        values = orig.to_numpy()
        for name in distinct:
            mine = np.isin(row_name, [i for i, n in enumerate(index_names) if n == name])
            col = (body[name].to_numpy(dtype=object, copy=True) if name in body.columns
                   else np.full(len(body), None, dtype=object))
            if name in body.columns:
                _same_as_key(body[name][mine], values[mine], name)
            col[mine] = values[mine]
            front[name] = pd.Series(col, index=index).infer_objects().to_numpy()
    body = body.drop(columns=[c for c in front if c in body.columns])
    for pos, (name, values) in enumerate(front.items()):
        body.insert(pos, name, values)
    return body


def _row_names(keys: list[tuple[str, str, str, int | None]], counts: np.ndarray,
               orig: pd.Index, sep: str) -> pd.Index:
    prefixes = np.array([f"{r}{sep}{c}{sep}{f}{sep}" for r, c, f, _ in keys], dtype=object)
    return pd.Index(np.repeat(prefixes, counts) + orig.to_numpy().astype(str).astype(object),
                    dtype=object)


def _same_as_key(column: pd.Series, key: Any, name: str) -> None:
    """A table column that shares a name with a column concat_tables adds must hold the same
    values (then it is one column), else it would be overwritten: refuse."""
    mine = column.to_numpy(dtype=object)
    theirs = np.asarray(key, dtype=object)
    held = pd.notna(mine)
    if not np.array_equal(np.asarray(mine[held], dtype=str), np.asarray(theirs[held],
                                                                          dtype=str)):
        raise HcsTableError(
            f"a table has a column {name!r} whose values differ from the {name!r} that "
            "concat_tables gives every row (the well's, or the table's index): rename the "
            "table's column", None)


async def _gather(nodes: list[xr.DataTree], strict: bool,
                  columns: tuple[str, ...] | None = None) -> list[pd.DataFrame | None]:
    async def one(node: xr.DataTree) -> pd.DataFrame | None:
        try:
            return await _read(node, columns)
        except HcsError as e:
            if strict:
                raise
            warnings.warn(f"{e}; skipped", HcsMissingWarning, stacklevel=4)
            return None

    if all(_inline(n) for n in nodes):  # local files: read in turn, tasks only add overhead
        return await in_turn(*(one(n) for n in nodes))
    return list(await asyncio.gather(*(one(n) for n in nodes)))


def _inline(node: xr.DataTree) -> bool:
    held = node.encoding.get("ome_table")
    return not isinstance(held, TableSource) or held.ps.reads_inline


def add_table(tree: xr.DataTree, path: str, name: str, df: pd.DataFrame,
              kind: str = "generic_table", backend: str = "parquet",
              index_key: str | None = None, index_type: str | None = None,
              region: str | None = None, instance_key: str | None = None,
              overwrite: bool = False) -> xr.DataTree:
    """A new tree with ``df`` as table ``name`` of the image (or plate) at ``path``."""
    path = path.strip("/")
    where = f"/{path}/{TABLES}/{name}" if path else f"/{TABLES}/{name}"
    check_relative_path(name, "table name", where, parts=1)
    node = node_at(tree, path)
    if node is None:
        raise HcsSelectionError("no such node in the tree", f"/{path}")
    parent = node.parent
    if path and ("multiscales" not in node.attrs.get("ome", {}) or parent is None
                 or "well" not in parent.attrs.get("ome", {})):
        raise HcsSelectionError("tables belong to a field (row/column/field) or to the plate "
                                '(path="")', f"/{path}")
    if not path and TABLES in plate_of(tree).rows:
        raise HcsPathError(f"the plate has a row named {TABLES!r}, so its group cannot also "
                           "hold the plate's tables; add the table to a field", where)
    if backend not in BACKENDS:
        raise HcsMetadataError(f"unknown table backend {backend!r} (known: "
                               f"{', '.join(BACKENDS)})", where)
    if not isinstance(kind, str) or not kind:
        raise HcsMetadataError(f"table kind must be a non-empty string, got {kind!r}", where)
    existing = table_nodes(node)
    if name in existing and not overwrite:
        raise HcsExistsError(f"table {name!r} exists (pass overwrite=True to replace it)",
                             where)
    key = index_key or (df.index.name if isinstance(df, pd.DataFrame) else None) or (
        "label" if kind in ("feature_table", "masking_roi_table") else "index")
    if index_type is None:
        index_type = "int" if pd.api.types.is_integer_dtype(df.index) else "str"
    if kind in ("feature_table", "masking_roi_table") and instance_key is None:
        instance_key = key
    if region is not None:
        check_relative_path(region.removeprefix("../"), "table region", where)
    meta = TableMeta(kind, backend, "1", key, index_type,
                     region, instance_key)
    if meta.is_roi:
        missing = [c for c in ROI_COLUMNS if c not in df.columns]
        if missing:
            raise HcsTableError(f"a {kind} needs the columns {missing}", where)
    flat = table_for_writing(df, meta, where)  # every check writing will make, now
    if backend == "anndata":
        anndata_columns(flat, list(df.columns), where)
    table = normalize_table(df.copy(deep=False), meta, where)
    tpath = f"{path}/{TABLES}" if path else TABLES
    nodes: dict[str, NodeSpec | None] = {}
    _specs(tree, "", nodes)
    tnode = node.children.get(TABLES)
    tattrs = dict(tnode.attrs) if tnode is not None else {}
    names = [n for n in tattrs.get(TABLES, []) if n != name] + [name]
    nodes[tpath] = NodeSpec(attrs={**tattrs, TABLES: names})
    nodes[f"{tpath}/{name}"] = NodeSpec(attrs=meta.to_attrs(), encoding={"ome_table": table})
    return assemble_tree(nodes)


def remove_table(tree: xr.DataTree, path: str, name: str) -> xr.DataTree:
    """A new tree without table ``name`` of the image (or plate, ``path=""``) at ``path``."""
    path = path.strip("/")
    node, _ = _table_node(tree, path, name)
    tpath = f"{path}/{TABLES}" if path else TABLES
    gone = f"{tpath}/{name}"
    nodes: dict[str, NodeSpec | None] = {}
    _specs(tree, "", nodes)
    for p in [p for p in nodes if p == gone or p.startswith(gone + "/")]:
        del nodes[p]
    tattrs = dict(node.children[TABLES].attrs)
    nodes[tpath] = NodeSpec(attrs={**tattrs, TABLES: [n for n in tattrs.get(TABLES, [])
                                                      if n != name]})
    return assemble_tree(nodes)


def _specs(node: xr.DataTree, path: str, out: dict[str, NodeSpec | None]) -> None:
    out[path] = spec_of(node)
    for name, child in node.children.items():
        _specs(child, f"{path}/{name}" if path else name, out)


def _roi_number(value: Any, column: str, index: Any, where: str) -> float:
    """A ROI bound as a finite float: NaN or infinity would select pixels nobody chose."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if not np.isfinite(out):
        raise HcsTableError(f"ROI {index!r} has no finite {column}_micrometer ({value})",
                            where)
    return out


def roi(tree: xr.DataTree, path: str, name: str, index: Any, level: int | str = 0
        ) -> xr.Dataset:
    """The pixels of ROI ``index`` of ROI table ``name`` of field ``path``, at ``level``."""
    fnode = node_at(tree, path)
    if fnode is None:
        raise HcsSelectionError("no such node in the tree", f"/{path.strip('/')}")
    tables = table_nodes(fnode)
    if name not in tables:
        raise HcsSelectionError(f"has no table {name!r}", fnode.path)
    meta = _meta(tables[name])
    if not meta.is_roi:
        raise HcsTableError(f"is a {meta.type}, not a ROI table", tables[name].path)
    df = run_sync(_read(tables[name]))
    if index not in df.index:
        alt = str(index) if not isinstance(index, str) else (
            int(index) if index.isdigit() else index)
        if alt not in df.index:
            raise HcsSelectionError(f"has no ROI {index!r}", tables[name].path)
        index = alt
    row = df.loc[index]
    from .stack import level_path

    lnode = node_at(fnode, level_path(fnode, level))
    if lnode is None:
        raise HcsSelectionError(f"has no level {level!r}", fnode.path)
    ds = lnode.to_dataset()
    # ROIs are in micrometres from the image's own origin (Fractal's convention, which ngio
    # follows; ``*_micrometer_original`` columns hold plate-wide positions): pixel i covers
    # [i * step, (i + 1) * step), and the ROI takes the pixels from round(start / step) on
    sel = {}
    for axis in ("x", "y", "z"):
        dim = next((d for d in ds.dims if str(d).lower() == axis), None)
        start, length = row.get(f"{axis}_micrometer"), row.get(f"len_{axis}_micrometer")
        if dim is None or start is None or length is None:
            continue  # a 2D ROI table of a 3D image: the whole axis
        start, length = _roi_number(start, axis, index, tables[name].path), _roi_number(
            length, f"len_{axis}", index, tables[name].path)
        if length < 0:
            raise HcsTableError(f"ROI {index!r} has a negative len_{axis}_micrometer "
                                f"({length})", tables[name].path)
        n = ds.sizes[dim]
        step, _ = coord_transform(lnode, str(dim), n, (1.0, 0.0))
        lo = min(n, max(0, int(round(start / step))))
        hi = min(n, max(lo, int(round(min((start + length) / step, n)))))
        sel[dim] = slice(lo, hi)
    return ds.isel(sel)
