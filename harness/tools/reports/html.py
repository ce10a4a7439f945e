"""HTML rendering of nightly runs: ``report.html`` (summary table, then per drifting cell the side-by-side graph diffs and
op-count / saved-bytes / FLOPs deltas) and ``trend.html`` (one row per run, two small charts)."""

from __future__ import annotations

import difflib
import html
import json

from harness.core.figures import SUMMARY_FIGURES as FIGURES
from harness.tools.reports.record import CATEGORIES

_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:left;font-size:13px} th{background:#eee}
.semantic{background:#f8c8c8} .drift{background:#fde9a8} .known_failure_passes{background:#c8e0f8}
.pass{background:#cdeccd} .known_failure,.skipped{background:#e8e8e8} pre{background:#f6f6f6;padding:6px;overflow-x:auto}
table.diff{font-family:monospace;font-size:12px} .diff_add{background:#aaffaa} .diff_chg{background:#ffff77}
.diff_sub{background:#ffaaaa} h2{border-bottom:2px solid #ccc}"""

_LABELS = {"semantic": "semantic failures", "drift": "graph-only drift", "known_failure_passes": "known failures that now pass",
           "known_failure": "known failures (still failing)", "pass": "passes", "skipped": "skipped"}


def _fmt(v) -> str:
    return "—" if v is None else f"{v:,}" if isinstance(v, int) else html.escape(str(v))


def _delta(old, new) -> str:
    if old is None or new is None:
        return f"{_fmt(old)} → {_fmt(new)}"
    d = new - old
    return f"{_fmt(old)} → {_fmt(new)} ({'+' if d >= 0 else ''}{d:,})"


def render_report(doc: dict) -> str:
    e, s = doc["environment"], doc["summary"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>nightly {html.escape(doc['run_id'])}</title>"
           f"<style>{_CSS}</style></head><body>",
           f"<h1>Nightly run {html.escape(doc['run_id'])}</h1>",
           f"<p>torch {_fmt(e.get('torch'))} ({html.escape(doc['torch_spec'])}), triton {_fmt(e.get('triton'))}, "
           f"CUDA {_fmt(e.get('cuda'))}, Python {_fmt(e.get('python'))}, device {_fmt(e.get('device'))} "
           f"({_fmt(e.get('device_name'))}); started {html.escape(doc['started'])}, {doc['duration_seconds']} s; "
           f"exit code <b>{doc['exit_code']}</b></p>",
           "<h2>Summary</h2><table id='summary'><tr><th>category</th><th>cells</th><th>cells (first 20)</th></tr>"]
    for cat in CATEGORIES:
        names = [c["cell"] for c in doc["cells"] if c["category"] == cat]
        shown = ", ".join(html.escape(n) for n in names[:20]) + (" …" if len(names) > 20 else "")
        out.append(f"<tr class='{cat}'><td>{_LABELS[cat]}</td><td>{len(names)}</td><td>{shown if cat != 'pass' else ''}</td></tr>")
    out.append(f"<tr><td>all cells</td><td>{s['cells']}</td><td>drifting graphs by kind: "
               f"{html.escape(json.dumps(s['drifting_graphs_by_kind']))}</td></tr></table>")
    sem = [c for c in doc["cells"] if c["category"] in ("semantic", "known_failure_passes")]
    if sem:
        out.append("<h2>Semantic failures and known failures that now pass</h2><table><tr><th>cell</th><th>category</th>"
                   "<th>failed check</th><th>numerics</th><th>message</th></tr>")
        for c in sem:
            msg = (c["message"] or "")[:1500]
            out.append(f"<tr class='{c['category']}'><td>{html.escape(c['cell'])}</td><td>{c['category']}</td>"
                       f"<td>{_fmt(c['failed_check'])}</td><td>{c['numerics']}</td><td><pre>{html.escape(msg)}</pre></td></tr>")
        out.append("</table>")
    drifting = [c for c in doc["cells"] if any(g["status"] != "same" for g in c["graphs"].values())]
    if drifting:
        out.append("<h2>Graph drift per cell</h2>")
    for c in drifting:
        out.append(f"<h3 id='{html.escape(c['cell'])}' class='{c['category']}'>{html.escape(c['cell'])} — {_LABELS[c['category']]}</h3>")
        old, new = c.get("golden") or {}, c.get("recorded") or {}
        # golden figures come from the summary golden (harness/core/figures.py parse_summary: no op counts); recorded ones
        # from the live graphs (harness/core/figures.py of), with the op counts of the kinds that drifted
        rows = [(k.replace("_", " "), old.get(k), new.get(k)) for k in FIGURES if old.get(k) != new.get(k)]
        changed = {k for k, g in c["graphs"].items() if g["status"] != "same"}
        rows += [(f"{kind}: {op} (now)", None, n) for kind, ops in sorted(new.get("ops", {}).items()) if kind in changed
                 for op, n in sorted(ops.items())]
        out.append("<table><tr><th>figure</th><th>golden → now (delta)</th></tr>"
                   + "".join(f"<tr><td>{html.escape(k)}</td><td>{_delta(a, b)}</td></tr>" for k, a, b in rows) + "</table>")
        for kind, g in sorted(c["graphs"].items()):
            if g["status"] == "same":
                continue
            a, b = (g.get("golden") or "").splitlines(), (g.get("recorded") or "").splitlines()
            table = difflib.HtmlDiff(wrapcolumn=90).make_table(a, b, f"golden {kind}", f"recorded {kind}", context=True, numlines=2)
            out.append(f"<h4>{kind} graph: {g['status']}</h4>{table}")
    out.append("</body></html>")
    return "\n".join(out)


def render_trend(history: list[dict]) -> str:
    """One row per run and two small line charts (failures and drift per run; total saved bytes per run)."""
    def chart(title, series, w=640, h=160):
        n = max(len(history), 2)
        top = max([max(v) for _, v, _ in series if v] + [1])
        svg = [f"<svg width='{w}' height='{h + 30}' style='border:1px solid #ccc;background:#fff'>",
               f"<text x='5' y='14' font-size='12'>{html.escape(title)} (max {top:,})</text>"]
        for name, vals, color in series:
            pts = " ".join(f"{20 + i * (w - 40) / (n - 1):.0f},{h + 10 - (v / top) * (h - 20):.0f}" for i, v in enumerate(vals))
            svg.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{pts}'/>")
            svg += [f"<circle cx='{20 + i * (w - 40) / (n - 1):.0f}' cy='{h + 10 - (v / top) * (h - 20):.0f}' r='3' fill='{color}'/>"
                    for i, v in enumerate(vals)]
        legend = " ".join(f"<span style='color:{c}'>■ {html.escape(nm)}</span>" for nm, _, c in series)
        return "".join(svg) + "</svg><div>" + legend + "</div>"

    rows = "".join(
        f"<tr><td>{html.escape(h['run_id'])}</td><td>{_fmt(h['torch'])}</td><td>{h['exit_code']}</td><td>{h['cells']}</td>"
        f"<td class='semantic'>{h['semantic']}</td><td class='drift'>{h['drift']}</td><td>{h['known_failure_passes']}</td>"
        f"<td>{h['pass']}</td><td>{_fmt(h['saved_bytes'])}</td><td>{_fmt(h['flops'])}</td></tr>" for h in history)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>nightly trend</title><style>{_CSS}</style></head><body>"
            "<h1>Nightly trend</h1>"
            + chart("cells per run", [("semantic", [h["semantic"] for h in history], "#c00"),
                                      ("drift", [h["drift"] for h in history], "#c90"),
                                      ("known failures now passing", [h["known_failure_passes"] for h in history], "#06c")])
            + chart("saved bytes (all cells)", [("saved bytes", [h["saved_bytes"] for h in history], "#090")])
            + "<table><tr><th>run</th><th>torch</th><th>exit</th><th>cells</th><th>semantic</th><th>drift</th>"
              "<th>known failures now passing</th><th>pass</th><th>saved bytes</th><th>FLOPs</th></tr>"
            + rows + "</table></body></html>")


# --- the release compatibility report (harness.tools.compat) ---------------------------------------------------------------

_COMPAT_CSS = _CSS + """ .cannot_run{background:#d8d0f0} .not_run{background:#fff;color:#999} td.counts span{display:inline-block;
margin:1px 2px;padding:0 4px;border-radius:3px;white-space:nowrap} .ok{color:#070} .bad{color:#b00;font-weight:bold}
td.cat{font-size:12px;white-space:nowrap}"""

_COMPAT_LABELS = {"semantic": "semantic", "drift": "drift", "known_failure_passes": "known failure now passing",
                  "known_failure": "known failure", "pass": "pass", "skipped": "skipped",
                  "cannot_run": "cannot run on this release", "not_run": "release not run yet"}
_COMPAT_ORDER = ("semantic", "drift", "known_failure_passes", "known_failure", "cannot_run", "skipped", "pass", "not_run")


def _counts(counts: dict) -> str:
    return " ".join(f"<span class='{k}' title='{_COMPAT_LABELS[k]}'>{_COMPAT_LABELS[k]} {counts[k]}</span>"
                    for k in _COMPAT_ORDER if counts.get(k))


def _run_link(run_dir: str | None) -> str:
    if not run_dir:
        return "—"
    return f"<a href='{html.escape(run_dir, quote=True)}/report.html'>{html.escape(run_dir.rsplit('/', 1)[-1])}</a>"


def render_compat(doc: dict) -> str:
    """compat.html: releases (state, wall time, disk), the release x area table, the cells whose category differs
    across releases (with their timeline), drifting goldens (links to consecutive-release diffs), known-failure ranges."""
    rels = [r["release"] for r in doc["releases"]]
    head = "".join(f"<th>{html.escape(r)}</th>" for r in rels)
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>AC release compatibility</title>"
           f"<style>{_COMPAT_CSS}</style></head><body><h1>Activation checkpointing: release compatibility</h1>",
           "<p>Every suite (slow matrix included) against the pinned goldens, one isolated environment per torch "
           "release. Categories: " + ", ".join(f"<span class='{k}'>{v}</span>" for k, v in _COMPAT_LABELS.items()) + ". "
           "A known failure marked <em>re-attributed</em> failed as semantic in its run and is covered by the current "
           "known_failures.toml (an entry added or a range widened after that release ran; every failing check "
           "explained).</p>",
           "<h2>Releases</h2><table id='releases'><tr><th>release</th><th>torch</th><th>state</th><th>wall time</th>"
           "<th>environment disk</th><th>run</th>" + "".join(f"<th>{_COMPAT_LABELS[k]}</th>" for k in _COMPAT_ORDER[:-1]) + "</tr>"]
    from harness.tools.reports.envs import human
    for r in doc["releases"]:
        s = r.get("summary") or {}
        wall = f"{r['wall_seconds'] / 60:.1f} min" if r.get("wall_seconds") else "—"
        out.append(f"<tr><td>{html.escape(r['release'])}</td><td>{_fmt(r.get('torch'))}</td><td>{_fmt(r.get('status'))}"
                   f"{' (partial: ' + html.escape(r['partial']) + ')' if r.get('partial') else ''}"
                   f"{'; ' + str(r['reattributed']) + ' re-attributed' if r.get('reattributed') else ''}"
                   f"{'; ' + str(r['patched']) + ' cells from patch runs' if r.get('patched') else ''}</td>"
                   f"<td>{wall}</td><td>{human(r.get('env_bytes'))}</td><td>{_run_link(r.get('run_dir'))}</td>"
                   + "".join(f"<td class='{k if s.get(k) else ''}'>{s.get(k, '—') if s else '—'}</td>" for k in _COMPAT_ORDER[:-1])
                   + "</tr>")
    out.append("</table><h2>Release × area</h2><table id='areas'><tr><th>area</th>" + head + "</tr>")
    for area, per in doc["areas"].items():
        out.append(f"<tr><td>{html.escape(area)}</td>" + "".join(f"<td class='counts'>{_counts(per.get(r, {}))}</td>" for r in rels) + "</tr>")
    out.append("</table>")
    changing = {c: v for c, v in doc["cells"].items()
                if len({(o or {}).get("category") for o in v["releases"].values() if o}) > 1
                or any(o and o["category"] not in ("pass", "skipped") for o in v["releases"].values())}
    out.append(f"<h2>Cells that are not a plain pass on every release ({len(changing)})</h2>"
               "<table id='timeline'><tr><th>cell</th><th>area</th>" + head
               + "<th>first drift / failure</th><th>last pass</th></tr>")
    for cell, v in sorted(changing.items(), key=lambda kv: (kv[1]["area"], kv[0])):
        tds = []
        for r in rels:
            o = v["releases"].get(r)
            if o is None:
                tds.append("<td class='not_run cat'>not run</td>")
            else:
                title = html.escape(o.get("reason") or "", quote=True)
                kf = (f"<br><small>{html.escape(o['known_failure'][:40])}"
                      f"{' (re-attributed)' if o.get('reattributed') else ''}</small>") if o.get("known_failure") else ""
                tds.append(f"<td class='{o['category']} cat' title='{title}'>{_COMPAT_LABELS[o['category']]}{kf}</td>")
        t = v["timeline"]
        out.append(f"<tr><td>{html.escape(cell)}</td><td>{html.escape(v['area'])}</td>{''.join(tds)}"
                   f"<td>{_fmt(t['first_bad'])}</td><td>{_fmt(t['last_pass'])}</td></tr>")
    out.append("</table>")
    changes = doc.get("changes", [])
    out.append(f"<h2>Verdict changes between consecutive releases ({sum(len(c['cells']) for c in changes)} cells)</h2>"
               "<table id='changes'><tr><th>releases</th><th>from</th><th>to</th><th>why (entry, difference or check)</th>"
               "<th>cells</th></tr>")
    for c in changes:
        cells = ", ".join(html.escape(x) for x in c["cells"][:8]) + (f" … ({len(c['cells'])})" if len(c["cells"]) > 8 else "")
        out.append(f"<tr><td>{c['from_release']} → {c['to_release']}</td><td class='{c['from']}'>{_COMPAT_LABELS[c['from']]}</td>"
                   f"<td class='{c['to']}'>{_COMPAT_LABELS[c['to']]}</td><td>{html.escape(c['why'])}</td><td>{cells}</td></tr>")
    out.append("</table>")
    out.append(f"<h2>Drifting goldens ({len(doc['drifting_goldens'])})</h2><table id='drift'><tr><th>cell</th><th>graph</th>"
               "<th>differs from golden on</th><th>changes between consecutive releases</th></tr>")
    for g in doc["drifting_goldens"]:
        page = g.get("page")
        steps = ", ".join((f"<a href='{html.escape(page)}#{s['from']}-{s['to']}'>" if page else "")
                          + f"{s['from']} → {s['to']}" + ("</a>" if page else "") for s in g["steps"]) or "—"
        out.append(f"<tr><td>{html.escape(g['cell'])}</td><td>{g['kind']}</td><td>{', '.join(g['differs_on'])}</td><td>{steps}</td></tr>")
    out.append("</table><h2>Known failures: declared releases vs observed</h2><table id='known'><tr><th>entry</th>"
               "<th>declared</th>" + head + "<th>mismatches</th></tr>")
    for k in doc["known_failures"]:
        tds = "".join(f"<td class='{'ok' if k['releases'][r]['ok'] else 'bad'}'>{html.escape(k['releases'][r]['status'])}</td>"
                      if r in k["releases"] else "<td class='not_run'>not run</td>" for r in rels)
        mism = "; ".join(k["mismatches"])
        out.append(f"<tr><td>{html.escape(k['id'])}</td><td>{html.escape(k['declared'])}</td>{tds}"
                   f"<td class='{'bad' if mism else 'ok'}'>{html.escape(mism) or 'none'}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def render_compat_diff(g: dict) -> str:
    """One drifting golden: the golden, then a side-by-side diff for each consecutive pair of releases whose recorded
    texts differ (anchors ``#<from>-<to>``)."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(g['cell'])} {g['kind']}</title>"
           f"<style>{_COMPAT_CSS}</style></head><body><h1>{html.escape(g['cell'])}: {g['kind']} graph across releases</h1>",
           f"<p>differs from the golden on: {', '.join(g['differs_on']) or 'none'}</p>"]
    texts = g["texts"]
    rels = list(texts)
    first = rels[0] if rels else None
    if first is not None and g.get("golden") is not None and texts[first] != g["golden"]:
        table = difflib.HtmlDiff(wrapcolumn=90).make_table((g["golden"] or "").splitlines(), (texts[first] or "").splitlines(),
                                                           "golden", f"torch {first}", context=True, numlines=2)
        out.append(f"<h2 id='golden-{first}'>golden → {first}</h2>{table}")
    for s in g["steps"]:
        a, b = (texts[s["from"]] or "").splitlines(), (texts[s["to"]] or "").splitlines()
        table = difflib.HtmlDiff(wrapcolumn=90).make_table(a, b, f"torch {s['from']}", f"torch {s['to']}", context=True, numlines=2)
        out.append(f"<h2 id='{s['from']}-{s['to']}'>{s['from']} → {s['to']}</h2>{table}")
    out.append("</body></html>")
    return "\n".join(out)
