"""Reading pickled data files without letting them run code.

`pickle.load` calls whatever callable a file names (`__reduce__`), so a data file from a mirror or a shared bucket
could run arbitrary code on the evaluating host. Data needs no code: this unpickler resolves only the builtin
containers and scalars below (what MultiNet's Overcooked trials hold: a list of dicts of strings) and refuses any
other global by name, before calling anything.
"""

from __future__ import annotations

import io
import pathlib
import pickle
from typing import Any

ALLOWED_GLOBALS = frozenset(
    ("builtins", name) for name in ("list", "dict", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool", "complex")
) | {("collections", "OrderedDict")}


class UnsafePickleError(ValueError):
    """A pickle that names a global outside ALLOWED_GLOBALS (it could run code): nothing was called."""


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: pathlib.Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self._path}: refusing to unpickle {module}.{name}: a data file may hold only lists, dicts, "
                "strings and numbers (this one could run code); convert it to CSV or JSON"
            )
        if (module, name) == ("builtins", "bytes"):
            return self._bounded_bytes
        return super().find_class(module, name)

    def _bounded_bytes(self, *args: Any) -> bytes:
        """`bytes(...)` as protocols 0-2 call it, except `bytes(n)` beyond the file's own size: a few bytes of pickle
        must not ask for gigabytes of zeros."""
        if args and isinstance(args[0], int) and args[0] > self._path.stat().st_size:
            raise UnsafePickleError(f"{self._path}: refusing to unpickle bytes({args[0]}): larger than the file itself")
        return bytes(*args)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._path}: refusing to unpickle a persistent reference {pid!r}")


def load(path: str | pathlib.Path) -> Any:
    """The object pickled in `path`, built from allowed types only (UnsafePickleError otherwise)."""
    path = pathlib.Path(path)
    with path.open("rb") as file:
        try:
            return _DataUnpickler(file, path).load()
        except UnsafePickleError:
            raise
        except Exception as error:  # a truncated or corrupt pickle raises many types
            raise ValueError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
