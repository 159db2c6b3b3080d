"""The ``HcsError`` family.

Every error raised on bad input names the store path it concerns and what is wrong with it.
Each class also subclasses the builtin a caller would naturally catch (``ValueError`` for bad
metadata, ``FileNotFoundError`` for absent nodes, ...), so code written against plain Python
exceptions keeps working.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

__all__ = [
    "HcsError",
    "HcsMetadataError",
    "HcsVersionError",
    "HcsNotFoundError",
    "HcsPathError",
    "HcsSelectionError",
    "HcsNotAPlateError",
    "HcsReadError",
    "HcsWriteError",
    "HcsExistsError",
    "HcsTableError",
    "HcsValueError",
    "HcsTypeError",
    "HcsWarning",
    "HcsMissingWarning",
    "HcsMetadataWarning",
]


class HcsError(Exception):
    """Base class of every error raised by xarray_hcs.

    Parameters
    ----------
    message
        What is wrong.
    path
        The store path (node, document or array) the problem was found at, if any.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        self.message = message
        text = f"{path!r}: {message}" if path is not None else message
        super().__init__(text)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0] if self.args else ""

    def __reduce__(self):  # keep (message, path) across pickling, e.g. from dask workers
        return (type(self), (self.message, self.path))


class HcsMetadataError(HcsError, ValueError):
    """OME-NGFF metadata is malformed, contradictory or not of the expected type."""


class HcsVersionError(HcsMetadataError):
    """The OME-NGFF version is unknown or not supported for this operation."""


class HcsNotFoundError(HcsError, FileNotFoundError):
    """A node (well, field, level, label, table) the metadata lists is absent from the store."""


class HcsReadError(HcsError, OSError):
    """The store could not be read: a network error, a timeout, a refused permission."""


class HcsWriteError(HcsError, OSError):
    """The store could not be written: a refused permission, a full disk, a lock that cannot be
    taken. What was published before the failure is a valid plate (see docs/write.md)."""


class HcsExistsError(HcsError, FileExistsError):
    """The target already holds data and ``mode="w-"`` forbids overwriting it."""


class HcsPathError(HcsMetadataError):
    """A path in the metadata or given by the caller is unsafe (``..``, absolute) or invalid."""


class HcsSelectionError(HcsError, KeyError):
    """A selection (wells, fields, levels, acquisition) names something the plate does not hold."""


class HcsNotAPlateError(HcsMetadataError):
    """The store (or group) holds no OME-NGFF plate metadata."""


class HcsTableError(HcsMetadataError):
    """A table's rows are inconsistent: columns of different lengths, a repeated index, ..."""


class HcsValueError(HcsError, ValueError):
    """An argument the caller gave is not one the operation accepts (a bad option value)."""


class HcsTypeError(HcsError, TypeError):
    """An argument is of a type the call does not take (a numpy array where a DataArray is
    needed), or a keyword argument the call does not have (a misspelt option)."""


class HcsWarning(UserWarning):
    """Base class of xarray_hcs warnings."""


class HcsMissingWarning(HcsWarning):
    """A listed node was absent and skipped (``on_missing="warn"``)."""


class HcsMetadataWarning(HcsWarning):
    """Metadata was not used as written because it contradicts the data (the reason is said);
    ``validate=True`` refuses it instead."""


_F = TypeVar("_F", bound=Callable[..., Any])


def store_write_errors(func: _F) -> _F:
    """Raise the operating system's errors met while ``func`` writes a store as
    :class:`HcsWriteError`, naming the file; errors of the family pass unchanged."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HcsError:
            raise
        except OSError as e:
            import inspect

            try:  # the store written, not the tree (to_zarr's first argument)
                called = inspect.signature(func).bind_partial(*args, **kwargs).arguments
            except TypeError:
                called = {}
            target = called.get("store", args[0] if args else None)
            store = None if target is None else str(target)[:500]
            name = None if e.filename is None else str(e.filename)
            # a file name relative to a folder being deleted says little on its own: the
            # store, then the name
            full = name is not None and name.startswith("/")
            where = name if full else store
            what = e.strerror or str(e) or type(e).__name__
            raise HcsWriteError(f"could not write the plate: {what}"
                                + (f" ({name!r})" if name and not full else ""), where) from e

    return wrapper  # type: ignore[return-value]
