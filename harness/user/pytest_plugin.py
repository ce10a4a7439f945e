"""The ``ac_conformance`` pytest fixture's plugin (the package's ``pytest11`` entry point): the ``--ac-device`` option
and the fixture, nothing else.  Pytest loads an installed plugin in every process of every run in the environment, the
user's unrelated tests and each xdist worker's controller included, so the harness behind the fixture (torch, Dynamo,
the partitioner: harness/user/conformance.py, ~1.8 s off an xdist run's start) is imported when a test asks for the
fixture."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("ac-conformance-user", "activation-checkpointing conformance of your model")
    group.addoption("--ac-device", dest="ac_device", default=os.environ.get("AC_DEVICE", "cpu"),
                    help="device the ac_conformance fixture checks on by default (cpu or cuda)")


@pytest.fixture
def ac_conformance(request):
    """Checks your model under activation checkpointing with the harness's oracles: an
    :class:`harness.user.conformance.ACConformance`; see harness/user/conformance.py."""
    from harness.user.conformance import ACConformance

    return ACConformance(request)
