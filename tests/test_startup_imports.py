"""What a lite session's processes import to start: neither the client nor the data path.

Every actor is forked from the daemon, which imports their modules before its
actor system starts: what they import is on the critical path of a start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import pyproof
from pyproof.transport.codec import decode, encode

HEAVY = ("pyproof.client.session", "pyproof.client.progress", "uproot", "awkward", "hist",
         "numpy")


def imported(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `code`."""
    probe = f"{code}; import sys, json; print(json.dumps([m for m in {modules!r} " \
            "if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_every_public_name_of_pyproof_resolves() -> None:
    for name in pyproof.__all__:
        assert getattr(pyproof, name) is not None, name
    assert set(pyproof.__all__) <= set(dir(pyproof))


def test_the_daemon_and_the_actors_start_without_the_client_and_the_data_modules() -> None:
    # numpy, uproot, awkward and hist load later, on a warm-up thread (actors/warmup.py)
    code = ("import pyproof.actors.daemon; "
            "from pyproof.actors.warmup import preload_actor_modules; preload_actor_modules()")
    assert imported(code, HEAVY) == []
    # structlog, but not the rich its console renderer would import (the actors log JSON)
    assert imported(code, ("structlog", "rich")) == ["structlog"]


def test_the_daemon_module_imports_no_nng_and_no_codec() -> None:
    # its own start (interpreter, imports) comes before anything else can start
    assert imported("import pyproof.actors.daemon",
                    ("pynng", "cbor2", "pyproof.transport.codec", *HEAVY)) == []


def test_connect_starts_a_lite_daemon_before_it_imports_the_rest_of_the_client() -> None:
    # nng, the codec and Session load while the daemon boots (client/connect.py)
    heavy = ("pynng", "pyproof.client.session", "pyproof.transport.codec",
             "pyproof.supervision.core")
    assert imported("import pyproof; pyproof.connect", heavy) == []
    # what was loaded when the cluster's process is started (here: a class that records it)
    code = ("import sys, pyproof\n"
            "from pyproof.client import connect as c\n"
            "class Started(Exception): pass\n"
            "class Cluster:\n"
            "    def __init__(self, **kwargs): raise Started(sorted(sys.modules))\n"
            "c.LiteCluster = Cluster\n"
            "try: pyproof.connect('lite://?workers=2')\n"
            "except Started as started: print([m for m in started.args[0] if m in "
            f"{heavy!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.splitlines() == ["[]"]


def test_the_codec_imports_numpy_only_for_an_array() -> None:
    array = encode({"a": np.arange(3.0), "n": np.int64(7)})
    code = ("from pyproof.transport.codec import decode, encode; "
            "assert decode(encode({'k': [1, 2.5, 'x', b'y', (1, 2)]}))['k'][3] == b'y'")
    assert imported(code, ("numpy",)) == []
    # a decoded array imports it; arrays and numpy scalars then encode as before
    code = (f"from pyproof.transport.codec import decode, encode; v = decode({array!r}); "
            "assert v['a'].tolist() == [0.0, 1.0, 2.0] and v['n'] == 7; "
            "assert encode(v) == encode(decode(encode(v)))")
    assert imported(code, ("numpy",)) == ["numpy"]
    assert decode(encode(decode(array)))["a"].tolist() == [0.0, 1.0, 2.0]


def test_the_actors_preload_leaves_out_the_stdlib_types_the_codec_refuses() -> None:
    # decimal, fractions, ipaddress, email: cbor2 would encode their values; the codec
    # refuses them once they are loaded (no value of theirs exists before), and does not
    # load them itself (decimal, fractions and email: 6 ms of every start's preload)
    code = ("import pyproof.actors.daemon; "
            "from pyproof.actors.warmup import preload_actor_modules; preload_actor_modules()")
    later = ("decimal", "fractions", "ipaddress", "email.message")
    assert imported(code, later) in ([], ["ipaddress"])  # pathlib imports urllib's
    refused = ("import decimal, fractions, ipaddress, email.message\n"
               "from pyproof.transport.codec import encode, EncodeError\n"
               "values = [decimal.Decimal(1), fractions.Fraction(1, 3),\n"
               "          ipaddress.ip_address('::1'), email.message.Message()]\n"
               "for value in values:\n"
               "    try:\n"
               "        encode(value)\n"
               "    except EncodeError:\n"
               "        continue\n"
               "    raise SystemExit(f'{value!r} was encoded')\n"
               "pass")
    assert imported(refused, later) == list(later)


def test_the_actors_preload_leaves_asyncio_until_an_async_api_is_used() -> None:
    # pynng and structlog import asyncio for their async APIs, which no actor uses (a
    # quarter of the preload): a stand-in imports it on first use (actors/warmup.py)
    code = ("import pyproof.actors.daemon; "
            "from pyproof.actors.warmup import preload_actor_modules; preload_actor_modules()")
    assert imported(code, ("asyncio", "ssl", "pynng", "structlog")) == ["pynng", "structlog"]
    async_apis = (
        code + "\n"
        "import asyncio, pynng, structlog\n"
        "assert type(asyncio).__name__ == 'module'  # a later import: the real one\n"
        "async def main():\n"
        "    with pynng.Pair0(listen='inproc://on-use') as a, "
        "pynng.Pair0(dial='inproc://on-use') as b:\n"
        "        await a.asend(b'hi')\n"
        "        await structlog.get_logger().ainfo('sent')  # structlog's own reference\n"
        "        return await b.arecv()\n"
        "assert asyncio.run(main()) == b'hi'\n"
        "pass")
    assert imported(async_apis, ("asyncio",)) == ["asyncio"]


def test_the_actors_preload_leaves_the_dataset_catalog_until_it_is_used() -> None:
    # the actors import pyproof.datasets for its records' CBOR tag; the catalog (SQLite,
    # file lists, globs) and verification load on first use of their names
    code = ("import pyproof.actors.daemon; "
            "from pyproof.actors.warmup import preload_actor_modules; preload_actor_modules()")
    later = ("pyproof.datasets.catalog", "pyproof.datasets.verify")
    assert imported(code, later) == []
    assert imported(code + "; from pyproof.datasets import Catalog, verify_file", later) == \
        list(later)


def test_the_actors_preload_compiles_what_a_sessions_start_makes() -> None:
    # pyproof.dataclass compiles a class's __init__ on first use: in each process of the
    # start, one after the other, unless the admin compiled it before forking them
    from pyproof.actors.warmup import START_CLASSES

    code = ("import importlib, types\n"
            "from pyproof.actors.warmup import START_CLASSES, preload_actor_modules\n"
            "preload_actor_modules()\n"
            "def compiled(path):\n"
            "    module, _, name = path.partition(':')\n"
            "    init = vars(getattr(importlib.import_module(module), name))['__init__']\n"
            "    return isinstance(init, types.FunctionType)\n"
            "print([p for p in START_CLASSES if not compiled(p)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert len(START_CLASSES) > 20 and out.splitlines()[-1] == "[]"


def test_the_actors_preload_leaves_the_package_store_until_it_is_used() -> None:
    # the gateway and the master import packages.service for its requests and a query's
    # packages; the store (zips, their checks) loads on the first of those
    code = ("import pyproof.actors.daemon; "
            "from pyproof.actors.warmup import preload_actor_modules; preload_actor_modules()")
    later = ("pyproof.packages.store", "pyproof.packages.zips")
    assert imported(code, later) == []
    used = code + "; from pyproof.packages import service; service.query_packages('u', 's')"
    assert imported(used, later) == list(later)
