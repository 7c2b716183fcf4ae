"""Your own code travels too: a selector from `__main__`, and files listed in `ship=`.

A selector class defined in a notebook cell, in `python -` or `python -c`
has no file a worker could import. It travels as a tiny module instead:

- its source, when Python can find it (`inspect.getsource`: notebooks and
  IPython keep every cell's source), with what it uses from `__main__`
  written in front (imports of modules, `from m import f` for things from
  installed modules, literal constants, and the source of helper functions
  and classes defined interactively too);
- else (standard input: no source is kept anywhere) the class pickled by
  value (cloudpickle), wrapped in a module that unpickles it. That module
  runs only in the session's worker processes, which run the user's code
  anyway; the daemon passes it along as text and never unpickles anything.

`ship=["helpers.py", "mylib/"]` adds modules of the user's own (their
source, read now) to what the workers import the selector with.
"""

from __future__ import annotations

import ast
import base64
import builtins
import hashlib
import inspect
import os
import sys
import types
from typing import Any

from pyproof.errors import InputError
from pyproof.selector import Selector, SelectorCode, SelectorError, selector_code, selector_ref

MAIN_PATH = "<__main__>"
_MAX_DEFINITIONS = 200


def is_interactive(selector: Any) -> bool:
    """A selector class from a `__main__` that has no file (notebook, stdin, -c): `python -`
    sets `__file__` to '<stdin>', which is no file either."""
    if not (isinstance(selector, type) and selector.__module__ == "__main__"):
        return False
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    return not (isinstance(file, str) and os.path.isfile(file))


def code_for(selector: type[Selector] | str, search: list[str],
             ship: list[str | os.PathLike[str]] | None = None) -> tuple[str, SelectorCode]:
    """The reference workers load the selector by, and the code that goes with it."""
    if is_interactive(selector):
        assert isinstance(selector, type)
        if not issubclass(selector, Selector):
            raise SelectorError(f"{selector!r} is not a subclass of pyproof.Selector")
        if "<locals>" in selector.__qualname__:
            raise SelectorError(f"selector {selector.__qualname__} is defined inside a "
                                "function; define it at the top level of the cell or script")
        module, source = main_module(selector)
        ref = f"{module}:{selector.__name__}"
        sources: list[tuple[str | None, str, str]] = [(module, MAIN_PATH, source)]
    else:
        ref = selector_ref(selector)
        sources = list(selector_code(ref, search).sources)
    taken = {s[0] for s in sources}
    sources += [s for s in shipped(ship or []) if s[0] not in taken]
    return ref, SelectorCode.of(ref, sources)


def main_module(cls: type) -> tuple[str, str]:
    """(module name, source) of a module that defines `cls` as `__main__` had it."""
    try:
        source = _source_module(cls)
    except _NoSource:
        source = _pickled_module(cls)
    name = "pyproof_main_" + hashlib.sha256(source.encode()).hexdigest()[:16]
    return name, source


class _NoSource(Exception):
    pass


def _source_module(cls: type) -> str:
    main = sys.modules["__main__"].__dict__
    header: list[str] = []
    definitions: list[str] = []
    done: set[str] = set()

    def define(name: str, obj: Any) -> None:
        if name in done:
            return
        done.add(name)
        if len(done) > _MAX_DEFINITIONS:
            raise _NoSource
        text = _dedent(_getsource(obj))
        for used in sorted(_free_names(text)):
            if used in done or used not in main:
                continue  # a builtin, or defined in this code
            value = main[used]
            if _from_main(value):
                define(used, value)
            else:
                header.append(_bring(used, value))
                done.add(used)
        definitions.append(text)

    define(cls.__name__, cls)
    return "\n".join(["# a selector defined interactively, sent by pyproof", *header, "",
                      *definitions])


def _getsource(obj: Any) -> str:
    """inspect.getsource, and for a class whose module has no (true) file, its definition
    found where its methods' code came from (a notebook cell kept in linecache)."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        if not isinstance(obj, type):
            raise _NoSource from None
    import linecache

    for value in vars(obj).values():
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        lines = linecache.getlines(code.co_filename) if code is not None else []
        if not lines:
            continue
        text = "".join(lines)
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == obj.__name__
                 and n.lineno <= code.co_firstlineno <= (n.end_lineno or n.lineno)]
        if found:
            node = found[-1]
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            return "".join(lines[first - 1:node.end_lineno])
    raise _NoSource


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)


def _from_main(value: Any) -> bool:
    return (isinstance(value, type | types.FunctionType)
            and getattr(value, "__module__", None) == "__main__")


def _bring(name: str, value: Any) -> str:
    """A line that binds `name` to `value` on the worker, else _NoSource."""
    if isinstance(value, types.ModuleType):
        return (f"import {value.__name__} as {name}" if "." in value.__name__ or
                value.__name__ != name else f"import {name}")
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if module and qualname and "." not in qualname and module != "__main__":
        return f"from {module} import {qualname} as {name}"
    try:
        text = repr(value)
        if ast.literal_eval(text) == value:
            return f"{name} = {text}"
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    raise _NoSource


def _free_names(source: str) -> set[str]:
    """Names `source` reads that it does not bind itself (nor are builtins)."""
    tree = ast.parse(source)
    read, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return {n for n in read - bound if not hasattr(builtins, n)}


def _pickled_module(cls: type) -> str:
    import cloudpickle

    try:
        data = cloudpickle.dumps(cls)
    except Exception as exc:
        raise SelectorError(
            f"selector {cls.__qualname__} from __main__ has no source Python can find and "
            f"cannot be pickled by value ({exc!r}); put it in a .py file and pass "
            "'file.py:Class'") from None
    text = base64.b64encode(data).decode()
    return ("# a selector defined on standard input, pickled by value by pyproof\n"
            "import base64 as _base64\nimport pickle as _pickle\n\n"
            "import cloudpickle as _cloudpickle  # noqa: F401  (its reducers)\n\n"
            f"{cls.__name__} = _pickle.loads(_base64.b64decode({text!r}))\n")


def shipped(paths: list[str | os.PathLike[str]]) -> list[tuple[str | None, str, str]]:
    """(module, path, source) of each file of `ship=`: a `.py` file is a module named after
    it, a directory a package (its `.py` files, recursively)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[tuple[str | None, str, str]] = []
    for given in paths:
        path = os.path.abspath(os.fspath(given))
        if os.path.isfile(path) and path.endswith(".py"):
            out.append((os.path.splitext(os.path.basename(path))[0], path, _read(path)))
        elif os.path.isdir(path):
            top = os.path.basename(path.rstrip(os.sep))
            for directory, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                for file in sorted(f for f in files if f.endswith(".py")):
                    full = os.path.join(directory, file)
                    rel = os.path.relpath(full, os.path.dirname(path))[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    out.append((".".join(rel) or top, full, _read(full)))
        else:
            raise InputError(f"ship={os.fspath(given)!r}: no such .py file or directory "
                             f"(looked at {path})")
    return out


def _read(path: str) -> str:
    import importlib.util

    with open(path, "rb") as f:
        return importlib.util.decode_source(f.read())
