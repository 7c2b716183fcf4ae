"""coffea processors, unchanged: `session.process(MyProcessor(), dataset=fileset, schema=...)`.

The processor instance (with its configuration) is pickled with cloudpickle
on the client and travels in the query's inputs as bytes: only the workers
of the user's own session unpickle it (they run the user's code anyway); the
daemon passes the bytes on and never unpickles. On a worker,
`ProcessorSelector` builds NanoEvents per packet (pyproof.nanoevents) and
accumulates what `processor.process(events)` returns with coffea's own
`accumulate`; workers' outputs then merge by pyproof's rules (the same for
dicts, sets, numbers, histograms and arrays), and `postprocess` runs on the
client. `result.outputs` is what coffea's Runner returns.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from pyproof.errors import InputError
from pyproof.selector import Selector

PROCESSOR_KEY = "__pyproof_coffea_processor__"
OUTPUT_KEY = "out"


class CoffeaMissing(InputError):
    """A coffea processor was given but coffea is not installed here."""


def is_processor(obj: Any) -> bool:
    """A coffea ProcessorABC instance (or, without coffea, something shaped like one)."""
    if isinstance(obj, type | str):
        return False
    processor = sys.modules.get("coffea.processor")
    if processor is not None and isinstance(obj, processor.ProcessorABC):
        return True
    return callable(getattr(obj, "process", None)) and callable(
        getattr(obj, "postprocess", None)) and not isinstance(obj, Selector)


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedProcessor:
    processor: Any
    inputs: dict[str, Any]

    def finish(self, outputs: dict[str, Any]) -> Any:
        """The Runner's answer: the accumulated output, after the processor's postprocess."""
        out = outputs.get(OUTPUT_KEY)
        post = self.processor.postprocess(out)
        return out if post is None else post


def prepare(processor: Any, inputs: dict[str, Any]) -> PreparedProcessor:
    """Pickle the processor into the query's inputs; say which extra to install if needed."""
    try:
        import cloudpickle
        import coffea.processor  # noqa: F401
    except ImportError:
        raise CoffeaMissing(
            f"{type(processor).__name__} looks like a coffea processor, but coffea is not "
            "installed: pip install 'pyproof[coffea]'") from None
    if PROCESSOR_KEY in inputs:
        raise InputError(f"inputs may not use the key {PROCESSOR_KEY!r}")
    return PreparedProcessor(processor=processor,
                             inputs={**inputs, PROCESSOR_KEY: cloudpickle.dumps(processor)})


class ProcessorSelector(Selector):
    """Runs a pickled coffea processor on a worker, once per packet (see module docstring)."""

    branches = None
    schema = "nanoaod"

    def begin(self, ctx: Any) -> None:
        import pickle

        self.processor = pickle.loads(ctx.inputs[PROCESSOR_KEY])

    def process(self, events: Any, ctx: Any) -> None:
        from coffea.processor import accumulate

        out = self.processor.process(events)
        if out is None:
            return
        held = ctx.outputs.get(OUTPUT_KEY)
        ctx.outputs[OUTPUT_KEY] = out if held is None else accumulate([out], held)
