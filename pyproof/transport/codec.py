"""The one wire format: CBOR (cbor2's C extension) with pyproof's extension tags.

Everything that crosses a process goes through :func:`encode` and :func:`decode`.
The set of values that travel is closed and small, so that the daemon can decode
any frame without running or importing anything it does not trust:

* ``None``, ``bool``, ``int`` (any size), ``float``, ``complex``, ``str``,
  ``bytes`` (``bytearray`` and ``memoryview`` travel as ``bytes``);
* ``list``, ``dict`` (dict subclasses other than ``Counter`` travel as ``dict``),
  ``set`` / ``frozenset`` (decode as ``set``; as ``frozenset`` when used as a
  map key); timezone-aware ``datetime`` and ``date`` (standard tags 0, 1, 100,
  1004);
* the pyproof tags below. Tuple subclasses (namedtuples) travel as lists.

Nesting deeper than :data:`MAX_DEPTH` (400) is refused by :func:`decode`;
:func:`encode` refuses structures deeper than Python's recursion limit.

Everything else (``Decimal``, ``UUID``, regexes, ``CBORTag``, arbitrary objects)
is refused by :func:`encode` with an :class:`EncodeError` naming where it sits,
and every other CBOR tag is refused by :func:`decode` with a
:class:`ProtocolError`.

Extension tags (unregistered numbers in the IANA first-come-first-served range,
``0x7070_00xx``, "pp"; never reuse or renumber one, add new ones at the end):

======================  ==========  ==================================================
tag                     Python      payload
======================  ==========  ==================================================
1886388225 (0x70700001) ``tuple``   array of items
1886388226 (0x70700002) ``Counter`` map of key -> count
1886388227 (0x70700003) ndarray     ``[dtype.str, [shape...], bytes]``, C order
1886388228 (0x70700004) histogram   ``{"class", "uhi", "data"}``: ``class`` is
                                    ``"boost_histogram.Histogram"``, ``"hist.Hist"``
                                    or ``"hist.NamedHist"`` (other subclasses travel
                                    as their nearest one of these);
                                    ``uhi`` is ``boost_histogram.serialization.to_uhi``
                                    without storage; ``data`` is the flow view as one
                                    ndarray or a map of field name -> ndarray
1886388229 (0x70700005) RemoteError ``{"type", "message", "traceback", "context"}``
1886388230 (0x70700006) FileRecord  a dataset's file record: map of its fields, checked
                                    field by field on decode; registered by the
                                    datasets package (``register_tag``), not known here
1886388231 (0x70700007) ndarray     ``[dtype.str, [shape...], index]``: the data is
                                    out-of-band buffer ``index`` of the frame
1886388232 (0x70700008) ``bytes``   ``index``: out-of-band buffer ``index`` of the frame
1886388233 (0x70700009) ``ak.Array``  ``{"form", "length", "buffers"}``: ``ak.to_buffers``
                                    output; ``form`` is the form's JSON text, ``buffers``
                                    a map of key -> 1-d ndarray (never a list of values)
======================  ==========  ==================================================

The two out-of-band tags appear only inside frames (see ``frames.py``): large
arrays and byte strings travel as raw buffers next to the CBOR item.

Numpy scalars encode as plain Python numbers. Decoded arrays are writable, C-ordered
and independent of the frame (one copy on decode).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import re
import sys
import threading
import traceback as _traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import cbor2

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.errors import ProofError
from pyproof.lazy import loaded


class _LazyNumpy:
    """numpy, imported on first use: a process that never meets an array (the daemon's
    gateway, a session that has not run a query yet) starts without it, a tenth of a
    second sooner (numpy comes with uproot, on the warm-up thread: actors/warmup.py)."""

    def __getattr__(self, name: str) -> Any:
        import numpy

        globals()["np"] = numpy  # later uses skip this proxy
        return getattr(numpy, name)


np: Any = _LazyNumpy()

__all__ = [
    "DEFAULT_MAX_FRAME",
    "SUPPORTED_TYPES",
    "TAG_AWKWARD",
    "TAG_COUNTER",
    "TAG_DATASET_RECORD",
    "TAG_HISTOGRAM",
    "TAG_NDARRAY",
    "TAG_REMOTE_ERROR",
    "TAG_TUPLE",
    "EncodeError",
    "ProtocolError",
    "RemoteError",
    "decode",
    "encode",
]

ENV_MAX_FRAME = "PYPROOF_MAX_FRAME"


def _max_frame_from_env() -> int:
    value = os.environ.get(ENV_MAX_FRAME, "").strip()
    if not value:
        return 256 * 1024 * 1024
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 16 * 1024 * 1024:
        raise ValueError(f"{ENV_MAX_FRAME}={value!r}: give the frame cap in bytes, at least "
                         "16777216 (16 MiB); larger messages are sent in chunks anyway")
    return size


DEFAULT_MAX_FRAME = _max_frame_from_env()
"""Largest frame :func:`decode` (and every pyproof socket) accepts, in bytes: 256 MiB,
or ``$PYPROOF_MAX_FRAME``. Larger messages travel as chunks (see frames.py)."""

MAX_DEPTH = 400
"""Deepest container nesting :func:`decode` accepts."""

TAG_TUPLE = 0x7070_0001
TAG_COUNTER = 0x7070_0002
TAG_NDARRAY = 0x7070_0003
TAG_HISTOGRAM = 0x7070_0004
TAG_REMOTE_ERROR = 0x7070_0005
TAG_NDARRAY_REF = 0x7070_0007  # [dtype, shape, index]: data in out-of-band buffer `index`
TAG_DATASET_RECORD = 0x7070_0006  # reserved for datasets/records.py (it registers it)
TAG_BYTES_REF = 0x7070_0008  # index: a byte string in out-of-band buffer `index`
TAG_AWKWARD = 0x7070_0009  # an ak.Array: {"form", "length", "buffers"} from ak.to_buffers

_MAX_NDIM = 64  # numpy's own limit


class ProtocolError(ProofError, ValueError):
    """Raised by :func:`decode` when bytes are not a valid pyproof message.

    Truncated or trailing data, frames over the size cap, unknown or forbidden
    tags, tag payloads of the wrong shape. The message says what was wrong. The
    peer sent something broken or hostile: drop the frame (or the connection),
    log it, and keep serving.
    """


SUPPORTED_TYPES = ("None, bool, int, float, complex, str, bytes, list, tuple, dict, set, "
                   "collections.Counter, numpy arrays and scalars, awkward arrays, hist.Hist and "
                   "boost-histogram histograms, timezone-aware datetime and date")
"""What travels on the wire, for messages that refuse something else."""


class EncodeError(ProofError, TypeError):
    """Raised by :func:`encode` when a value cannot travel on the wire.

    The message names where the value sits, e.g.
    ``inputs['cut'][2]: cannot encode object of type 'Foo'``. Convert the value
    to one of the supported types (see the module docstring) before sending.
    """


# --------------------------------------------------------------------- RemoteError


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteError:
    """An exception raised in another process, as data.

    ``type`` is the exception's class name (qualified with its module unless it
    is a builtin), ``message`` its ``str()``, ``traceback`` the formatted remote
    traceback, and ``context`` says where it happened (``file``, ``tree``,
    ``entry_start``, ``entry_stop``, ``worker``, ...; values must be encodable).
    """

    type: str
    message: str
    traceback: str = ""
    context: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_exception(cls, exc: BaseException, **context: Any) -> RemoteError:
        """Capture ``exc`` (with its chained causes) and where it happened."""
        kind = type(exc)
        name = kind.__qualname__
        if kind.__module__ not in ("builtins", "__main__"):
            name = f"{kind.__module__}.{name}"
        tb = "".join(_traceback.format_exception(exc))
        return cls(type=name, message=str(exc), traceback=tb, context=dict(context))

    def summary(self) -> str:
        """What went wrong and where, without the traceback (``QueryError``'s message).

        A ``context["output"]`` (the failing worker's last printed or logged
        lines) adds its last :data:`SUMMARY_OUTPUT_LINES` lines.
        """
        head = f"{self.type}: {self.message}" if self.message else self.type
        where = _describe_context(self.context)
        text = f"{head}\n  {where}" if where else head
        output = self.context.get("output")
        if isinstance(output, list) and output:
            shown = [str(line) for line in output[-SUMMARY_OUTPUT_LINES:]]
            text += "\n  last output of the worker:\n" + "\n".join(f"    | {x}" for x in shown)
        return text

    def __str__(self) -> str:
        head = f"{self.type}: {self.message}" if self.message else self.type
        lines = [head]
        where = _describe_context(self.context)
        if where:
            lines.append(f"  {where}")
        if self.traceback:
            lines.append("")
            lines.append("Remote traceback:")
            lines.extend("  " + line for line in self.traceback.rstrip("\n").splitlines())
        return "\n".join(lines)


SUMMARY_OUTPUT_LINES = 5


def _describe_context(context: dict[str, Any]) -> str:
    ctx = dict(context)
    ctx.pop("output", None)  # shown by summary() below the location
    parts = []
    if "file" in ctx:
        parts.append(f"in file {ctx.pop('file')}")
    if "tree" in ctx:
        parts.append(f"tree {ctx.pop('tree')}")
    if "entry_start" in ctx and "entry_stop" in ctx:
        parts.append(f"entries [{ctx.pop('entry_start')}, {ctx.pop('entry_stop')})")
    if "worker" in ctx:
        parts.append(f"on {ctx.pop('worker')}")
    parts.extend(f"{key}={value!r}" for key, value in ctx.items())
    return ", ".join(parts)


# --------------------------------------------------------------------------- encode


def _refuse(encoder: cbor2.CBOREncoder, value: Any) -> None:
    raise EncodeError(_cannot(value))


def _cannot(value: Any) -> str:
    return f"cannot encode object of type {type(value).__name__!r}"


def _encode_tuple(encoder: cbor2.CBOREncoder, value: tuple) -> None:
    encoder.encode_semantic(TAG_TUPLE, list(value))


def _encode_counter(encoder: cbor2.CBOREncoder, value: collections.Counter) -> None:
    encoder.encode_semantic(TAG_COUNTER, dict(value))


def _encode_set(encoder: cbor2.CBOREncoder, value: set | frozenset) -> None:
    # cbor2's own set encoder passes a tuple on, which our tuple tag would catch
    encoder.encode_semantic(258, list(value))


def _encode_complex(encoder: cbor2.CBOREncoder, value: complex) -> None:
    # as for sets: keep the standard tag 43000 payload a plain array
    encoder.encode_semantic(43000, [value.real, value.imag])


def _encode_list(encoder: cbor2.CBOREncoder, value: list) -> None:
    # Through Python on purpose: cbor2 6.3's native encoder recurses on the C
    # stack and segfaults on lists nested ~20k deep; this way Python's
    # recursion limit turns that into a RecursionError (and an EncodeError).
    encoder.encode_array(value)


def _encode_dict(encoder: cbor2.CBOREncoder, value: dict) -> None:
    encoder.encode_map(value)


def _encode_bytes(encoder: cbor2.CBOREncoder, value: bytes | bytearray | memoryview) -> None:
    # large byte strings go out of band when a frame collects buffers (no CBOR copy)
    collect = getattr(_OOB, "collect", None)
    if collect is not None and len(value) >= _OOB.threshold:
        view = memoryview(value)
        if view.c_contiguous:
            collect.append(view.cast("B"))
            encoder.encode_semantic(TAG_BYTES_REF, len(collect) - 1)
            return
    encoder.encode_bytes(value if type(value) is bytes else bytes(value))


def _ndarray_refusal(array: np.ndarray) -> str | None:
    dtype = array.dtype
    if dtype.hasobject:
        return (
            f"cannot encode ndarray of dtype {dtype} "
            "(object arrays hold Python objects; use a numeric or string dtype)"
        )
    if dtype.names is not None or dtype.subdtype is not None:
        return f"cannot encode ndarray of structured dtype {dtype} (send one array per field)"
    if dtype.itemsize == 0:
        return f"cannot encode ndarray of zero-size dtype {dtype}"
    if isinstance(array, np.ma.MaskedArray):
        return "cannot encode a masked array (send .filled() and the mask as two arrays)"
    return None


def _encode_ndarray(encoder: cbor2.CBOREncoder, array: np.ndarray) -> None:
    refusal = _ndarray_refusal(array)
    if refusal is not None:
        raise EncodeError(refusal)
    array = np.asarray(array)
    collect = getattr(_OOB, "collect", None)
    if collect is not None and array.nbytes >= _OOB.threshold:
        data = np.ascontiguousarray(array)
        collect.append(memoryview(data).cast("B"))
        encoder.encode_semantic(
            TAG_NDARRAY_REF, [array.dtype.str, list(array.shape), len(collect) - 1])
        return
    encoder.encode_semantic(
        TAG_NDARRAY, [array.dtype.str, list(array.shape), array.tobytes(order="C")]
    )


def _histogram_class_name(value: Any) -> str | None:
    """The wire name of a histogram's class (nearest known base), or None."""
    bh = loaded("boost_histogram")
    if bh is None or not isinstance(value, bh.Histogram):
        return None
    hist = loaded("hist")
    if hist is not None and isinstance(value, hist.BaseHist):
        return "hist.NamedHist" if isinstance(value, hist.NamedHist) else "hist.Hist"
    return "boost_histogram.Histogram"


def _histogram_payload(value: Any, class_name: str) -> dict[str, Any]:
    from boost_histogram.serialization import to_uhi

    uhi = to_uhi(value, keep_storage=False)
    view = np.asarray(value.view(flow=True))
    if view.dtype.names is None:
        data: Any = np.ascontiguousarray(view)
    else:
        data = {name: np.ascontiguousarray(view[name]) for name in view.dtype.names}
    return {"class": class_name, "uhi": uhi, "data": data}


def _encode_remote_error(encoder: cbor2.CBOREncoder, value: RemoteError) -> None:
    encoder.encode_semantic(
        TAG_REMOTE_ERROR,
        {
            "type": value.type,
            "message": value.message,
            "traceback": value.traceback,
            "context": value.context,
        },
    )


def _numpy_loaded() -> Any:
    """numpy if this process imported it (no array or numpy scalar exists otherwise);
    the first time, its types get their direct encoders too."""
    # being imported on another thread now (the warm-up, actors/warmup.py): no numpy
    # value exists yet, and its types may not be there (seen: a spec encoded on the
    # master's actor thread as the warm-up imported numpy)
    numpy = loaded("numpy")
    if numpy is not None and numpy.ndarray not in _ENCODERS:
        _ENCODERS[numpy.complex128] = _encode_complex
        _ENCODERS[numpy.ndarray] = _encode_ndarray
    return numpy


def _default(encoder: cbor2.CBOREncoder, value: Any) -> None:
    # Called by cbor2 for every type it has no encoder for (subclasses included).
    np = _numpy_loaded()
    if np is not None and isinstance(value, np.generic):
        if isinstance(value, np.bool_):
            encoder.encode(bool(value))
            return
        if isinstance(value, np.integer):
            encoder.encode(int(value))
            return
        if isinstance(value, np.floating):
            encoder.encode(float(value))
            return
        if isinstance(value, np.complexfloating):
            encoder.encode(complex(value))
            return
        raise EncodeError(_cannot(value))
    if np is not None and isinstance(value, np.ndarray):
        _encode_ndarray(encoder, value)
        return
    class_name = _histogram_class_name(value)
    if class_name is not None:
        encoder.encode_semantic(TAG_HISTOGRAM, _histogram_payload(value, class_name))
        return
    if isinstance(value, collections.Counter):
        _encode_counter(encoder, value)
        return
    awkward = loaded("awkward")
    if awkward is not None and isinstance(value, awkward.Array):
        _encode_awkward(encoder, awkward, value)
        return
    for cls, (tag, to_wire) in _REGISTERED.items():
        if isinstance(value, cls):
            encoder.encode_semantic(tag, to_wire(value))
            return
    raise EncodeError(_cannot(value))


def _encode_awkward(encoder: cbor2.CBOREncoder, ak: Any, value: Any) -> None:
    # columnar buffers, as awkward itself serializes (never lists of Python values);
    # behaviors are not data: the receiver's ak.behavior (e.g. coffea's) applies
    form, length, container = ak.to_buffers(ak.to_packed(value))
    buffers = {key: np.asarray(buf).reshape(-1) for key, buf in container.items()}
    encoder.encode_semantic(
        TAG_AWKWARD, {"form": form.to_json(), "length": int(length), "buffers": buffers})


_REGISTERED: dict[type, tuple[int, Callable[[Any], Any]]] = {}


def register_tag(tag: int, cls: type, *, to_wire: Callable[[Any], Any],
                 from_wire: Callable[[Any], Any], name: str) -> None:
    """Let another package carry its own type under its own extension tag.

    The package calls this when it is imported (the codec knows no package
    above it): `to_wire(value)` gives plain CBOR data, `from_wire(data)` builds
    the value again and raises TypeError or ValueError for a bad payload (a
    ProtocolError naming the tag `name` then). A process decodes the tag once
    the package is imported.
    """
    _REGISTERED[cls] = (tag, to_wire)

    def decode(value: Any, immutable: bool) -> Any:
        try:
            return from_wire(_thaw(value))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"{name} tag: {exc}") from None

    _TAG_DECODERS[tag] = decode


_REFUSED_TYPES: tuple[type, ...] = (
    uuid.UUID,
    re.Pattern,
    cbor2.CBORTag,
    cbor2.CBORSimpleValue,
    type(cbor2.undefined),
)

# cbor2 encodes these too (semantic tags a peer would have to trust): refused as well,
# once their module is loaded (no such value exists before). Not imported here: the
# codec is on the path of every lite start (its actors' preload, the client).
_REFUSED_LATER: dict[str, tuple[str, ...]] = {
    "decimal": ("Decimal",),
    "fractions": ("Fraction",),
    "ipaddress": ("IPv4Address", "IPv4Network", "IPv4Interface", "IPv6Address",
                  "IPv6Network", "IPv6Interface"),
    "email.message": ("Message",),
}
_modules_seen = 0  # len(sys.modules) when _REFUSED_LATER was last looked at


def _encoders() -> dict[type, Callable[[cbor2.CBOREncoder, Any], None]]:
    """`_ENCODERS`, with the refusals of `_REFUSED_LATER` whose modules are loaded now
    (checked again only when a module was imported since)."""
    global _modules_seen
    if len(sys.modules) != _modules_seen:
        seen, pending = len(sys.modules), False
        for name, kinds in list(_REFUSED_LATER.items()):
            module = sys.modules.get(name)
            if module is None:
                continue
            if getattr(module.__spec__, "_initializing", False):  # another thread imports it
                pending = True  # (no value of its types exists yet): look again next time
                continue
            for kind in kinds:
                _ENCODERS[getattr(module, kind)] = _refuse
            _REFUSED_LATER.pop(name, None)
        _modules_seen = -1 if pending else seen
    return _ENCODERS

_ENCODERS: dict[type, Callable[[cbor2.CBOREncoder, Any], None]] = {
    **{kind: _refuse for kind in _REFUSED_TYPES},
    list: _encode_list,
    dict: _encode_dict,
    tuple: _encode_tuple,
    collections.Counter: _encode_counter,
    bytes: _encode_bytes,
    bytearray: _encode_bytes,
    memoryview: _encode_bytes,
    set: _encode_set,
    complex: _encode_complex,
    frozenset: _encode_set,
    # numpy.complex128 and numpy.ndarray: added once numpy is imported (_numpy_loaded)
    RemoteError: _encode_remote_error,
}


_OOB = threading.local()  # per thread: buffers being collected (encode) or read (decode)


def encode_with_buffers(obj: object, *, threshold: int) -> tuple[bytes, list[memoryview]]:
    """Encode ``obj``, leaving every ndarray and byte string of ``threshold`` bytes
    or more out of band.

    Returns the CBOR item and the arrays' raw buffers (C-contiguous, zero-copy
    views); the item refers to them by index. See frames.py for the wire layout.
    """
    _OOB.collect, _OOB.threshold = [], threshold
    try:
        return encode(obj), _OOB.collect
    finally:
        _OOB.collect = None


def decode_with_buffers(data: bytes | memoryview, buffers: list[memoryview], *,
                        max_size: int = DEFAULT_MAX_FRAME) -> object:
    """Decode an item from :func:`encode_with_buffers` given its out-of-band buffers.

    Each buffer must be referred to exactly once: a frame that names one buffer
    a thousand times would otherwise make a small message decode into gigabytes.
    """
    _OOB.buffers, _OOB.used = buffers, set()
    try:
        value = decode(data, max_size=max_size)
        if len(_OOB.used) != len(buffers):
            raise ProtocolError(f"frame has {len(buffers) - len(_OOB.used)} out-of-band "
                                "buffer(s) nothing refers to")
        return value
    finally:
        _OOB.buffers = _OOB.used = None


_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})
PLAIN_DEPTH = 8
"""Nesting that :func:`encode_plain` follows before leaving a value to :func:`encode`."""


def is_plain(value: object, depth: int = 0) -> bool:
    """True if ``value`` holds only exact str/int/float/bool/None, lists, and str-keyed dicts.

    Such a value encodes to the same bytes with cbor2's C encoder alone as
    through :func:`encode` (whose list and dict hooks run in Python, and whose
    tags never apply to these exact types): the fast path of the small frames
    every packet grant sends (NEXT, PACKET, ACK). Anything else (a subclass, a
    tuple, bytes that may go out of band, deep nesting) is not plain.
    """
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if depth >= PLAIN_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or (type(item) not in _PLAIN_SCALARS
                                        and not is_plain(item, depth + 1)):
                return False
        return True
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            if type(item) not in _PLAIN_SCALARS and not is_plain(item, depth + 1):
                return False
        return True
    return False


def encode_plain(obj: object) -> bytes | None:
    """``encode(obj)`` when ``obj`` is plain (see :func:`is_plain`), faster; else None."""
    return cbor2.dumps(obj) if is_plain(obj) else None


def encode(obj: object) -> bytes:
    """Encode ``obj`` as one CBOR item; raise :class:`EncodeError` if it cannot travel."""
    try:
        return cbor2.dumps(obj, encoders=_encoders(), default=_default)
    except (cbor2.CBOREncodeError, TypeError, ValueError, RecursionError, OverflowError) as exc:
        raise _locate_encode_error(obj, exc) from None


def _encode_one(value: Any) -> None:
    cbor2.dumps(value, encoders=_encoders(), default=_default)


def _locate_encode_error(obj: Any, original: BaseException) -> EncodeError:
    """Walk ``obj`` (only after cbor2 failed) to name where the bad value sits."""
    try:
        found = _find_bad_value(obj)
    except RecursionError:
        found = None
    if found is None:
        if isinstance(original, RecursionError):
            return EncodeError(
                f"structure is nested too deeply to encode (decode accepts {MAX_DEPTH} levels)"
            )
        return EncodeError(str(original))
    path, reason = found
    return EncodeError(f"{path}: {reason}" if path else reason)


def _key_path(path: str, key: Any) -> str:
    if not path and isinstance(key, str) and key.isidentifier():
        return key
    return f"{path}[{key!r}]"


def _children(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(path, child) for the parts of a container the walker descends into."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path or '<top>'} (a map key)", key
            yield _key_path(path, key), item
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield f"{path}[{index}]", item
    elif isinstance(value, (set, frozenset)):
        for item in value:
            yield f"{path or '<top>'} (a set element)", item
    elif isinstance(value, RemoteError):
        yield f"{path}.context", value.context
    elif _histogram_class_name(value) is not None:
        for name, item in value.__dict__.items():
            if not name.startswith("_"):
                yield f"{path}.{name}", item
        for index, axis in enumerate(value.axes):
            for name, item in axis.__dict__.items():
                yield f"{path}.axes[{index}].{name}", item


def _is_container(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple, set, frozenset, RemoteError)) or (
        _histogram_class_name(value) is not None
    )


def _find_bad_value(obj: Any) -> tuple[str, str] | None:
    # Depth-first, in encoding order; `active` holds the containers on the
    # current path, to tell a cycle from a value shared in two places.
    active: set[int] = set()

    def walk(value: Any, path: str) -> tuple[str, str] | None:
        if not _is_container(value):
            try:
                _encode_one(value)
            except Exception as exc:  # noqa: BLE001 - any failure is the answer
                return path, str(exc)
            return None
        if id(value) in active:
            return path, "cyclic reference (the structure contains itself)"
        active.add(id(value))
        try:
            for child_path, child in _children(value, path):
                found = walk(child, child_path)
                if found is not None:
                    return found
        finally:
            active.discard(id(value))
        if isinstance(value, (dict, set, frozenset)) or _histogram_class_name(value) is not None:
            # Parts are fine on their own; the container itself may still fail
            # (e.g. a histogram with an axis type or storage we cannot carry).
            try:
                _encode_one(value)
            except Exception as exc:  # noqa: BLE001
                return path, str(exc)
        return None

    return walk(obj, "")


# --------------------------------------------------------------------------- decode

_FORBIDDEN_STANDARD_TAGS = {
    4: "decimal fraction",
    5: "bigfloat",
    25: "string reference",
    28: "shared value",
    29: "shared value reference",
    30: "rational number",
    35: "regular expression",
    36: "MIME message",
    37: "UUID",
    52: "IPv4 address",
    54: "IPv6 address",
    256: "string reference namespace",
    260: "network address",
    261: "network prefix",
    55799: "self-described CBOR",
}


def _forbidden(tag: int, name: str) -> Callable[..., Any]:
    def refuse(*args: Any) -> Any:
        raise ProtocolError(f"CBOR tag {tag} ({name}) is not allowed on the wire")

    return refuse


_SEMANTIC_DECODERS = {tag: _forbidden(tag, name) for tag, name in _FORBIDDEN_STANDARD_TAGS.items()}


# cbor2 6 decodes a tag's payload deeply immutable (arrays as tuples, maps as
# frozendicts, sets as frozensets) and calls nested tag hooks with
# immutable=True. A tuple tag in such a place returns a _WireTuple, so that
# _thaw can tell it (a real tuple) from a CBOR array (a list).
_FrozenDict = type(cbor2.loads(b"\xa0", immutable=True))


class _WireTuple(tuple):
    """A decoded tuple tag inside another payload, or a map key or set element.

    Only the latter reach callers (equal to, and hashing like, the plain tuple).
    """

    __slots__ = ()


_ENCODERS[_WireTuple] = _encode_tuple


def _thaw(value: Any) -> Any:
    """Turn an immutably decoded tag payload back into what was encoded."""
    kind = type(value)
    if kind is tuple:
        return [_thaw(item) for item in value]
    if kind is _WireTuple:
        return tuple(value)
    if kind is _FrozenDict:
        return {_thaw_key(key): _thaw(item) for key, item in value.items()}
    if kind is frozenset:
        return {_thaw_key(item) for item in value}
    return value


def _thaw_key(key: Any) -> Any:
    return tuple(key) if type(key) is _WireTuple else key


def _decode_tuple(value: Any, immutable: bool) -> tuple:
    if not isinstance(value, tuple):
        raise ProtocolError(f"tuple tag: expected an array, got {cbor_kind(value)}")
    items = [_thaw(item) for item in value]
    return _WireTuple(items) if immutable else tuple(items)


def _decode_counter(value: Any, immutable: bool) -> collections.Counter:
    if not isinstance(value, _FrozenDict):
        raise ProtocolError(f"Counter tag: expected a map, got {cbor_kind(value)}")
    return collections.Counter(_thaw(value))


def _oob_buffer(index: Any, what: str) -> memoryview:
    buffers = getattr(_OOB, "buffers", None)
    if buffers is None:
        raise ProtocolError(f"{what} reference tag outside a frame with out-of-band buffers")
    if type(index) is not int or not 0 <= index < len(buffers):
        raise ProtocolError(f"{what} reference tag: no out-of-band buffer {index!r}")
    if index in _OOB.used:
        raise ProtocolError(f"{what} reference tag: out-of-band buffer {index} referred to twice")
    _OOB.used.add(index)
    return buffers[index]


def _decode_ndarray_ref(value: Any, immutable: bool) -> np.ndarray:
    if not isinstance(value, tuple) or len(value) != 3:
        raise ProtocolError(
            f"ndarray reference tag: expected [dtype, shape, index], got {cbor_kind(value)}")
    buffer = _oob_buffer(value[2], "ndarray")
    return _decode_ndarray((value[0], value[1], buffer), immutable)


def _decode_bytes_ref(value: Any, immutable: bool) -> bytes:
    return bytes(_oob_buffer(value, "bytes"))


def _decode_ndarray(value: Any, immutable: bool) -> np.ndarray:
    if not isinstance(value, tuple) or len(value) != 3:
        raise ProtocolError(f"ndarray tag: expected [dtype, shape, data], got {cbor_kind(value)}")
    dtype_str, shape, data = value
    if not isinstance(dtype_str, str) or not isinstance(data, bytes | memoryview):
        raise ProtocolError(
            "ndarray tag: expected [dtype, shape, data] as [text, array, bytes], got "
            f"[{cbor_kind(dtype_str)}, {cbor_kind(shape)}, {cbor_kind(data)}]"
        )
    try:
        dtype = np.dtype(dtype_str)
    except Exception:  # noqa: BLE001 - numpy raises several types for bad strings
        raise ProtocolError(f"ndarray tag: bad dtype {dtype_str!r}") from None
    if (
        dtype.str != dtype_str
        or dtype.hasobject
        or dtype.names is not None
        or dtype.subdtype is not None
        or dtype.itemsize == 0
    ):
        raise ProtocolError(f"ndarray tag: dtype {dtype_str!r} is not allowed")
    if (
        not isinstance(shape, tuple)
        or len(shape) > _MAX_NDIM
        or not all(type(n) is int and 0 <= n < 2**62 for n in shape)
    ):
        raise ProtocolError(f"ndarray tag: bad shape {shape!r}")
    count = math.prod(shape)
    if count * dtype.itemsize != (data.nbytes if isinstance(data, memoryview) else len(data)):
        raise ProtocolError(
            f"ndarray tag: shape {tuple(shape)} of {dtype_str} needs "
            f"{count * dtype.itemsize} bytes, got {len(data)}"
        )
    try:
        return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
    except ValueError as exc:
        raise ProtocolError(f"ndarray tag: {exc}") from None


_HISTOGRAM_KEYS = {"class", "uhi", "data"}
_HISTOGRAM_CLASSES = {
    "boost_histogram.Histogram": "Histogram",
    "hist.Hist": "Hist",
    "hist.NamedHist": "NamedHist",
}
_AXIS_SIZE_KEYS = {
    "regular": "bins",
    "variable": "edges",
    "category_int": "categories",
    "category_str": "categories",
    "boolean": None,
}


def _axis_extent(index: int, axis: Any) -> int:
    """Cells (flow included) an UHI axis dict asks for, checked before allocating."""

    def bad(why: str) -> ProtocolError:
        return ProtocolError(f"histogram tag: axis {index}: {why}")

    if not isinstance(axis, dict):
        raise bad(f"expected a map, got {cbor_kind(axis)}")
    kind = axis.get("type")
    if kind not in _AXIS_SIZE_KEYS:
        raise bad(f"unknown axis type {kind!r}")
    if kind == "boolean":
        return 2
    writer = axis.get("writer_info", {})
    writer = writer.get("boost-histogram", {}) if isinstance(writer, dict) else None
    if not isinstance(writer, dict):
        raise bad("writer_info is not a map")
    if kind.startswith("category"):
        categories = axis.get("categories")
        if not isinstance(categories, (list, tuple)):
            raise bad("categories is not an array")
        return len(categories) + (1 if axis.get("flow") else 0)
    if writer.get("transform") in ("pow", "log", "sqrt"):
        bins = writer.get("bins")
        flows = 2  # boost-histogram rebuilds transformed axes with both flow bins
    elif kind == "regular":
        bins = axis.get("bins")
        flows = bool(axis.get("underflow")) + bool(axis.get("overflow"))
    else:
        edges = axis.get("edges")
        if not isinstance(edges, (list, tuple, np.ndarray)) or len(edges) < 2:
            raise bad("edges is not an array of at least two numbers")
        bins = len(edges) - 1
        flows = bool(axis.get("underflow")) + bool(axis.get("overflow"))
    if type(bins) is not int or bins < 0:
        raise bad(f"bad number of bins {bins!r}")
    return bins + flows


def _decode_histogram(value: Any, immutable: bool) -> Any:
    value = _thaw(value)
    if not isinstance(value, dict) or set(value) != _HISTOGRAM_KEYS:
        keys = sorted(map(str, value)) if isinstance(value, dict) else cbor_kind(value)
        raise ProtocolError(f"histogram tag: expected a map with keys class, uhi, data, got {keys}")
    class_name, uhi, data = value["class"], value["uhi"], value["data"]
    if class_name not in _HISTOGRAM_CLASSES:
        raise ProtocolError(f"histogram tag: unknown histogram class {class_name!r}")
    if not isinstance(uhi, dict) or not isinstance(uhi.get("axes"), (list, tuple)):
        raise ProtocolError("histogram tag: uhi is not a map with an axes array")
    storage = uhi.get("storage")
    if not isinstance(storage, dict) or set(storage) - {"type", "writer_info"}:
        raise ProtocolError("histogram tag: uhi storage must be a map with only type")
    extents = tuple(_axis_extent(i, axis) for i, axis in enumerate(uhi["axes"]))
    fields = data if isinstance(data, dict) else {None: data}
    for name, array in fields.items():
        if not isinstance(array, np.ndarray) or array.shape != extents:
            shape = array.shape if isinstance(array, np.ndarray) else cbor_kind(array)
            raise ProtocolError(
                f"histogram tag: data {name or ''} shape {shape} does not match axes {extents}"
                if name
                else f"histogram tag: data shape {shape} does not match axes {extents}"
            )
    try:
        import boost_histogram.serialization as serialization

        histogram = serialization.from_uhi(uhi)
        if class_name != "boost_histogram.Histogram":
            import hist

            histogram = getattr(hist, _HISTOGRAM_CLASSES[class_name])(histogram)
        view = np.asarray(histogram.view(flow=True))
        if view.dtype.names is None:
            if None not in fields:
                raise ValueError(f"{storage.get('type')} storage needs one data array")
            view[...] = fields[None]
        else:
            if set(fields) != set(view.dtype.names):
                raise ValueError(
                    f"{storage.get('type')} storage needs data fields {', '.join(view.dtype.names)}"
                )
            for name, array in fields.items():
                view[name] = array
    except ImportError as exc:
        raise ProtocolError(
            f"histogram tag: cannot decode a {class_name}: {exc} (pip install hist)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - boost-histogram raises many types
        raise ProtocolError(f"histogram tag: {type(exc).__name__}: {exc}") from None
    return histogram


def _decode_awkward(value: Any, immutable: bool) -> Any:
    value = _thaw(value)
    if not isinstance(value, dict) or set(value) != {"form", "length", "buffers"}:
        raise ProtocolError("awkward tag: expected a map with keys form, length, buffers")
    form, length, buffers = value["form"], value["length"], value["buffers"]
    if not isinstance(form, str) or type(length) is not int or length < 0 or not (
            isinstance(buffers, dict) and all(
                isinstance(k, str) and isinstance(b, np.ndarray) for k, b in buffers.items())):
        raise ProtocolError("awkward tag: form must be text, length a non-negative integer, "
                            "buffers a map of text -> ndarray")
    try:
        import awkward as ak

        return ak.from_buffers(ak.forms.from_json(form), length, buffers)
    except Exception as exc:  # noqa: BLE001 - awkward raises many types for bad forms
        raise ProtocolError(f"awkward tag: {type(exc).__name__}: {exc}") from None


_REMOTE_ERROR_FIELDS = {"type": str, "message": str, "traceback": str, "context": dict}


def _decode_remote_error(value: Any, immutable: bool) -> RemoteError:
    value = _thaw(value)
    if not isinstance(value, dict) or set(value) != set(_REMOTE_ERROR_FIELDS):
        raise ProtocolError(
            "RemoteError tag: expected a map with keys type, message, traceback, context"
        )
    for name, kind in _REMOTE_ERROR_FIELDS.items():
        if not isinstance(value[name], kind):
            raise ProtocolError(
                f"RemoteError tag: {name} must be {kind.__name__}, got {cbor_kind(value[name])}"
            )
    if not all(isinstance(key, str) for key in value["context"]):
        raise ProtocolError("RemoteError tag: context keys must be text")
    return RemoteError(**value)


_TAG_DECODERS: dict[int, Callable[[Any, bool], Any]] = {
    TAG_TUPLE: _decode_tuple,
    TAG_COUNTER: _decode_counter,
    TAG_NDARRAY: _decode_ndarray,
    TAG_NDARRAY_REF: _decode_ndarray_ref,
    TAG_BYTES_REF: _decode_bytes_ref,
    TAG_HISTOGRAM: _decode_histogram,
    TAG_REMOTE_ERROR: _decode_remote_error,
    TAG_AWKWARD: _decode_awkward,
}


def _tag_hook(tag: cbor2.CBORTag, immutable: bool) -> Any:
    decoder = _TAG_DECODERS.get(tag.tag)
    if decoder is None:
        raise ProtocolError(f"unknown CBOR tag {tag.tag}")
    return decoder(tag.value, immutable)


def cbor_kind(value: Any) -> str:
    """A CBOR-ish name for the type of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, (list, tuple)):
        return f"array of {len(value)}"
    if isinstance(value, Mapping):
        return "map"
    return type(value).__name__


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_FRAME) -> object:
    """Decode one CBOR item that must fill ``data`` exactly.

    Raises :class:`ProtocolError` for anything malformed: more than ``max_size``
    bytes (checked before decoding), truncated data, trailing bytes, a tag that
    is unknown or forbidden, a tag payload of the wrong shape, nesting deeper
    than :data:`MAX_DEPTH`. Raises ``TypeError`` if ``data`` is not bytes-like.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode() needs bytes, not {type(data).__qualname__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_size:
        raise ProtocolError(f"frame of {size} bytes exceeds the limit of {max_size} bytes")
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            stream,
            tag_hook=_tag_hook,
            semantic_decoders=_SEMANTIC_DECODERS,
            max_depth=MAX_DEPTH,
        ).decode()
    except cbor2.CBORDecodeEOF:
        raise ProtocolError(f"truncated CBOR data ({size} bytes)") from None
    except Exception as exc:  # noqa: BLE001 - nothing but ProtocolError may escape
        raise _as_protocol_error(exc) from None
    used = stream.tell()
    if used != size:
        raise ProtocolError(
            f"{size - used} trailing bytes after a complete CBOR item of {used} bytes"
        )
    return value


def _as_protocol_error(exc: BaseException) -> ProtocolError:
    # cbor2 wraps what a hook raised (or a TypeError such as an unhashable key)
    # in a CBORDecodeError: report our own message, or the whole chain.
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        if isinstance(seen, ProtocolError):
            return ProtocolError(str(seen))
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    detail = str(exc)
    if len(chain) > 1:
        root = chain[-1]
        detail = f"{detail} ({type(root).__name__}: {root})"
    return ProtocolError(f"malformed CBOR: {detail}")
