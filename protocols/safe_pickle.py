"""Reading pickled split lists without running any code they carry.

HSNet ships COCO-20i's per-class image lists as pickles, and `pickle.load` on a file from elsewhere
can run arbitrary code: anything beyond plain data is rebuilt by looking up a global (a class or a
function such as `os.system`) and calling it. The unpickler below refuses every global, which leaves
exactly the plain data types (dict, list, tuple, str, bytes, int, float, bool, None) that the
published lists use. This is the "restricting globals" recipe of Python's pickle documentation.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, BinaryIO

from fssbench.harness.errors import DataError


class _PlainDataUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(f"{self._path} refers to the Python object {module}.{name}; a split list must hold "
                        "plain data only (dicts, lists, strings, numbers), so it was not loaded")


def load_plain_pickle(path: Path) -> Any:
    """The plain data pickled in `path`; a DataError naming the file for anything else."""
    try:
        with path.open("rb") as file:
            return _PlainDataUnpickler(file, path).load()
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"cannot read split list {path}: {exc.strerror}") from None
    except Exception as exc:  # a damaged pickle can fail with almost any exception type
        raise DataError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc}); "
                        "re-download the split lists") from None
