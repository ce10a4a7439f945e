"""``make findings TORCH=...``: run every standalone repro under findings/ on one torch and say whether each verdict
agrees with what findings/index.toml and known_failures.toml declare for that torch.

A repro exits 1 while its defect reproduces and 0 once fixed.  Each script is listed in findings/index.toml with its
status: ``defect`` (linked to a known-failure entry, whose ``torch`` range says where it holds, or with a ``holds``
range of its own when no cell of the suite carries it, or when the suite's cells meet the defect on fewer releases than
the script does: then ``holds`` is where the defect reproduces and the entry's range where its cells fail), ``duplicate`` (of another finding's entry) or ``retracted``
(not a defect: expected to exit 0 on every torch, with the reason).  Exit codes: 0 every verdict agrees, 1 some
disagree, 3 the index is broken.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from harness.core import known_failures
from harness.core.paths import FINDINGS, KNOWN_FAILURES, ROOT

INDEX = FINDINGS / "index.toml"
STATUSES = ("defect", "duplicate", "retracted")


@dataclasses.dataclass(frozen=True)
class Finding:
    script: str  # path relative to the project root
    status: str
    note: str
    known_failure: str | None = None  # the entry whose torch range says where it holds
    holds: SpecifierSet | None = None  # where it holds, when no entry's range says it (see the module docstring)

    def expected_exit(self, version: str, entries: dict[str, known_failures.KnownFailure]) -> int:
        if self.status == "retracted":
            return 0
        spec = self.holds if self.holds is not None else entries[self.known_failure].torch
        return 1 if Version(version.split("+")[0]) in spec else 0


def load(index: Path = INDEX, kf_path: Path = KNOWN_FAILURES) -> tuple[list[Finding], dict]:
    entries = {e.id: e for e in known_failures.load(kf_path)}
    out = []
    for i, raw in enumerate(tomllib.loads(index.read_text()).get("finding", [])):
        where = f"{index.name}: finding #{i + 1} ({raw.get('script')})"
        if raw.get("status") not in STATUSES:
            raise ValueError(f"{where}: status must be one of {STATUSES}, saw {raw.get('status')!r}")
        kf, holds = raw.get("known_failure"), raw.get("holds")
        if raw["status"] != "retracted" and kf is None and holds is None:
            raise ValueError(f"{where}: a defect or duplicate names known_failure, holds, or both")
        if kf is not None and kf not in entries:
            raise ValueError(f"{where}: known_failure {kf!r} is not an entry of {kf_path.name}")
        if not (ROOT / raw["script"]).exists():
            raise ValueError(f"{where}: no such script")
        out.append(Finding(raw["script"], raw["status"], raw.get("note", ""), kf,
                           SpecifierSet(holds) if holds else None))
    listed = {f.script for f in out}
    unlisted = sorted(str(p.relative_to(ROOT)) for p in FINDINGS.rglob("*.py") if str(p.relative_to(ROOT)) not in listed)
    if unlisted:
        raise ValueError(f"{index.name}: scripts under findings/ not in the index: {unlisted}")
    return out, entries


def run_script(python: str, script: str, timeout: float = 600) -> tuple[int, float, str]:
    start = time.perf_counter()
    try:
        proc = subprocess.run([python, str(ROOT / script)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        rc, out = proc.returncode, (proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:
        rc, out = 124, f"timed out after {timeout} s"
    return rc, time.perf_counter() - start, out


def torch_version(python: str) -> str:
    return subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True,
                          check=True).stdout.strip()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.tools.findings", description=__doc__.split("\n\n")[0])
    p.add_argument("--python", default=None, help="the interpreter whose torch runs the scripts (default: this one)")
    p.add_argument("--torch", default=None, help="a pip spec (torch==2.14.1): run under the nightly's environment for it")
    p.add_argument("--out", type=Path, help="also write the table (markdown) here")
    a = p.parse_args(argv)
    try:
        findings, entries = load()
    except ValueError as e:
        print(f"findings: {e}", file=sys.stderr)
        return 3
    if a.python is None:
        a.python = sys.executable
        import torch

        if a.torch and a.torch.split("==")[-1] != torch.__version__.split("+")[0]:
            from harness.tools.nightly import ensure_env

            a.python = str(ensure_env(a.torch))
    version = torch_version(a.python)
    rows = [f"findings on torch {version} ({a.python})", "",
            "| finding | status | exit | expected | verdict | known failure | upstream |", "|---|---|---|---|---|---|---|"]
    disagree = 0
    for i, f in enumerate(findings, 1):
        print(f"[findings] {i}/{len(findings)} {f.script} ...", file=sys.stderr, flush=True)
        rc, seconds, out = run_script(a.python, f.script)
        want = f.expected_exit(version, entries)
        ok = rc == want
        disagree += not ok
        verdict = ("reproduces" if rc == 1 else "does not reproduce" if rc == 0 else f"broken (rc {rc})")
        upstream = entries[f.known_failure].upstream.split(" ")[0] if f.known_failure else (f.note or "-")
        rows.append(f"| `{f.script}` | {f.status} | {rc} | {want} | {verdict}{'' if ok else ' **DISAGREES**'} | "
                    f"{f.known_failure or '-'} | {upstream} |")
        if not ok:
            print(f"[findings] {f.script}: expected exit {want} on torch {version}, saw {rc}:\n{out[-1500:]}",
                  file=sys.stderr)
    rows.append(f"\n{len(findings)} findings, {disagree} disagree with their declared status")
    text = "\n".join(rows)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
