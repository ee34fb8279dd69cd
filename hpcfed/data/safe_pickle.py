"""Untrusted pickles stay data: an unpickler that admits numpy arrays and plain containers only.

Dataset files such as the CIFAR python batches or gzip-pickled arrays come from user paths; the full
pickle machinery would run any callable they name. Everything outside the allow-list is refused."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any

from hpcfed.errors import DataError

ALLOWED = {
    ("builtins", name) for name in ("list", "dict", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                                    "int", "float", "bool", "complex", "slice", "range")
} | {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.dtypes", "UInt8DType"), ("numpy.dtypes", "Int64DType"), ("numpy.dtypes", "Float32DType"),
    ("numpy.dtypes", "Float64DType"), ("numpy.dtypes", "Int32DType"), ("numpy.dtypes", "ObjectDType"),
    ("_codecs", "encode"),  # Python 2 pickles (CIFAR) carry byte strings through it; it only encodes text
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
}


class RefusedPickle(pickle.UnpicklingError):
    pass


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise RefusedPickle(f"refused to load {module}.{name}: only numpy arrays and plain containers "
                                     "are allowed in dataset files")


def load_restricted(path: str | Path, encoding: str = "latin1") -> Any:
    """Unpickle `path` (plain or gzip) with the allow-list; a refused or broken file raises DataError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding=encoding).load()
    except RefusedPickle as e:
        raise DataError(f"{path} was not loaded: {e}. It is not a plain dataset pickle; re-create it from the "
                        "official archive") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path} is not a readable pickle ({e}); re-download or re-create it") from e
