"""HTML rendering of nightly runs: ``report.html`` (summary table, then per drifting cell the side-by-side graph diffs and
op-count / saved-bytes / FLOPs deltas) and ``trend.html`` (one row per run, two small charts)."""

from __future__ import annotations

import difflib
import html
import json

from harness.reports.record import CATEGORIES

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
        rows = [("saved bytes", old.get("saved_bytes"), new.get("saved_bytes")), ("FLOPs", old.get("flops"), new.get("flops"))]
        for kind in sorted(set(old.get("ops", {})) | set(new.get("ops", {}))):
            o, n = old.get("ops", {}).get(kind, {}), new.get("ops", {}).get(kind, {})
            rows += [(f"{kind}: {op}", o.get(op, 0), n.get(op, 0)) for op in sorted(set(o) | set(n)) if o.get(op, 0) != n.get(op, 0)]
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

