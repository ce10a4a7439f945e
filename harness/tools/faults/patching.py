"""Source patches of torch functions, in process: a fault is a small edit of one function's source, compiled with the
function's own file name and swapped in as its ``__code__``.

Swapping the code object (rather than rebinding a name) reaches every holder of the function: modules that imported
it by name (``from torch._functorch.partitioners import min_cut_rematerialization_partition``), bound methods,
registered kernels, decorators' wrappers (``functools.wraps`` keeps the same function underneath).  The function keeps
its identity, defaults, globals and closure cells, so Dynamo's rules keyed on the function object or on its file
still apply.  A closure (``__class__`` for ``super()``, an enclosing function's variables) is rebuilt by compiling
the edited source inside a shell that declares the same free variables, in the same order.

A data patch (a module-level list or set that the pipeline reads at call time) edits the container in place and puts
its contents back on undo.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
import types
from typing import Any, Callable

Undo = Callable[[], None]


def resolve(target: str) -> Any:
    """``"package.module:expression"``: the expression evaluated in the module's namespace (an attribute path such as
    ``Class.method``, or an item such as ``op.py_kernels[torch._C.DispatchKey.CPU]``)."""
    module_name, _, expr = target.partition(":")
    module = importlib.import_module(module_name)
    return eval(expr, vars(module)) if expr else module  # noqa: S307 - expressions written in this package


def function_of(obj: Any) -> types.FunctionType:
    """The plain function under ``obj`` (a staticmethod, a classmethod, a ``functools.wraps`` wrapper)."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    obj = inspect.unwrap(obj)
    if not isinstance(obj, types.FunctionType):
        raise TypeError(f"expected a Python function to patch, got {type(obj).__name__}: {obj!r}")
    return obj


def _code_in(code: types.CodeType, name: str) -> types.CodeType | None:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if const.co_name == name:
                return const
            found = _code_in(const, name)
            if found is not None:
                return found
    return None


def edited_code(func: types.FunctionType, edits: tuple[tuple[str, str], ...]) -> types.CodeType:
    """The code of ``func`` with each ``(old, new)`` text edit applied to its source; ``old`` must occur exactly once."""
    original = func.__code__
    source = textwrap.dedent(inspect.getsource(original))
    for old, new in edits:
        n = source.count(old)
        if n != 1:
            raise ValueError(f"patch of {func.__module__}.{func.__qualname__}: expected the text {old!r} exactly once "
                             f"in its source, found it {n} times (torch changed?)")
        source = source.replace(old, new)
    tree = ast.parse(source)
    fdef = tree.body[0]
    if not isinstance(fdef, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ValueError(f"{func.__qualname__}: its source does not start with a def")
    fdef.decorator_list = []  # the function object already carries whatever its decorators did
    ast.increment_lineno(tree, original.co_firstlineno - 1)
    freevars = original.co_freevars
    # A shell that gives the function the same free variables: an enclosing function binding each, and a class
    # around it when the function uses super() (the __class__ cell).
    outer_vars = [v for v in freevars if v != "__class__"]
    body: list[ast.stmt] = [fdef]
    if "__class__" in freevars:
        body = [ast.ClassDef(name="_shell_class", bases=[], keywords=[], body=body, decorator_list=[])]
    if freevars:
        binds = [ast.Assign(targets=[ast.Name(id=v, ctx=ast.Store())], value=ast.Constant(None)) for v in outer_vars]
        shell = ast.FunctionDef(name="_shell", args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[],
                                                                  defaults=[]),
                                body=binds + body + [ast.Return(value=ast.Constant(None))], decorator_list=[])
        body = [shell]
    module = ast.Module(body=body, type_ignores=[])
    ast.fix_missing_locations(module)
    code = compile(module, original.co_filename, "exec")
    new = _code_in(code, original.co_name)
    if new is None:
        raise ValueError(f"{func.__qualname__}: the edited source compiled to no function named {original.co_name}")
    if new.co_freevars != freevars:
        raise ValueError(f"{func.__qualname__}: free variables changed by the edit: {freevars} -> {new.co_freevars}")
    return new.replace(co_name=original.co_name, co_qualname=original.co_qualname)


def patch_source(target: str, edits: tuple[tuple[str, str], ...]) -> Undo:
    func = function_of(resolve(target))
    original = func.__code__
    func.__code__ = edited_code(func, edits)

    def undo() -> None:
        func.__code__ = original

    return undo


def patch_container(target: str, remove: tuple[str, ...]) -> Undo:
    """Remove items (given by their ``repr``-free spelling: strings, or expressions in the module) from a module-level
    list or set, in place."""
    container = resolve(target)
    module = importlib.import_module(target.partition(":")[0])
    items = [eval(r, vars(module)) for r in remove]  # noqa: S307
    before = list(container)
    for item in items:
        if item not in container:
            raise ValueError(f"patch of {target}: expected {item!r} in it (torch changed?)")
        container.remove(item)

    def undo() -> None:
        if isinstance(container, list):
            container[:] = before
        else:
            container.clear()
            container.update(before)

    return undo
