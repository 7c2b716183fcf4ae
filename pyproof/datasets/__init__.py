"""Datasets: named, cataloged lists of files with per-file metadata.

Layers, bottom up:

- `errors`   -- `DatasetError` and one subclass per failure (messages for users).
- `names`    -- pure: dataset names, specs (`a|b`, `a,b`, `#tree`, `?entries=`), patterns.
- `records`  -- pure: `FileRecord`, `DatasetInfo`, `Element`, `Resolution`, ... dataclasses.
- `resolve`  -- pure: turning a dataset's files and a selection into elements.
- `sources`  -- I/O: paths, globs and text file lists as `FileRecord`s.
- `catalog`  -- I/O: `Catalog`, the SQLite catalog (register, show, list, remove, quotas,
                resolve).
- `verify`   -- I/O: `verify_file` (one file, runnable on any worker) and `verify_dataset`.
- `cli`      -- `proofctl ds ...` subcommands.

`Catalog` and the `verify` names are imported on first use (PEP 562): the actors
import this package for its records' CBOR tag, and the catalog (SQLite, file
lists, globs) is not on the path of every lite start.
"""

from typing import TYPE_CHECKING

from pyproof.datasets.errors import (
    BadFilesError,
    CatalogError,
    CatalogFullError,
    DatasetError,
    DatasetExistsError,
    DatasetNameError,
    DatasetNotFoundError,
    DatasetPermissionError,
    EntriesUnknownError,
    FriendMismatchError,
    NoTreeError,
    QuotaExceededError,
    SourceError,
)
from pyproof.datasets.names import (
    COMMON,
    DatasetName,
    DatasetRef,
    DatasetSpec,
    EntrySelection,
    NamePattern,
    parse_name,
    parse_pattern,
    parse_spec,
)
from pyproof.datasets.records import (
    Dataset,
    DatasetInfo,
    Element,
    FileRecord,
    QuotaInfo,
    Resolution,
    SkippedFile,
)
from pyproof.lazy import lazy_attributes

if TYPE_CHECKING:
    from pyproof.datasets.catalog import Catalog
    from pyproof.datasets.verify import (
        VerifySummary,
        verify_dataset,
        verify_file,
        verify_record,
    )

_LAZY = {
    "Catalog": "pyproof.datasets.catalog",
    "VerifySummary": "pyproof.datasets.verify",
    "verify_dataset": "pyproof.datasets.verify",
    "verify_file": "pyproof.datasets.verify",
    "verify_record": "pyproof.datasets.verify",
}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY.get, _LAZY)

__all__ = [
    "COMMON",
    "BadFilesError",
    "Catalog",
    "CatalogError",
    "CatalogFullError",
    "Dataset",
    "DatasetError",
    "DatasetExistsError",
    "DatasetInfo",
    "DatasetName",
    "DatasetNameError",
    "DatasetNotFoundError",
    "DatasetPermissionError",
    "DatasetRef",
    "DatasetSpec",
    "Element",
    "EntriesUnknownError",
    "EntrySelection",
    "FileRecord",
    "FriendMismatchError",
    "NamePattern",
    "NoTreeError",
    "QuotaExceededError",
    "QuotaInfo",
    "Resolution",
    "SkippedFile",
    "SourceError",
    "VerifySummary",
    "parse_name",
    "parse_pattern",
    "parse_spec",
    "verify_dataset",
    "verify_file",
    "verify_record",
]
