"""What ringline promises to export exists (in the spirit of trio's test_exports).

* every name in an ``__all__`` of the package and its public modules exists;
* every compiled module has a stub, and every public name a stub declares
  exists on the compiled module, as the same kind of thing (class, function,
  coroutine function, method, property, constant);
* the ``Op`` enum of ``_core/tags.pyi`` is the runtime ``ringline._core.tags.Op``;
* the stubs and the ``py.typed`` marker are shipped as package data.

The stubs are read from the source tree (``src/ringline``), the modules
imported from wherever the suite runs (the in-place release build or the
debug build tree).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import pkgutil
import sys
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

import ringline
from tests.support import paths

ROOT = paths.ROOT
SRC = paths.SRC / "ringline"
STUBS = sorted(SRC.rglob("*.pyi"))
# Compiled modules as paths relative to SRC without the suffix ("_core/loop").
COMPILED = sorted(str(p.relative_to(SRC).with_suffix("")) for p in SRC.rglob("*.pyx"))

# Dunders that only exist as Python-level methods from some version on.
DUNDERS_SINCE = {
    "__buffer__": (3, 12),           # PEP 688: the buffer protocol as methods
    "__release_buffer__": (3, 12),
}
BUILTIN_TYPES = {"int": int, "float": float, "str": str, "bytes": bytes, "bool": bool,
                 "dict": dict, "list": list, "tuple": tuple, "set": set,
                 "frozenset": frozenset}


def _public_modules() -> list[str]:
    names = ["ringline"]
    for info in pkgutil.iter_modules(ringline.__path__):
        if not info.name.startswith("_"):
            names.append(f"ringline.{info.name}")
    return names


# ---------------------------------------------------------------------------
# __all__
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("modname", _public_modules())
def test_public_module_imports_and_its_all_exists(modname: str) -> None:
    mod = importlib.import_module(modname)
    names = getattr(mod, "__all__", None)
    if names is None:
        assert modname != "ringline", "ringline has no __all__"
        return
    assert len(names) == len(set(names)), f"duplicates in {modname}.__all__"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{modname}.__all__ names that do not exist: {missing}"


def test_star_import_gives_exactly_all() -> None:
    ns: dict[str, Any] = {}
    exec("from ringline import *", ns)
    ns.pop("__builtins__", None)
    assert set(ns) == set(ringline.__all__)
    for name in ringline.__all__:
        assert ns[name] is getattr(ringline, name)


@pytest.mark.parametrize("name", ringline.__all__)
def test_name_imports_by_from_import(name: str) -> None:
    ns: dict[str, Any] = {}
    exec(f"from ringline import {name}", ns)
    assert ns[name] is getattr(ringline, name)


# ---------------------------------------------------------------------------
# Stubs of the compiled modules
# ---------------------------------------------------------------------------

def _modname(stub: pathlib.Path) -> str:
    return "ringline." + ".".join(stub.relative_to(SRC).with_suffix("").parts)


def test_every_compiled_module_has_a_stub() -> None:
    assert COMPILED, f"no .pyx found under {SRC}"
    missing = [m for m in COMPILED if not (SRC / f"{m}.pyi").exists()]
    assert not missing, f"compiled modules without a .pyi stub: {missing}"


def test_stubs_and_marker_are_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["*"]
    assert "*.pyi" in data and "py.typed" in data, data
    assert (SRC / "py.typed").exists()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _static_condition(test: ast.expr) -> bool | None:
    """Value of an ``if sys.version_info ...`` / ``if sys.platform ...`` test."""
    try:
        code = compile(ast.Expression(test), "<stub>", "eval")
        return bool(eval(code, {"sys": sys}))
    except Exception:
        return None


def _body(stmts: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of a stub body, taking the branch of version checks that applies."""
    for stmt in stmts:
        if isinstance(stmt, ast.If):
            cond = _static_condition(stmt.test)
            if cond is None:
                continue
            yield from _body(stmt.body if cond else stmt.orelse)
        else:
            yield stmt


def _decorators(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = set()
    for d in fn.decorator_list:
        if isinstance(d, ast.Name):
            names.add(d.id)
        elif isinstance(d, ast.Attribute):
            names.add(d.attr)       # x.setter, typing.overload, functools.cached_property
    return names


def _is_alias(stmt: ast.Assign | ast.AnnAssign) -> bool:
    """Stub-only names: ``X = SomeType`` (an implicit alias), ``X: TypeAlias = ...``,
    ``T = TypeVar(...)``."""
    if isinstance(stmt, ast.AnnAssign):
        ann = ast.unparse(stmt.annotation)
        return ann in ("TypeAlias", "typing.TypeAlias", "typing_extensions.TypeAlias")
    return not isinstance(stmt.value, ast.Constant)


class Decl:
    """One name a stub declares."""

    def __init__(self, name: str, kind: str, node: ast.AST) -> None:
        self.name = name
        self.kind = kind      # class | function | coroutine | property | method | attribute
        self.node = node

    def __repr__(self) -> str:
        return f"{self.kind} {self.name} (line {getattr(self.node, 'lineno', '?')})"


def _declarations(stmts: list[ast.stmt], in_class: bool) -> list[Decl]:
    out: list[Decl] = []
    for stmt in _body(stmts):
        if isinstance(stmt, ast.ClassDef):
            out.append(Decl(stmt.name, "class", stmt))
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            decos = _decorators(stmt)
            if {"property", "cached_property", "setter", "deleter"} & decos:
                kind = "property"
            elif isinstance(stmt, ast.AsyncFunctionDef):
                kind = "coroutine"
            elif in_class:
                kind = "method"
            else:
                kind = "function"
            out.append(Decl(stmt.name, kind, stmt))
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if not _is_alias(stmt):
                out.append(Decl(stmt.target.id, "attribute", stmt))
        elif isinstance(stmt, ast.Assign):
            if in_class or not _is_alias(stmt):
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        out.append(Decl(target.id, "attribute", stmt))
    # A property with a setter, or an @overload'ed function, appears more than once.
    seen: dict[str, Decl] = {}
    for d in out:
        seen.setdefault(d.name, d)
    return list(seen.values())


def _parse(stub: pathlib.Path) -> ast.Module:
    return ast.parse(stub.read_text(), filename=str(stub))


def _wanted(name: str) -> bool:
    if _is_private(name):
        return False
    since = DUNDERS_SINCE.get(name)
    return since is None or sys.version_info >= since


def _check_kind(where: str, decl: Decl, static: Any, value: Any,
                module_level: bool = False) -> list[str]:
    """Problems with runtime ``value`` (``static``: as found without descriptors)
    standing for ``decl``."""
    if decl.kind == "class":
        if not inspect.isclass(value):
            return [f"{where}: stub declares a class, runtime has {type(value).__name__}"]
    elif decl.kind in ("function", "method", "coroutine"):
        if inspect.isdatadescriptor(static) and not callable(value):
            return [f"{where}: stub declares a method, runtime has a property/attribute"]
        if not callable(value):
            return [f"{where}: stub declares a function, runtime has {type(value).__name__}"]
        is_coro = inspect.iscoroutinefunction(value)
        if decl.kind == "coroutine" and not is_coro:
            return [f"{where}: stub declares `async def`, runtime is not a coroutine function"]
        if decl.kind != "coroutine" and is_coro:
            return [f"{where}: stub declares a plain def, runtime is a coroutine function"]
    elif decl.kind == "property":
        if not inspect.isdatadescriptor(static) and callable(value):
            return [f"{where}: stub declares a property, runtime has a method"]
    elif decl.kind == "attribute" and module_level and isinstance(decl.node, ast.AnnAssign):
        # A module constant annotated with a builtin type has a value of it.
        ann = decl.node.annotation
        base = ann.value if isinstance(ann, ast.Subscript) else ann
        expected = BUILTIN_TYPES.get(base.id) if isinstance(base, ast.Name) else None
        if expected is not None and not isinstance(value, expected):
            return [f"{where}: stub says {ast.unparse(ann)}, runtime has "
                    f"{type(value).__name__} {value!r:.60}"]
    return []


@pytest.mark.parametrize("stub", STUBS, ids=[_modname(s) for s in STUBS])
def test_stub_names_exist_at_runtime(stub: pathlib.Path) -> None:
    modname = _modname(stub)
    mod = importlib.import_module(modname)
    problems: list[str] = []
    for decl in _declarations(_parse(stub).body, in_class=False):
        if not _wanted(decl.name):
            continue
        where = f"{modname}.{decl.name}"
        if not hasattr(mod, decl.name):
            problems.append(f"{where}: declared by {stub.name} ({decl!r}) but missing at runtime")
            continue
        value = getattr(mod, decl.name)
        problems += _check_kind(where, decl, value, value, module_level=True)
        if decl.kind != "class" or not inspect.isclass(value):
            continue
        assert isinstance(decl.node, ast.ClassDef)
        for member in _declarations(decl.node.body, in_class=True):
            if not _wanted(member.name):
                continue
            mwhere = f"{where}.{member.name}"
            try:
                static = inspect.getattr_static(value, member.name)
            except AttributeError:
                problems.append(f"{mwhere}: declared by {stub.name} ({member!r}) "
                                "but missing at runtime")
                continue
            problems += _check_kind(mwhere, member, static, getattr(value, member.name))
    assert not problems, "stub/runtime mismatches:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------------------
# The Op enum
# ---------------------------------------------------------------------------

def test_op_enum_in_stub_matches_runtime() -> None:
    from ringline._core.tags import Op

    tree = _parse(SRC / "_core" / "tags.pyi")
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Op"]
    assert len(classes) == 1, "_core/tags.pyi must declare class Op once"
    declared: dict[str, int] = {}
    for stmt in classes[0].body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            assert isinstance(target, ast.Name)
            assert isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, int), \
                f"Op.{target.id} must have a literal int value in the stub"
            declared[target.id] = stmt.value.value
    runtime = {m.name: int(m.value) for m in Op}
    assert declared == runtime
