"""One query, in one place: its spec (`spec.py`) and its pure state machine (`core.py`).

Layering: this package imports nothing from `actors/`, `client/` or `transport/`
sockets. The client builds a `QuerySpec`, the gateway validates it (the one
`QuerySpec.from_wire`), the master drives a `QueryCore` per query, and the
workers read the spec's attributes.
"""

from pyproof.query.spec import QuerySpec, SpecError

__all__ = ["QuerySpec", "SpecError"]
