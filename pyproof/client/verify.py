"""Verification on the cluster, the client's half: `verify_on_cluster(session, catalog, name)`.

It runs `datasets.cluster_verify.VerifySelector` as a per-file task
(`session.process(..., files=[...])`, the "file" packetizer), writes the
records the workers send back to the catalog in one transaction and returns
the same `VerifySummary` a local verification gives.

A file whose verification killed its worker three times (a crash in a
decompression library, say) is given up by the packetizer and recorded as
corrupt, naming why.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pyproof.datasets.cluster_verify import VerifySelector
from pyproof.datasets.records import FileRecord
from pyproof.datasets.verify import VerifySummary, summarize

if TYPE_CHECKING:
    from pyproof.client.session import Session
    from pyproof.datasets.catalog import Catalog


def verify_on_cluster(session: Session, catalog: Catalog, name: str, *, checksum: bool = True,
                      deep: bool = False, record: bool = True,
                      timeout: float | None = None) -> VerifySummary:
    """Verify every file of dataset `name` on `session`'s workers; record and summarise.

    Same contract as `verify_dataset`: `record=False` only reports; with
    `record=True` a DatasetPermissionError comes before any file is read.
    Raises QueryError if the cluster cannot run the verification.
    """
    dataset = catalog.show(name)
    if record:
        catalog.check_may_change(dataset.info.path)
    files = list(dataset.files)
    if not files:
        results: list[FileRecord] = []
    else:
        now = catalog.now()
        result = session.process(
            VerifySelector, files=[f.url for f in files], on_missing="skip", progress=False,
            timeout=timeout,
            inputs={"records": {f.url: f for f in files},
                    "default_tree": dataset.info.default_tree, "checksum": checksum,
                    "deep": deep, "now": now})
        found = {r.url: r for r in result.outputs.get("records", [])}
        given_up = {m["file"]: m.get("reason", "") for m in result.missing}
        results = [found.get(f.url) or replace(
            f, corrupt=True, verified_at=now,
            problem=f"verification failed on the cluster: {given_up.get(f.url) or 'no result'}")
            for f in files]
    if record:
        catalog.record_verification(dataset.info.path, results)
    return summarize(dataset.info.path, results)
