"""``--dist loadgroup`` keeps an ``xdist_group`` on one worker, which make test relies on: the cells of a case share
their eager reference and no-AC baselines (harness/core/runners.py), the distributed cells one rank pool
(suites/test_distributed.py).  With pytest 9.2 the grouping of pytest-xdist 3.8 (the newest) is a silent no-op: xdist
suffixes the legacy ``_nodeid`` with the group and pytest 9.2 reads a structured id instead
(https://github.com/pytest-dev/pytest-xdist/issues/1386, fix proposed in pytest-dev/pytest-xdist#1388).
pyproject.toml pins pytest below 9.2 until an xdist release handles it."""

from __future__ import annotations

import re

pytest_plugins = ("pytester",)


def test_loadgroup_keeps_a_group_on_one_worker(pytester):
    pytester.makepyfile(test_grouped="""
        import pytest

        @pytest.mark.xdist_group("one")
        @pytest.mark.parametrize("i", range(6))
        def test_grouped(i):
            pass

        @pytest.mark.parametrize("i", range(6))
        def test_free(i):
            pass
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider")
    assert result.ret == 0, "\n".join(result.outlines[-30:])
    workers = {m[2]: m[1] for line in result.outlines
               if (m := re.match(r"\[(gw\d)\] .*PASSED .*::(test_grouped\[\d\])", line))}
    assert len(workers) == 6, f"expected 6 grouped tests reported by xdist workers; seen {workers}:\n" + \
        "\n".join(result.outlines[-30:])
    assert len(set(workers.values())) == 1, (f"expected the xdist_group 'one' on one worker under --dist loadgroup; "
                                             f"seen {workers}")
