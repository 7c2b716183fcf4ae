"""The errors of the dataset catalog: one base class, one class per thing that goes wrong.

Every error raised on purpose by `pyproof.datasets` derives from `DatasetError`,
so a caller (the CLI, the gateway) can catch them all and show the message,
which is written for the user: it names what was wrong and what to do.
"""

from __future__ import annotations

from pyproof.errors import ProofError


class DatasetError(ProofError):
    """Base class of every error the dataset catalog raises on purpose."""


class DatasetNameError(DatasetError, ValueError):
    """A dataset name, spec or pattern does not follow the syntax (see `names`).

    The message names the bad part and the rule it breaks; fix the text.
    """

    def __init__(self, text: str, part: str, rule: str) -> None:
        self.text = text
        self.part = part
        self.rule = rule
        super().__init__(f"bad dataset name {text!r} at {part!r}: {rule}")


class DatasetNotFoundError(DatasetError, LookupError):
    """No dataset has this name. The message suggests the nearest existing names."""

    def __init__(self, name: str, suggestions: tuple[str, ...] = ()) -> None:
        self.name = name
        self.suggestions = suggestions
        if suggestions:
            hint = "did you mean " + ", ".join(repr(s) for s in suggestions) + "?"
        else:
            hint = "no similar names; 'ds ls' lists the datasets"
        super().__init__(f"no dataset {name!r}; {hint}")


class DatasetExistsError(DatasetError):
    """Registering a name that exists, without `overwrite` or `update`."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"dataset {name!r} exists; register with overwrite=True to replace it "
            "or update=True to add files to it"
        )


class QuotaExceededError(DatasetError):
    """A registration would take a group over its quota (in bytes); nothing was changed."""

    def __init__(self, name: str, group: str, needed: int, used: int, limit: int) -> None:
        self.name = name
        self.group = group
        self.needed = needed
        self.used = used
        self.limit = limit
        left = max(limit - used, 0)
        super().__init__(
            f"registering {name!r} needs {format_bytes(needed)} but group {group!r} has "
            f"{format_bytes(left)} left of its {format_bytes(limit)} quota "
            f"({format_bytes(used)} used); nothing was registered"
        )


class FriendMismatchError(DatasetError):
    """A file and its associated (friend) file do not have the same number of entries."""

    def __init__(
        self, url: str, tree: str, entries: int, friend_url: str, friend_tree: str,
        friend_entries: int,
    ) -> None:
        self.url = url
        self.friend_url = friend_url
        super().__init__(
            f"associated file mismatch: {url!r} tree {tree!r} has {entries} entries but "
            f"{friend_url!r} tree {friend_tree!r} has {friend_entries}"
        )


class DatasetPermissionError(DatasetError, PermissionError):
    """Changing something outside one's own /group/user/ area (COMMON and quotas need admin)."""


class SourceError(DatasetError):
    """The files to register could not be read: a glob matched nothing, a bad list line."""


class EntriesUnknownError(DatasetError):
    """An entry selection needs entry counts that are not in the catalog yet (verify first)."""


class NoTreeError(DatasetError):
    """Neither the spec (`#tree`), the file nor the dataset names a tree to read."""


class BadFilesError(DatasetError):
    """Resolving found missing, corrupt or wrong-tree files and the caller chose to fail."""

    def __init__(self, problems: tuple[tuple[str, str], ...]) -> None:
        self.problems = problems
        listed = "; ".join(f"{url}: {reason}" for url, reason in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(
            f"{len(problems)} bad file(s): {listed}{more}; skip them with bad_files='skip' "
            "or fix them and verify again"
        )


class CatalogError(DatasetError):
    """The catalog file itself is unusable (for example written by a newer pyproof)."""


class CatalogFullError(CatalogError, ProofError):
    """The disk holding the catalog is full; the change was rolled back (nothing changed).

    Free space on that filesystem and try again.
    """

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(
            f"disk full: cannot write the dataset catalog {path!r} ({detail}); nothing was "
            "changed; free space on its filesystem and try again"
        )


def format_bytes(n: int) -> str:
    """A byte count for people: '512 B', '1.5 kB', '3.0 MB' (powers of 1000, as disks)."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000.0
        if value < 1000 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
