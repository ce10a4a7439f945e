"""Every standalone repro under findings/ agrees, on the pinned torch, with what findings/index.toml and
known_failures.toml declare: exit 1 where its defect holds on this torch, 0 where it is fixed or retracted."""

from __future__ import annotations

import sys

import pytest
import torch

from harness.tools import findings

FINDINGS, ENTRIES = findings.load()


@pytest.mark.meta_slow  # one torch process per script, each compiling (10-30 s); `make findings` runs the same check
@pytest.mark.parametrize("finding", FINDINGS, ids=[f.script.removeprefix("findings/") for f in FINDINGS])
def test_repro_exit_status_agrees_with_its_entry(finding):
    want = finding.expected_exit(torch.__version__, ENTRIES)
    rc, seconds, out = findings.run_script(sys.executable, finding.script, timeout=600)
    assert rc == want, (f"{finding.script} ({finding.status}, entry {finding.known_failure or finding.holds}): expected "
                        f"exit {want} on torch {torch.__version__}, saw {rc} after {seconds:.0f} s:\n{out[-2000:]}")


def test_the_index_lists_every_script_and_names_real_entries(tmp_path):
    assert {f.script for f in FINDINGS} >= {"findings/fuzz/7183f894a5.py", "findings/fuzz/57011d7d53.py"}
    assert all(f.status == "retracted" for f in FINDINGS if f.script.endswith(("7183f894a5.py", "57011d7d53.py")))
    bad = tmp_path / "index.toml"
    bad.write_text('[[finding]]\nscript = "findings/budget_zero_ignores_must_save.py"\nstatus = "defect"\n'
                   'known_failure = "no-such-entry"\n')
    with pytest.raises(ValueError, match="is not an entry of"):
        findings.load(bad)


def test_each_finding_range_is_stated_once():
    """Where a finding holds is its entry's ``torch`` range in known_failures.toml (or the index's ``holds``): the
    fuzz findings' README and the index's notes state no release range of their own, which would drift from it (the
    README said <2.14.1 where the entry said <2.14)."""
    import re

    from harness.core.paths import FINDINGS as DIR

    spec = re.compile(r"(?:range|[<>]=?|==|fixed in(?: torch)?)\s*2\.\d+(?:\.\d+)?")
    stated = [f"README.md: {m.group()}" for m in spec.finditer((DIR / "fuzz" / "README.md").read_text())]
    stated += [f"index.toml {f.script}: {m.group()}" for f in FINDINGS for m in spec.finditer(f.note)]
    assert stated == [], f"expected ranges only in known_failures.toml (or the index's holds); saw {stated}"
