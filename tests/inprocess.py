"""pytester sessions in this process (``pytester.runpytest_inprocess``) without re-importing torch.

pytester takes a snapshot of ``sys.modules`` around each in-process session and drops every module imported during
it.  For torch that is wrong: a torch module imported lazily inside the session (an inductor or dynamo submodule)
would be dropped and imported again by the next session, registering process-wide state twice ("Artifact of
type=autotune already registered").  :func:`keep_imported_modules` keeps every module that does not come from the
pytester directory (torch, the harness, libraries), and still drops the session's own test modules (``test_block``,
``usermodel``), whose names repeat from test to test.  Each session saves a process start, ``import torch`` and the
compiler's warm-up (a few seconds of CPU each)."""

from __future__ import annotations

import sys
import pytest
from _pytest import pytester as _pytester


def keep_imported_modules(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process sessions of ``pytester`` (and its own clean-up when the test ends) drop only the modules imported
    from its directory."""
    root = str(pytester.path)

    def from_directory(name: str) -> bool:
        module = sys.modules.get(name)
        return str(getattr(module, "__file__", None) or "").startswith(root)

    def snapshot(self=None):
        return _pytester.SysModulesSnapshot(preserve=lambda name: not from_directory(name))

    monkeypatch.setattr(_pytester.Pytester, "_Pytester__take_sys_modules_snapshot", snapshot)
    pytester._sys_modules_snapshot = snapshot()  # the one pytester took when the test began, restored at its end
