"""Verification on the cluster, the workers' half: `VerifySelector`, one file per packet.

Each worker verifies the files it is handed with `verify_record`, exactly as
`verify_dataset` does locally, and sends the records back as a list output.
The client's half (`pyproof.client.verify.verify_on_cluster`) submits it and
records the results; this module imports nothing of the client.
"""

from __future__ import annotations

from typing import Any

from pyproof.datasets.verify import verify_record
from pyproof.selector import Selector


class VerifySelector(Selector):
    """Verifies `ctx.file`: inputs `records` ({url: FileRecord}), `default_tree`,
    `checksum`, `deep` and `now` (the time stamp to record)."""

    def begin(self, ctx: Any) -> None:
        ctx.outputs["records"] = []

    def process(self, units: Any, ctx: Any) -> None:
        inputs = ctx.inputs
        record = inputs["records"][ctx.file]  # FileRecords travel as their own tag
        found = verify_record(record, inputs.get("default_tree"), checksum=inputs["checksum"],
                              deep=inputs["deep"], now=inputs["now"])
        ctx.outputs["records"].append(found)
