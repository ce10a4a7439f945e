"""Aggregation of a release compatibility run: one nightly run document per torch release -> a release x area table of
categories, a per-cell timeline across releases, the drifting goldens with the text each release recorded, and the
known failures' declared release ranges checked against what was observed.

Pure functions over run documents (``run.json``, see harness.tools.reports.record): tests/test_compat.py drives them with
fixtures, no torch release needed.  ``harness.tools.compat`` runs the releases; ``harness.tools.reports.html.render_compat``
renders the result.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable

from harness.core import torch_api

# The compat categories: the nightly's, plus a cell that cannot run on a release (a missing API or config knob, a
# declared torch>= requirement, a case this release's harness does not collect).
COMPAT_CATEGORIES = ("semantic", "drift", "known_failure_passes", "known_failure", "pass", "skipped", "cannot_run")
LABELS = {"semantic": "semantic", "drift": "drift", "known_failure_passes": "known failure now passing",
          "known_failure": "known failure", "pass": "pass", "skipped": "skipped",
          "cannot_run": "cannot run on this release", "not_run": "release not run yet"}
BAD = ("semantic", "drift", "known_failure", "known_failure_passes")


def release_key(release: str) -> tuple:
    """Orders '2.11.0' < '2.12.1' < '2.14.0' < '2.14.1' (local suffixes such as +cpu ignored)."""
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+]", release.split("+")[0]))


def area_of(record: dict) -> str:
    return record["suite"].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")


@dataclasses.dataclass
class Observation:
    """One cell on one release."""
    category: str                   # one of COMPAT_CATEGORIES
    reason: str | None = None       # why (failed check / message head / skip or cannot-run reason)
    known_failure: str | None = None  # id of the known-failure entry the cell matched
    record: dict | None = None      # the nightly record (None for a cell this release did not collect)
    reattributed: bool = False      # the run failed it as semantic; the current known_failures.toml covers it


def placeholder_case(record: dict) -> str | None:
    """The case of a skipped one-per-case placeholder cell (id ``<case>-<device>``, an unmet requirement)."""
    if record["category"] == "skipped" and record.get("case") is None and re.fullmatch(r".+-(cpu|cuda)", record["cell"]):
        return record["cell"].rsplit("-", 1)[0]
    return None


def observe(record: dict, kf_id: Callable[[dict], str | None]) -> Observation:
    cat = record["category"]
    reason = record.get("failed_check")
    msg = record.get("message") or ""
    if cat == "skipped":
        why = torch_api.cannot_run_reason(msg)
        return Observation("cannot_run" if why else "skipped", why or msg[:300], None, record)
    if cat in ("semantic", "known_failure"):  # a known failure failing because an API is missing is no verdict on it
        why = torch_api.cannot_run_reason(msg)
        if why:
            return Observation("cannot_run", why, kf_id(record), record)
        reason = f"{reason}: {msg.splitlines()[0][:300]}" if msg else reason
    elif cat == "drift":
        kinds = sorted(k for k, g in record["graphs"].items() if g["status"] != "same")
        reason = "graphs differ: " + ", ".join(kinds)
    return Observation(cat, reason, kf_id(record), record, bool(record.get("reattributed")))


def reattribute(docs: dict[str, dict | None], covers: Callable[[str, dict], str | None]) -> dict[str, dict | None]:
    """The run documents with each semantic cell that the current known_failures.toml covers turned into a known
    failure of that entry, marked ``reattributed``: an entry added, or a range widened, after a release ran applies to
    it without rerunning the release.  ``covers(release, record)`` gives the entry id only when the entry holds on the
    release, selects the cell and explains every check the record shows failing (the strict xfail's rule); a cell that
    passed, drifted or failed otherwise is left as it is, so nothing is hidden that a rerun would report.  An expected
    failure whose run recorded no entry id (an older harness's contract cells) gets its entry's id the same way."""
    out = {}
    for r, d in docs.items():
        if d is None:
            out[r] = None
            continue
        cells = []
        for c in d.get("cells", []):
            kf = covers(r, c) if c["category"] in ("semantic", "known_failure") and not c.get("known_failure") else None
            if kf and c["category"] == "known_failure":  # an expected failure whose run did not record its entry
                c = {**c, "known_failure": kf}
            elif kf:
                c = {**c, "category": "known_failure", "known_failure": kf, "reattributed": True}
            cells.append(c)
        out[r] = {**d, "cells": cells}
    return out


def matrix(docs: dict[str, dict | None], kf_id: Callable[[dict], str | None] = lambda r: r.get("known_failure")
           ) -> dict[str, dict[str, Observation | None]]:
    """cell id -> release -> Observation (None: the release has not run yet).  ``docs`` maps each release, in any
    order, to its run document or None."""
    releases = sorted(docs, key=release_key)
    per: dict[str, dict[str, dict]] = {r: {c["cell"]: c for c in (docs[r] or {}).get("cells", [])} for r in releases}
    placeholders = {r: {p: rec for rec in per[r].values() if (p := placeholder_case(rec))} for r in releases}
    real_cases = {rec.get("case") for r in releases for rec in per[r].values() if rec.get("case")}
    cells = sorted({c for r in releases for c, rec in per[r].items()
                    if not (placeholder_case(rec) in real_cases)})
    out: dict[str, dict[str, Observation | None]] = {}
    for cell in cells:
        row: dict[str, Observation | None] = {}
        for r in releases:
            if docs[r] is None:
                row[r] = None
            elif cell in per[r]:
                row[r] = observe(per[r][cell], kf_id)
            elif docs[r].get("partial"):
                row[r] = None  # an unfinished run had not reached this cell
            else:
                case = next((rec.get("case") for rr in releases for c, rec in per[rr].items() if c == cell), None)
                ph = placeholders[r].get(case) if case else None
                why = (torch_api.cannot_run_reason(ph.get("message") or "") or (ph.get("message") or "")[:300]) if ph \
                    else "not collected on this release"
                row[r] = Observation("cannot_run", why)
        out[cell] = row
    return out


def area_table(m: dict, areas: dict[str, str]) -> dict[str, dict[str, dict[str, int]]]:
    """area -> release -> category -> cells (only non-zero counts)."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for cell, row in m.items():
        for r, obs in row.items():
            slot = table.setdefault(areas[cell], {}).setdefault(r, {})
            key = obs.category if obs else "not_run"
            slot[key] = slot.get(key, 0) + 1
    return dict(sorted(table.items()))


def timeline(row: dict[str, Observation | None]) -> dict:
    """For one cell across releases (oldest first): the first release where a drift or failure appears (after a
    release where it was fine, or from the start), and the last release where it passed."""
    seen = [(r, o) for r, o in row.items() if o is not None]
    first_bad = next((r for r, o in seen if o.category in BAD), None)
    last_pass = next((r for r, o in reversed(seen) if o.category == "pass"), None)
    changes = []
    prev = None
    for r, o in seen:
        if prev is not None and o.category != prev:
            changes.append({"release": r, "from": prev, "to": o.category})
        prev = o.category
    return {"first_bad": first_bad, "last_pass": last_pass, "changes": changes}


def graph_texts(row: dict[str, Observation | None], kind: str) -> dict[str, str | None]:
    """release -> the text of graph ``kind`` that release recorded (the golden's body where it matched the golden)."""
    golden = next((o.record["graphs"][kind].get("golden") for o in row.values()
                   if o and o.record and kind in o.record["graphs"] and o.record["graphs"][kind]["status"] != "same"), None)
    out = {}
    for r, o in row.items():
        g = o.record["graphs"].get(kind) if o and o.record else None
        if g is None:
            continue
        out[r] = golden if g["status"] == "same" else g.get("recorded")
    return out


def drifting_goldens(m: dict) -> list[dict]:
    """Per (cell, graph kind) whose golden differs from the recorded graph on some release: the releases where it differs, and
    each consecutive pair of releases (that recorded it) whose texts differ."""
    out = []
    for cell, row in m.items():
        # a golden that exists and differs (changed) or is no longer recorded (stale); "missing" (no golden, e.g. a
        # known failure's cells) is no golden to drift from
        kinds = sorted({k for o in row.values() if o and o.record for k, g in o.record["graphs"].items()
                        if g["status"] in ("changed", "stale")})
        for kind in kinds:
            texts = graph_texts(row, kind)
            rels = list(texts)
            steps = [{"from": a, "to": b} for a, b in zip(rels, rels[1:]) if texts[a] != texts[b]]
            differs = [r for r in rels if row[r].record["graphs"][kind]["status"] != "same"]
            out.append({"cell": cell, "kind": kind, "differs_on": differs, "steps": steps, "texts": texts,
                        "golden": next((row[r].record["graphs"][kind].get("golden") for r in differs), None)})
    return out


# --- known failures with release ranges ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class KnownFailureEntry:
    """An abstract known-failure entry: an id and the releases it is declared to fail on."""
    id: str
    applies: Callable[[str], bool]          # release -> declared to fail there
    declared: str = "any release"           # the declaration in words, for the report


def _names(observation, entry_id: str) -> bool:
    """Whether a cell's record names the entry (its ``known_failure``: the ids of every entry that explained one of
    its failing checks, space-separated)."""
    return entry_id in (observation.known_failure or "").split()


def check_known_failures(entries: Iterable[KnownFailureEntry], m: dict, partial: Iterable[str] = ()) -> list[dict]:
    """Per entry and release that ran: what was observed for the entry's cells, and whether it matches the declaration.

    Observed per release: ``failing`` (every matched cell still fails), ``passes`` (some matched cell now passes),
    ``no cell`` (no cell matched the entry), ``fails undeclared`` (outside the declared range a cell the entry covers
    on other releases fails: semantic; a graph-only drift there is no failure of the entry) ``fine`` (outside the range the entry's cells pass), ``not reached`` (an
    unfinished run of a ``partial`` release had not reached the entry's cells: no verdict).  A mismatch is:
    declared but passing, declared but matching no cell, or failing outside the declared range.
    """
    releases = sorted({r for row in m.values() for r, o in row.items() if o is not None}, key=release_key)
    results = []
    for e in entries:
        cells = sorted(c for c, row in m.items() if any(o and _names(o, e.id) for o in row.values()))
        per_release = {}
        for r in releases:
            obs = {c: m[c][r] for c in cells if m[c].get(r) is not None}
            matched = {c: o for c, o in obs.items() if _names(o, e.id)}
            if e.applies(r):
                if not matched and r in partial:
                    status, ok = "not reached", True
                elif not matched:
                    status, ok = "no cell", False
                elif any(o.category == "known_failure_passes" for o in matched.values()):
                    status, ok = "passes", False
                elif all(o.category == "cannot_run" for o in matched.values()):
                    status, ok = "cannot run", True
                else:
                    status, ok = "failing", True
            else:
                bad = [c for c, o in obs.items() if o.category == "semantic"]  # a drift is no failure of the entry
                status, ok = ("fails undeclared", False) if bad else ("fine", True)
            per_release[r] = {"status": status, "ok": ok, "cells": sorted(matched) if e.applies(r) else sorted(obs)}
        mismatches = [f"{r}: {v['status']}" for r, v in per_release.items() if not v["ok"]]
        results.append({"id": e.id, "declared": e.declared, "cells": cells, "releases": per_release,
                        "mismatches": mismatches})
    return results


def verdict_changes(m: dict, releases: list[str]) -> list[dict]:
    """The cells whose category differs between consecutive releases that both ran, grouped by (releases, from, to,
    why): the known-failure entry of either side, else the cannot-run difference, else the failed check or the
    drifting graph kinds.  Largest groups first within each pair of releases."""
    groups: dict[tuple, list[str]] = {}
    for cell, row in m.items():
        seen = [(r, row.get(r)) for r in releases if row.get(r) is not None]
        for (r1, a), (r2, b) in zip(seen, seen[1:]):
            if a.category == b.category:
                continue
            why = (b.known_failure or a.known_failure
                   or next(((o.reason or "").split(":")[0] for o in (b, a) if o.category in ("cannot_run", "semantic", "drift")
                            and o.reason), None) or "-")
            groups.setdefault((r1, r2, a.category, b.category, why), []).append(cell)
    order = {r: i for i, r in enumerate(releases)}
    return [{"from_release": k[0], "to_release": k[1], "from": k[2], "to": k[3], "why": k[4], "cells": sorted(v)}
            for k, v in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], -len(kv[1]), kv[0]))]


def build_compat(releases_info: dict[str, dict], docs: dict[str, dict | None], entries: list[KnownFailureEntry],
                 kf_id: Callable[[dict], str | None] = lambda r: r.get("known_failure"),
                 covers: Callable[[str, dict], str | None] | None = None) -> dict:
    """The compatibility document (compat.json): releases (state, wall time, disk, run directory, summary), the
    release x area table, per cell its category per release and its timeline, drifting goldens with consecutive
    diffs (texts kept for rendering), and the known-failure range check.  With ``covers``, semantic cells the
    current known failures cover are re-attributed first (:func:`reattribute`)."""
    if covers is not None:
        docs = reattribute(docs, covers)
    m = matrix(docs, kf_id)
    areas = {}
    for cell, row in m.items():
        rec = next((o.record for o in row.values() if o and o.record), None)
        areas[cell] = area_of(rec) if rec else "?"
    releases = sorted(docs, key=release_key)
    cells = {cell: {"area": areas[cell], "timeline": timeline(row),
                    "releases": {r: (dataclasses.asdict(o) | {"record": None}) if o else None for r, o in row.items()}}
             for cell, row in m.items()}
    for c in cells.values():
        for o in c["releases"].values():
            if o is not None:
                del o["record"]
    return {"releases": [{"release": r, **releases_info.get(r, {}),
                          "summary": {k: sum(1 for row in m.values() if row[r] and row[r].category == k)
                                      for k in COMPAT_CATEGORIES} if docs[r] else None,
                          "reattributed": sum(1 for row in m.values() if row[r] and row[r].reattributed)}
                         for r in releases],
            "areas": area_table(m, areas), "cells": cells, "drifting_goldens": drifting_goldens(m),
            "changes": verdict_changes(m, releases),
            "known_failures": check_known_failures(entries, m, {r for r, d in docs.items() if d and d.get("partial")})}


# --- adapter for known_failures.toml ---------------------------------------------------------------------------------

def failing_checks(record: dict) -> list[tuple[str, str]]:
    """(check, message) of each check a semantic record shows failing: a cell's ``[stage] message`` lines
    (harness.core.suite.CellFailure; none when the record's message was cut before the last), a contract cell's
    ``[clause] check 'name': message`` lines as a harness before contract cells were case cells wrote them (the
    check ``case_check:name`` since), else one ("test", message) for a plain test's assertion."""
    msg = record.get("message") or ""
    contract = re.findall(r"^(?:\w+: )?\[[\w.]+\] check '(\w+)': (.*)$", msg, re.M)
    if contract:
        return [(f"case_check:{check}", m) for check, m in contract]
    if msg.startswith("CellFailure: "):
        parts = re.split(r"^\[([\w:]+)\] ", msg, flags=re.M)[1:]
        found = list(zip(parts[::2], parts[1::2]))
        n = re.match(r"CellFailure: \S+: (\d+) check\(s\) failed", msg)
        return found if n and int(n.group(1)) == len(found) else []  # a message cut short hides checks: no verdict
    return [("test", msg.removeprefix("AssertionError: "))]


def entries_from_known_failures(path=None) -> tuple[list[KnownFailureEntry], Callable[[dict], str | None],
                                                    Callable[[str, dict], str | None]]:
    """known_failures.toml as abstract entries (id, the declared ``torch`` range as a predicate on a release), the
    function giving a record's entry id (the nightly record's ``known_failure`` field holds it), and ``covers`` for
    :func:`reattribute`: the entry that would have made a semantic record a known failure had it been in force on
    that release (case, contract and scenario cells by the static selector, plain tests by node id, each with every
    failing check explained; an entry's run features cannot be read back, so they do not narrow here)."""
    from harness.rows import collect
    from harness.core import known_failures
    from harness.core.paths import KNOWN_FAILURES

    raw = known_failures.load(path or KNOWN_FAILURES)
    entries = [KnownFailureEntry(e.id, (lambda r, e=e: e.holds_on(r)), f"torch {e.torch}") for e in raw]
    cells = {}

    def covers(release: str, record: dict) -> str | None:
        failed = failing_checks(record)
        if not failed:
            return None
        if not cells:
            cells.update((c.id, c) for c in collect.all_cells(("cpu",)))
        cell = cells.get(record["cell"])
        for e in raw:
            if not e.holds_on(release):
                continue
            if cell is not None and e.select.selects(cell):
                if all(e.explains(stage, m) for stage, m in failed):
                    return e.id
            elif known_failures.known_test([e], record.get("nodeid") or "", release) is not None:
                if all(re.search(e.message, m) for _, m in failed):
                    return e.id
        return None

    return entries, lambda record: record.get("known_failure"), covers
