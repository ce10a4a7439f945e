"""The case database: one module per area (``CASES = [...]``), discovered by :func:`all_cases`."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil

from harness.core.case import Case, Selection

# Rows that had a pipeline of their own before the typed runners (issue 25) and now run on the standard one: the slow
# matrix would expand them, which changes the collection; kept to their declared cells until someone reviews theirs.
FORMER_CUSTOM = Selection(matrix="kept to its declared cells when it left its own pipeline for the standard runner "
                                 "(issue 25): its matrix cells are yet to be reviewed")


@functools.cache
def all_cases() -> tuple[Case, ...]:
    """Every case of every area module under ``harness.rows.cases``, its area stamped from the module's name, checked for
    unique names."""
    found: list[Case] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        for case in importlib.import_module(f"harness.rows.cases.{info.name}").CASES:
            if case.area not in ("", info.name):
                raise ValueError(f"case {case.name} declares area {case.area!r} but lives in "
                                 f"harness/rows/cases/{info.name}.py")
            found.append(dataclasses.replace(case, area=info.name))
    names = [c.name for c in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate case names in the case database: {dupes}")
    return tuple(found)


def find_case(name: str) -> Case:
    for c in all_cases():
        if c.name == name:
            return c
    raise KeyError(f"no case named {name!r} in the case database")
