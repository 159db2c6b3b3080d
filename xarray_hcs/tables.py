"""Per-image and plate-level tables: the ngio / Fractal on-disk format ⇄ pandas.

A table lives in ``<image>/tables/<name>/`` (or ``<plate>/tables/<name>/``); the ``tables``
group's attributes list the names (``{"tables": [...]}``, top level, not under ``ome``, in both
zarr formats) and each table group's attributes say what it is (``type``, ``table_version``,
``backend``, ``index_key``, ``index_type``, and for label-linked tables ``region`` and
``instance_key``). Four backends hold the rows:

- ``anndata``: an AnnData group (floats and booleans in ``X``, their names in ``var``; strings
  and integers in ``obs``; the index in ``obs``);
- ``parquet`` / ``csv``: ``table.parquet`` / ``table.csv`` in the group;
- ``json``: the columns as the attributes of a ``table`` sub-group.

As pandas, a table is what ngio gives: the index named ``index_key`` and cast to
``index_type``, then the ``X`` columns, then the ``obs`` columns.

AnnData groups are decoded here directly, one concurrent read per element, for the encodings
AnnData writes for tables (dense arrays, strings, categoricals, nullable arrays): the AnnData
reader reads the whole object (``uns``, ``obsm``, ``layers``, ...) one element at a time, which
is what makes concatenating a plate's tables slow. Anything else falls back to AnnData itself.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import HcsError, HcsMetadataError, HcsNotFoundError, HcsTableError
from .ngff import check_relative_path
from .store import group_documents

if TYPE_CHECKING:

    from .store import PlateStore

__all__ = ["BACKENDS", "ROI_COLUMNS", "TABLE_TYPES", "TableMeta", "TableSource",
           "anndata_columns", "normalize_table", "parquet_block", "parse_tables_list",
           "read_table", "select_columns", "table_documents", "tables_group_documents"]

#: the table types ngio and Fractal write; others are read as generic tables
TABLE_TYPES = ("roi_table", "masking_roi_table", "feature_table", "condition_table",
               "generic_roi_table", "generic_table")
#: ``backend`` values we read and write (``anndata_v1`` and ``experimental_json_v1`` are
#: older names of the same formats)
BACKENDS = ("anndata", "parquet", "csv", "json")
_BACKEND_ALIASES = {"anndata_v1": "anndata", "experimental_json_v1": "json", "json_v1": "json"}
#: the columns of a ROI table, in micrometres
ROI_COLUMNS = ("x_micrometer", "y_micrometer", "z_micrometer",
               "len_x_micrometer", "len_y_micrometer", "len_z_micrometer")
TABLES = "tables"
#: the index ngio reads when a table states no ``index_key`` / ``index_type``
_DEFAULT_INDEX = {"feature_table": ("label", "int"), "masking_roi_table": ("label", "int"),
                  "roi_table": ("FieldIndex", "str")}


def backend_name(name: Any, where: str) -> str:
    if not isinstance(name, str):
        raise HcsMetadataError(f"table backend must be a string, got {name!r}", where)
    name = _BACKEND_ALIASES.get(name, name)
    if name not in BACKENDS:
        raise HcsMetadataError(f"unknown table backend {name!r} (known: {', '.join(BACKENDS)})",
                               where)
    return name


@dataclass(frozen=True)
class TableMeta:
    """The attributes of one table group, checked; ``extra`` keeps every other key."""

    type: str = "generic_table"
    backend: str = "parquet"
    version: str = "1"
    index_key: str | None = None
    index_type: str | None = None
    region: str | None = None
    instance_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``fractal_table_version`` instead of ``table_version`` (older files): kept as written
    legacy_version_key: bool = False

    @classmethod
    def from_attrs(cls, attrs: Any, where: str) -> TableMeta:
        if not isinstance(attrs, dict):
            raise HcsMetadataError("table attributes must be a JSON object", where)
        a = dict(attrs)
        legacy = "table_version" not in a and "fractal_table_version" in a
        version = a.pop("table_version", None)
        if version is None:
            version = a.pop("fractal_table_version", "1")
        else:
            a.pop("fractal_table_version", None)
        kind = a.pop("type", "generic_table")
        if not isinstance(kind, str):
            raise HcsMetadataError(f"table type must be a string, got {kind!r}", where)
        backend = a.pop("backend", None)
        if backend is None:
            # Fractal's first tables had no backend key: AnnData groups say so themselves
            backend = "anndata" if a.get("encoding-type") == "anndata" else None
            if backend is None:
                raise HcsMetadataError("table has no 'backend' attribute", where)
        backend = backend_name(backend, where)
        index_key = a.pop("index_key", None)
        index_type = a.pop("index_type", None)
        if index_key is not None and not isinstance(index_key, str):
            raise HcsMetadataError(f"index_key must be a string, got {index_key!r}", where)
        if index_type not in (None, "int", "str"):
            raise HcsMetadataError(f"index_type must be 'int' or 'str', got {index_type!r}",
                                   where)
        region = a.pop("region", None)
        if region is not None:
            if not isinstance(region, dict) or not isinstance(region.get("path"), str):
                raise HcsMetadataError(f"region must be {{'path': str}}, got {region!r}", where)
            region = region["path"]
        instance_key = a.pop("instance_key", None)
        if instance_key is not None and not isinstance(instance_key, str):
            raise HcsMetadataError(f"instance_key must be a string, got {instance_key!r}",
                                   where)
        return cls(kind, backend, str(version), index_key, index_type, region, instance_key, a,
                   legacy)

    def to_attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["type"] = self.type
        out["backend"] = self.backend
        out["fractal_table_version" if self.legacy_version_key else "table_version"] = (
            self.version)
        if self.index_key is not None:
            out["index_key"] = self.index_key
        if self.index_type is not None:
            out["index_type"] = self.index_type
        if self.region is not None:
            out["region"] = {"path": self.region}
        if self.instance_key is not None:
            out["instance_key"] = self.instance_key
        return out

    @property
    def key(self) -> str | None:
        """The index column as ngio reads the table: ``index_key``, else, for the types
        whose index ngio knows (Fractal v1 tables state none), ``instance_key`` or the type's
        own ("label" for feature and masking ROI tables, "FieldIndex" for ROI tables)."""
        if self.index_key is not None:
            return self.index_key
        default = _DEFAULT_INDEX.get(self.type)
        if default is None:
            return None
        if self.instance_key and self.type in ("feature_table", "masking_roi_table"):
            return self.instance_key
        return default[0]

    @property
    def key_type(self) -> str | None:
        """``index_type``, else the type's own as ngio reads it (label indexes are ints)."""
        if self.index_type is not None:
            return self.index_type
        default = _DEFAULT_INDEX.get(self.type)
        return None if default is None else default[1]

    @property
    def is_roi(self) -> bool:
        return self.type in ("roi_table", "masking_roi_table", "generic_roi_table")


def parse_tables_list(attrs: Any, where: str) -> list[str]:
    """The names a ``tables`` group lists, each a safe single path component."""
    if not isinstance(attrs, dict):
        raise HcsMetadataError("tables group attributes must be a JSON object", where)
    names = attrs.get(TABLES)
    if names is None:
        raise HcsMetadataError("tables group has no 'tables' list", where)
    if not isinstance(names, list):
        raise HcsMetadataError(f"'tables' must be a list of names, got {names!r}", where)
    for n in names:
        check_relative_path(n, "table name", where, parts=1)
    if len(set(names)) != len(names):
        raise HcsMetadataError(f"'tables' lists a name twice: {names}", where)
    return list(names)


# ---------------------------------------------------------------------------- normalizing


def normalize_table(df: pd.DataFrame, meta: TableMeta, where: str, unique: bool = True
                    ) -> pd.DataFrame:
    """Index named ``meta.key`` and cast to ``meta.key_type``, as ngio loads it; checked
    (``unique=False`` leaves the uniqueness check to the caller)."""
    if not df.columns.is_unique:
        dup = df.columns[df.columns.duplicated()][:3].tolist()
        raise HcsTableError(f"the table names columns twice ({dup})", where)
    key = meta.key
    if key is not None and df.index.name != key:
        if key in df.columns:
            # not set_index: on a frame of one wide block, pandas takes time quadratic in
            # the number of columns for it (minutes for a csv of 200,000 columns)
            index = pd.Index(df[key], name=key)
            df = df.drop(columns=key)
            df.index = index
        elif df.index.name is None:
            df.index.name = key
        else:
            raise HcsTableError(f"index_key {key!r} is neither the index nor a column", where)
    kind = meta.key_type
    if kind == "int" and not pd.api.types.is_integer_dtype(df.index):
        try:
            df.index = _int_index(df.index)
        except (TypeError, ValueError, OverflowError):
            raise HcsTableError("index_type is 'int' but the index holds "
                                f"{df.index[:3].tolist()}...", where) from None
    elif kind == "str" and not pd.api.types.is_string_dtype(df.index):
        df.index = df.index.astype(str)
    if unique and not df.index.is_unique:
        dup = df.index[df.index.duplicated()][:3].tolist()
        raise HcsTableError(f"the index is not unique (repeated: {dup})", where)
    return df


def _int_index(index: pd.Index) -> pd.Index:
    """An index of integers from one of integer-valued numbers or of digit strings ("1", as
    Fractal writes labels), exactly: never rounding "1.5" or 1.5."""
    values = index.to_numpy()
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise ValueError("not integers")
        return pd.Index(values.astype(np.int64), name=index.name)
    out = [int(v) if isinstance(v, str) and v.strip().lstrip("+-").isdigit() else
           int(v) if isinstance(v, int | np.integer) and not isinstance(v, bool) else None
           for v in values]
    if any(v is None for v in out):
        raise ValueError("not integers")
    return pd.Index(np.asarray(out, dtype=np.int64), name=index.name)


def parquet_block(raws: list[bytes], meta: TableMeta, columns: tuple[str, ...] | None = None
                  ) -> tuple[pd.DataFrame, list[int]] | None:
    """Many parquet tables of one kind as one DataFrame (and each one's row count), converted
    to pandas once: per-table conversion costs more than reading. None if they do not line up
    (schemas that cannot be unified, an unreadable file, a repeated index): then the caller
    reads them one by one, which names the culprit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = None if columns is None else {*columns, *([meta.key] if meta.key else [])}

    def read(r: bytes) -> Any:
        f = pq.ParquetFile(pa.BufferReader(r))
        cols = None if want is None else [c for c in f.schema_arrow.names if c in want]
        _check_cells(f.metadata.num_rows, len(f.schema_arrow.names) if cols is None
                     else len(cols), "")
        return f.read(columns=cols, use_threads=False)

    try:
        if len(raws) >= 64:  # decoding releases the GIL: spread it over the cores
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as ex:
                tables = list(ex.map(read, raws, chunksize=16))
        else:
            tables = [read(r) for r in raws]
        big = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, OSError, HcsError):
        return None
    lengths = [t.num_rows for t in tables]
    try:
        df = normalize_table(big.to_pandas(), meta, "", unique=False)
    except (HcsError, KeyError, TypeError, ValueError, IndexError, RecursionError,
            pa.ArrowException):
        return None
    tid = np.repeat(np.arange(len(lengths)), lengths)
    if pd.MultiIndex.from_arrays([tid, df.index]).has_duplicates:
        return None
    if columns is not None and any(c not in df.columns for c in columns):
        return None  # one by one, which names the table that lacks them
    return (df if columns is None else df[list(columns)]), lengths


def table_for_writing(df: pd.DataFrame, meta: TableMeta, where: str) -> pd.DataFrame:
    """The index as a column named ``index_key`` (parquet, csv and json have no index)."""
    if not isinstance(df, pd.DataFrame):
        raise HcsTableError(f"a table must be a pandas DataFrame, got {type(df).__name__}",
                            where)
    if not df.columns.is_unique:
        raise HcsTableError(f"column names repeat: {df.columns[df.columns.duplicated()]}",
                            where)
    if not df.index.is_unique:
        raise HcsTableError("the index is not unique", where)
    key = meta.key or df.index.name
    if key is None:  # no index key and an unnamed index: the rows have no index to keep
        return df.reset_index(drop=True)
    if key in df.columns:
        raise HcsTableError(f"index_key {key!r} is also a column", where)
    out = df.copy(deep=False)
    out.index.name = key
    return out.reset_index()


# ---------------------------------------------------------------------------- reading


async def read_table(ps: PlateStore, path: str, meta: TableMeta,
                     columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The table group at ``path`` (relative to the plate root) as a DataFrame; only
    ``columns`` (and the index) if given, reading no more of the store than the format needs.
    """
    where = ps.where(path)
    want = None if columns is None else {*columns, *([meta.key] if meta.key else [])}
    if meta.backend == "parquet":
        raw = await _required_bytes(ps, path, "table.parquet")
        df = _read_parquet(raw, where, want)
    elif meta.backend == "csv":
        raw = await _required_bytes(ps, path, "table.csv")
        _check_csv_header(raw, where)
        try:
            df = pd.read_csv(io.BytesIO(raw), usecols=None if want is None else
                             (lambda c: c in want))
        except (ValueError, pd.errors.ParserError) as e:
            raise HcsTableError(f"table.csv cannot be parsed ({e})", where) from None
    elif meta.backend == "json":
        attrs = await ps.group_attrs(f"{path}/table")
        if attrs is None:
            raise HcsNotFoundError("json table has no 'table' sub-group", where)
        df = _frame_from_columns(attrs, where)
    else:
        df = await _AnnDataReader(ps, path).frame(want)
    return select_columns(normalize_table(df, meta, where), columns, where)


def select_columns(df: pd.DataFrame, columns: tuple[str, ...] | None, where: str
                   ) -> pd.DataFrame:
    if columns is None:
        return df
    missing = [c for c in columns if c not in df.columns]
    if missing:
        from .errors import HcsSelectionError

        raise HcsSelectionError(f"table has no columns {missing}", where)
    return df[list(columns)]


async def _required_bytes(ps: PlateStore, path: str, name: str) -> bytes:
    from .store import join_path

    raw = await ps._get(join_path(ps.root, path, name))
    if raw is None:
        raise HcsNotFoundError(f"table file {name!r} is absent", ps.where(f"{path}/{name}"))
    return raw


def _read_parquet(raw: bytes, where: str, want: set[str] | None = None) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # ParquetFile, not read_table: the dataset machinery behind read_table costs ~1 ms a
        # file, four times the read itself for a table of a few hundred rows
        f = pq.ParquetFile(pa.BufferReader(raw))
        cols = None if want is None else [c for c in f.schema_arrow.names if c in want]
        _check_cells(f.metadata.num_rows, len(f.schema_arrow.names) if cols is None
                     else len(cols), where)
        table = f.read(columns=cols, use_threads=False)
    except HcsError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise HcsTableError(f"table.parquet cannot be read ({e})", where) from None
    try:
        return table.to_pandas()
    except (KeyError, TypeError, ValueError, IndexError, RecursionError,
            pa.ArrowException) as e:  # the file's pandas metadata is for pandas alone
        raise HcsTableError(f"table.parquet has pandas metadata that cannot be used "
                            f"({type(e).__name__}: {str(e)[:200]})", where) from None


def _check_csv_header(raw: bytes, where: str) -> None:
    """pandas renames a repeated csv column ("area", "area.1") without a word: refused, as
    parquet and AnnData tables with one are."""
    import csv

    first = raw.split(b"\n", 1)[0].decode("utf-8", "replace")
    try:
        names = next(csv.reader([first]), [])
    except csv.Error:
        return  # pandas says what is wrong with it
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise HcsTableError(f"table.csv names column {name!r} twice", where)
        seen.add(name)


#: at most this many cells (rows x columns) in one table: a small compressed file (a parquet
#: of repeated values, AnnData arrays of absent chunks) could otherwise decode to gigabytes
MAX_TABLE_CELLS = 2**28


def _check_cells(rows: int, columns: int, where: str) -> None:
    if rows * max(columns, 1) > MAX_TABLE_CELLS:
        raise HcsTableError(f"holds {rows * max(columns, 1)} cells, more than the "
                            f"{MAX_TABLE_CELLS} a table can have", where)


def _frame_from_columns(cols: Any, where: str) -> pd.DataFrame:
    if not isinstance(cols, dict) or not all(isinstance(v, list) for v in cols.values()):
        raise HcsTableError("json table must map column names to lists", where)
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise HcsTableError(f"columns have different lengths: {lengths}", where)
    return pd.DataFrame(cols)


class _AnnDataReader:
    """Reads ``X``, ``obs`` and ``var`` of an AnnData group; nothing else is a table's."""

    def __init__(self, ps: PlateStore, path: str) -> None:
        self.ps = ps
        self.path = path
        self._want: set[str] | None = None
        self._all = ps.gather
        self._cells = 0  # read so far, against MAX_TABLE_CELLS

    def where(self, sub: str = "") -> str:
        return self.ps.where(f"{self.path}/{sub}" if sub else self.path)

    async def frame(self, want: set[str] | None = None) -> pd.DataFrame:
        """``X`` and ``obs`` as one DataFrame (``want``: only these columns, and the index)."""
        self._want = want
        var = await self.elem("var")
        need_x = want is None or not isinstance(var, _Columns) or any(
            str(v) in want for v in var.index)
        x, obs = await self._all(self.elem("X") if need_x else _none(), self.elem("obs"))
        if obs is None:
            raise HcsNotFoundError("AnnData table has no 'obs'", self.where())
        if not isinstance(obs, _Columns):
            raise HcsTableError("AnnData 'obs' is not a dataframe", self.where("obs"))
        n = len(obs.index)
        data: dict[Any, Any] = {}
        if x is not None:
            names = list(var.index) if isinstance(var, _Columns) else None
            shape = tuple(np.shape(x))  # checked before a sparse X is made dense
            if len(shape) != 2 or shape[0] != n or (names is not None
                                                    and len(names) != shape[1]):
                raise HcsTableError(
                    f"X has shape {shape} but obs has {n} rows and var "
                    f"{None if names is None else len(names)}", self.where("X"))
            if names is not None:
                _check_column_names([str(v) for v in names], list(obs.data), self.where())
            x = np.asarray(x.toarray() if hasattr(x, "toarray") else x)
            for j, name in enumerate(names if names is not None else range(x.shape[1])):
                key = str(name) if names is not None else name
                if want is None or key in want:
                    data[key] = x[:, j]
        data.update(obs.data)
        # one DataFrame per table, built from columns: no per-element frames or assignments
        return pd.DataFrame(data, index=pd.Index(obs.index, name=obs.index_name), copy=False)

    async def elem(self, sub: str) -> Any:
        found = await self.ps.node(f"{self.path}/{sub}")
        if found is None:
            return None
        kind, attrs, doc = found
        enc = attrs.get("encoding-type")
        try:
            if enc == "dataframe":
                return await self._dataframe(sub, attrs)
            if enc == "categorical":
                return await self._categorical(sub, attrs)
            if enc in ("nullable-integer", "nullable-boolean", "nullable-string-array"):
                return await self._nullable(sub, enc)
            if kind == "array" and enc in (None, "array", "string-array"):
                return await self._array(sub, doc)
            if kind == "group" and enc in ("csr_matrix", "csc_matrix"):
                return await self._sparse(sub, attrs, enc)
            return await asyncio.to_thread(self._fallback, sub)
        except HcsError:
            raise
        except Exception as e:  # noqa: BLE001  zarr, numcodecs, AnnData raise many kinds
            raise HcsTableError(f"cannot decode AnnData element ({e!r})", self.where(sub)
                                ) from None

    async def _array(self, sub: str, doc: dict[str, Any]) -> np.ndarray:
        from ._small_arrays import read_small_array

        info = self.ps.info_of(f"{self.path}/{sub}", doc)
        # every array of the table counts: many columns of absent chunks add up too
        self._cells += int(np.prod(info.shape, dtype=object))
        _check_cells(self._cells, 1, self.where(sub))
        fast = await read_small_array(self.ps, info)
        if fast is not None:
            return fast
        arr = self.ps.zarr_array(info)
        data = await arr._async_array.getitem(())
        return np.asarray(data)

    async def _dataframe(self, sub: str, attrs: dict[str, Any]) -> _Columns:
        index_name = attrs.get("_index", "_index")
        order = attrs.get("column-order", [])
        if not isinstance(order, list):
            raise HcsTableError(f"column-order must be a list, got {order!r}", self.where(sub))
        # names of elements below this group: one safe path component each, never "../.."
        for name in (index_name, *order):
            check_relative_path(name, "AnnData element name", self.where(sub), parts=1)
        order = list(order)
        if len(set(map(str, order))) != len(order):
            raise HcsTableError(f"column-order names a column twice: {order}",
                                self.where(sub))
        if sub == "obs" and self._want is not None:  # only the columns asked for
            order = [c for c in order if c in self._want]
        cols = await self._all(*(self.elem(f"{sub}/{c}") for c in [index_name, *order]))
        if cols[0] is None:
            raise HcsNotFoundError(f"dataframe index {index_name!r} is absent",
                                   self.where(sub))
        index = _strings(cols[0])
        data = {}
        for c, v in zip(order, cols[1:], strict=True):
            if v is None:
                raise HcsNotFoundError(f"dataframe column {c!r} is absent", self.where(sub))
            if len(v) != len(index):
                raise HcsTableError(f"column {c!r} has {len(v)} rows, the index {len(index)}",
                                    self.where(sub))
            data[c] = _strings(v) if isinstance(v, np.ndarray) else v
        return _Columns(index, None if index_name == "_index" else index_name, data)

    async def _categorical(self, sub: str, attrs: dict[str, Any]) -> pd.Categorical:
        codes, cats = await self._all(self.elem(f"{sub}/codes"), self.elem(f"{sub}/categories"))
        dtype = pd.CategoricalDtype(pd.Index(_strings(cats), dtype=object),
                                    ordered=bool(attrs.get("ordered", False)))
        return pd.Categorical.from_codes(np.asarray(codes), dtype=dtype)

    async def _nullable(self, sub: str, enc: str) -> Any:
        values, mask = await self._all(self.elem(f"{sub}/values"), self.elem(f"{sub}/mask"))
        mask = np.asarray(mask, dtype=bool)
        if enc == "nullable-integer":
            return pd.arrays.IntegerArray(np.asarray(values), mask)
        if enc == "nullable-boolean":
            return pd.arrays.BooleanArray(np.asarray(values, dtype=bool), mask)
        out = pd.array(_strings(values), dtype="string")
        out[mask] = pd.NA
        return out

    async def _sparse(self, sub: str, attrs: dict[str, Any], enc: str) -> _Sparse:
        """A compressed sparse matrix, checked before use: scipy and numpy trust ``indptr``
        and ``indices`` and would read (or crash) outside the arrays on a damaged one."""
        where = self.where(sub)
        shape = attrs.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)):
            raise HcsTableError(f"{enc} shape must be two integers >= 0, got {shape!r}", where)
        data, indices, indptr = await self._all(
            self.elem(f"{sub}/data"), self.elem(f"{sub}/indices"), self.elem(f"{sub}/indptr"))
        for name, arr in (("data", data), ("indices", indices), ("indptr", indptr)):
            if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                raise HcsTableError(f"{enc} needs a one-dimensional {name!r} array", where)
        if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
            raise HcsTableError(f"{enc} indices and indptr must be integers", where)
        if data.dtype.kind not in "biuf":
            raise HcsTableError(f"{enc} data must be numeric, got {data.dtype}", where)
        major, minor = shape if enc == "csr_matrix" else shape[::-1]
        if len(indptr) != major + 1 or (major >= 0 and indptr[0] != 0) or np.any(
                np.diff(indptr.astype(np.int64)) < 0) or indptr[-1] != len(indices) \
                or len(indices) != len(data):
            raise HcsTableError(
                f"{enc} is inconsistent: indptr must hold {major + 1} values rising from 0 "
                f"to len(indices) = len(data); it holds {len(indptr)} "
                f"({indptr[:8].tolist()}{' ...' if len(indptr) > 8 else ''}), with "
                f"{len(indices)} indices and {len(data)} values", where)
        if len(indices) and (indices.min() < 0 or indices.max() >= minor):
            raise HcsTableError(f"{enc} has column indices outside [0, {minor})", where)
        _check_cells(shape[0], shape[1], where)
        self._cells += shape[0] * shape[1]
        _check_cells(self._cells, 1, where)
        return _Sparse(tuple(shape), enc == "csr_matrix", data, indices, indptr)

    def _fallback(self, sub: str) -> Any:
        """Encodings not decoded here (sparse X, awkward arrays, ...): AnnData reads them."""
        import zarr

        try:
            from anndata.io import read_elem
        except ImportError:  # pragma: no cover - anndata is in the tables extra
            raise HcsTableError("reading this AnnData element needs the 'anndata' package",
                                self.where(sub)) from None
        group = zarr.open_group(self.ps.store, path=f"{self.ps.root}/{self.path}".strip("/"),
                                mode="r")
        return read_elem(group[sub])


@dataclass(slots=True)
class _Sparse:
    """A checked compressed sparse matrix (rows: csr, columns: csc) that becomes dense."""

    shape: tuple[int, int]
    by_rows: bool
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray

    def toarray(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=self.data.dtype)
        major = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        where = (major, self.indices) if self.by_rows else (self.indices, major)
        np.add.at(out, where, self.data)  # repeated entries add up, as in scipy
        return out


async def _none() -> None:
    return None


@dataclass(slots=True)
class _Columns:
    """An AnnData dataframe element as columns, not yet a DataFrame (that is made once)."""

    index: Any
    index_name: str | None
    data: dict[str, Any]


def _check_column_names(x_names: list[str], obs_names: list[Any], where: str) -> None:
    """X's columns (var names) and obs's columns become one frame: a repeated name would keep
    one column and silently drop the others."""
    seen: set[str] = set()
    for name in [*x_names, *(str(c) for c in obs_names)]:
        if name in seen:
            raise HcsTableError(f"AnnData table names column {name!r} twice (var names and "
                                "obs columns must all differ)", where)
        seen.add(name)


def _strings(v: Any) -> Any:
    """Zarr string arrays come back as object or fixed-width arrays: as Python strings."""
    if isinstance(v, np.ndarray) and v.dtype.kind in ("U", "S", "O", "T"):
        return v.astype(object)
    return v


# ---------------------------------------------------------------------------- writing

_ANNDATA_LOCK = threading.Lock()  # anndata's zarr write format is a global setting


def table_documents(df: pd.DataFrame, meta: TableMeta, zarr_format: int, where: str
                    ) -> dict[str, bytes]:
    """The files of one table group (relative to the group), attributes included."""
    if meta.backend == "anndata":
        return _anndata_documents(df, meta, zarr_format, where)
    flat = table_for_writing(df, meta, where)
    docs: dict[str, bytes] = {}
    if meta.backend == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        try:
            pq.write_table(pa.Table.from_pandas(flat, preserve_index=False), buf)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise HcsTableError(f"cannot be written as parquet ({e})", where) from None
        docs["table.parquet"] = buf.getvalue()
    elif meta.backend == "csv":
        docs["table.csv"] = flat.to_csv(index=False).encode()
    else:
        # Python's JSON, as zarr writes attributes: NaN and ±Infinity survive the round trip
        # (pandas' to_json would write them as null)
        cols = {str(k): v for k, v in flat.to_dict(orient="list").items()}
        docs.update(group_documents("table", cols, zarr_format, allow_nan=True))
    docs.update(group_documents("", meta.to_attrs(), zarr_format, allow_nan=True))
    return docs


def tables_group_documents(names: list[str], other: dict[str, Any], zarr_format: int
                           ) -> dict[str, bytes]:
    return group_documents("", {**other, TABLES: list(names)}, zarr_format, allow_nan=True)


def _anndata_documents(df: pd.DataFrame, meta: TableMeta, zarr_format: int, where: str
                       ) -> dict[str, bytes]:
    """AnnData as ngio writes it: encoded directly (``_anndata_write``) when it is a plain
    measurement table, else serialised by AnnData itself into memory."""
    from ._anndata_write import anndata_documents

    flat = table_for_writing(df, meta, where)
    if meta.key or df.index.name:
        key = flat.columns[0]
        index = flat[key].astype(str).to_numpy(dtype=object)
        rest = list(flat.columns[1:])
    else:  # AnnData always has an index: the row numbers, as strings
        key, index, rest = None, np.arange(len(flat)).astype(str).astype(object), list(flat.columns)
    obs_cols, x_cols = anndata_columns(flat, rest, where)
    # strings as object arrays: AnnData writes those on every pandas (it has no writer for
    # pandas 3's Arrow-backed strings)
    obs = pd.DataFrame({c: _object_strings(flat[c]) for c in obs_cols},
                       index=pd.Index(index, name=key, dtype=object))
    x = flat[x_cols].to_numpy(dtype=np.float64 if len({str(flat[c].dtype) for c in x_cols}) > 1
                              else None) if x_cols else np.zeros((len(flat), 0))
    direct = anndata_documents(x, [str(c) for c in x_cols], obs, meta.to_attrs(), zarr_format)
    if direct is not None:
        return direct
    return _anndata_written(x, x_cols, obs, meta, zarr_format, where)


def _anndata_written(x: np.ndarray, x_cols: list[Any], obs: pd.DataFrame, meta: TableMeta,
                     zarr_format: int, where: str) -> dict[str, bytes]:
    """The table's files as AnnData writes them (into memory), for what
    ``_anndata_write`` does not encode."""
    import zarr
    from zarr.storage import MemoryStore

    try:
        import anndata as ad
    except ImportError:  # pragma: no cover
        raise HcsTableError("writing this AnnData table needs the 'anndata' package", where
                            ) from None
    var = pd.DataFrame(index=pd.Index([str(c) for c in x_cols], dtype=object))
    adata = ad.AnnData(X=x, obs=obs, var=var)
    store = MemoryStore()
    with _ANNDATA_LOCK:
        old = ad.settings.zarr_write_format, ad.settings.auto_shard_zarr_v3
        try:
            # order matters: AnnData refuses zarr v2 while sharding is on
            ad.settings.auto_shard_zarr_v3 = False
            ad.settings.zarr_write_format = zarr_format
            with warnings.catch_warnings():  # AnnData consolidates; zarr v3 warns about it
                warnings.simplefilter("ignore", UserWarning)
                adata.write_zarr(store)
        finally:
            ad.settings.zarr_write_format = old[0]
            ad.settings.auto_shard_zarr_v3 = old[1]
    group = zarr.open_group(store, mode="r+")
    group.attrs.update(meta.to_attrs())
    return {k: v.to_bytes() for k, v in store._store_dict.items()}


def anndata_columns(flat: pd.DataFrame, columns: list[Any], where: str
                    ) -> tuple[list[Any], list[Any]]:
    """(``obs`` columns, ``X`` columns) as ngio splits a table: floats and booleans in ``X``,
    integers and strings in ``obs``; anything else cannot be an AnnData table. The ``obs``
    columns and the index (the column of ``flat`` not in ``columns``) must be names of zarr
    nodes; ``X`` columns may be anything (AnnData stores them as strings)."""
    obs_cols, x_cols = [], []
    for c in columns:
        s = flat[c]
        if pd.api.types.is_bool_dtype(s) or (pd.api.types.is_numeric_dtype(s)
                                             and not pd.api.types.is_integer_dtype(s)):
            x_cols.append(c)
        elif pd.api.types.is_integer_dtype(s) or _all_strings(s):
            obs_cols.append(c)
        else:
            raise HcsTableError(f"column {c!r} ({s.dtype}) is neither numeric nor strings, "
                                "which AnnData tables cannot hold", where)
    from ._anndata_write import node_name_ok

    for c in [*obs_cols, *(c for c in flat.columns if c not in columns)]:
        if not node_name_ok(c):
            raise HcsTableError(f"column name {c!r} cannot be stored in an AnnData table (its "
                                "integer and string columns and its index need a non-empty "
                                "string without '/', not '.', '..' or '__...')", where)
    return obs_cols, x_cols


def _object_strings(s: pd.Series) -> Any:
    """The column's values (no index to align on), strings as Python objects."""
    if pd.api.types.is_integer_dtype(s):
        return s.to_numpy()
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        return pd.Categorical.from_codes(s.cat.codes, ordered=s.cat.ordered,
                                         categories=pd.Index(cats.astype(object), dtype=object))
    # as a categorical with object categories, which is what AnnData would make of a string
    # column on write (its own conversion infers pandas 3 Arrow strings, which it cannot write)
    values = s.to_numpy(dtype=object)
    cats = sorted({v for v in values if isinstance(v, str)})
    return pd.Categorical(values, categories=pd.Index(cats, dtype=object))


def _all_strings(s: pd.Series) -> bool:
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        s = pd.Series(cats.to_numpy(dtype=object) if cats.dtype == object else cats.to_numpy())
    if s.dtype != object:
        return pd.api.types.is_string_dtype(s.dtype)
    return all(isinstance(v, str) for v in s.dropna())





# ---------------------------------------------------------------------------- in the tree


async def held_rows(held: Any, meta: TableMeta, where: str,
                    columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The rows a table node holds (``encoding["ome_table"]``): read from its store, or the
    DataFrame that was added."""
    if isinstance(held, TableSource):
        return await held.read(meta, columns)
    if isinstance(held, pd.DataFrame):
        return select_columns(held.copy(deep=False), columns, where)
    raise HcsNotFoundError("table node holds no rows (neither read from a store nor added)",
                           where)


class TableSource:
    """Where a table node's rows are: a table group in the store the tree was opened from.

    Kept in the node's ``encoding["ome_table"]`` (an added table keeps its DataFrame there
    instead), so the rows are read only when asked for, and never twice.
    """

    __slots__ = ("ps", "path", "_cache")

    def __init__(self, ps: PlateStore, path: str) -> None:
        self.ps = ps
        self.path = path
        self._cache: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"<TableSource {self.ps.where(self.path)!r}>"

    def __getstate__(self) -> dict[str, Any]:
        return {"ps": self.ps, "path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["ps"], state["path"])  # type: ignore[misc]

    async def read(self, meta: TableMeta, columns: tuple[str, ...] | None = None
                   ) -> pd.DataFrame:
        if self._cache is not None:
            return select_columns(self._cache.copy(deep=False), columns,
                                  self.ps.where(self.path))
        if columns is not None:  # a part: read it, keep nothing
            return await read_table(self.ps, self.path, meta, columns)
        self._cache = await read_table(self.ps, self.path, meta)
        return self._cache.copy(deep=False)
