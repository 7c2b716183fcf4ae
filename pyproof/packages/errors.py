"""The one error of packages."""

from __future__ import annotations

from pyproof.errors import ProofError


class PackageError(ProofError):
    """A package cannot be built, uploaded, enabled or set up; the message names the
    package (and file and line where there is one) and says what to do. The session
    stays usable."""
