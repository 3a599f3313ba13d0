"""The reconciliation report of a run: one JSON file for tools and one HTML page for the person who
signs the load off, in ``<state>/reports/<run>.json|.html``. Written when a run finishes, again by
``bus migrate verify RUN`` and after a rollback (the latest state of the run each time).

It holds: who ran what (the run id, user, host, the config's digest, the source file's digest),
timing, source rows read and refused (grouped by reason, with samples), per subscriber the
records meant, written, unchanged and failed, the source and target checksums and whether they are
equal, the records that differ (by key, with each differing field's expected and actual value),
the per-batch checksums, and the rollback's outcome when there was one.
"""

from __future__ import annotations

__all__ = ["STYLE", "build_report", "key_label", "render_html", "shown_row", "write_report"]

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus.migrate.journal import Journal, RunInfo
from bus.migrate.verify import SubscriberCheck

SAMPLES = 3
MAX_REASONS = 50  # distinct reasons listed per subscriber (a reason often names the value); the rest counted under one
OTHER_REASONS = f"other reasons (more than {MAX_REASONS} distinct ones)"


def shown_row(row: Any) -> str:
    """A refused row's sample on one line for people: a line that could not be read as it was
    read, a row as JSON; at most 160 characters."""
    return (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))[:160]


def key_label(key: str) -> str:
    """A record's address as people read it: the key column values, or the record's URL."""
    try:
        address = json.loads(key)
    except ValueError:
        return key
    if isinstance(address, list) and address:
        if len(address) == 2 and all(isinstance(a, str) and a.startswith("http") for a in address):
            return str(address[0])
        return ", ".join(str(a) for a in address)
    return str(address)


def _time(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def build_report(
    journal: Journal,
    run: RunInfo,
    checks: dict[str, SubscriberCheck],
    *,
    source_checksum: str | None = None,
    rollback: dict[str, Any] | None = None,
) -> dict[str, Any]:
    refusals: dict[str, dict[str, Any]] = {}
    reasons: dict[str, int] = {}  # distinct reasons listed, per subscriber ("": the mapping)
    for where, subscriber, reason, row in journal.refused(run.id):  # read once, in order, none kept
        group = refusals.get(f"{subscriber}\t{reason}")
        if group is None:
            shown = reason if reasons.get(subscriber, 0) < MAX_REASONS else OTHER_REASONS
            if shown == reason:
                reasons[subscriber] = reasons.get(subscriber, 0) + 1
            group = refusals.setdefault(
                f"{subscriber}\t{shown}", {"subscriber": subscriber or None, "reason": shown, "count": 0, "samples": []}
            )
        group["count"] += 1
        if len(group["samples"]) < SAMPLES:
            group["samples"].append({"where": where, "row": None if row is None else json.loads(row)})
    counts = journal.count_entries(run.id)
    subscribers = []
    for name in sorted(set(counts) | set(checks)):
        # Rows this target refused: at the read before the write, or at the write (its failed entries).
        refused = sum(g["count"] for g in refusals.values() if g["subscriber"] == name)
        entry = {"subscriber": name, "entries": counts.get(name, {}), "refused": refused}
        if name in checks:
            check = checks[name].as_json()
            for difference in check["differences"]:
                difference["key"] = key_label(difference["key"])
            entry.update(check)
        subscribers.append(entry)
    duration = (run.finished or datetime.now(UTC).timestamp()) - run.started
    previous = run.options.get("source_checksum")
    return {
        "run": run.id,
        "migration": run.migration,
        "status": run.status,
        "ran_by": run.user,
        "host": run.host,
        "config_digest": run.config_digest,
        "source_file_digest": run.source_digest,
        "started": _time(run.started),
        "finished": _time(run.finished),
        "seconds": round(duration, 1),
        "rows_per_second": round(run.position / duration, 1) if duration > 0 else None,
        "source": {
            "rows": run.position,
            "refused": sum(g["count"] for g in refusals.values() if g["subscriber"] is None),
            "checksum": source_checksum or previous,
        },
        "subscribers": subscribers,
        "refusals": sorted(refusals.values(), key=lambda g: -int(g["count"])),
        "batches": [{"batch": b, "rows": n, "checksum": c} for b, n, c in journal.batch_checksums(run.id)],
        "rollback": rollback or run.options.get("rollback"),
        "verified_at": _time(datetime.now(UTC).timestamp()),
        "options": {k: v for k, v in run.options.items() if k not in ("source_checksum", "rollback")},
    }


def write_report(
    journal: Journal,
    run: RunInfo,
    checks: dict[str, SubscriberCheck],
    state_dir: Path,
    *,
    source_checksum: str | None = None,
    rollback: dict[str, Any] | None = None,
) -> dict[str, str]:
    report = build_report(journal, run, checks, source_checksum=source_checksum, rollback=rollback)
    folder = state_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / f"{run.id}.json", "html": folder / f"{run.id}.html"}
    for kind, text in (("json", json.dumps(report, indent=2, ensure_ascii=False, default=str)), ("html", render_html(report))):
        partial = paths[kind].with_suffix(f".{kind}.partial")
        partial.write_text(text, encoding="utf-8", errors="backslashreplace")  # a value that is no text (a lone surrogate) shown escaped
        partial.replace(paths[kind])  # never a half-written report
    if source_checksum:
        journal.remember(run.id, source_checksum=source_checksum)
    if rollback is not None:
        journal.remember(run.id, rollback=rollback)
    return {kind: str(path) for kind, path in paths.items()}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:68rem;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d8dce4;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #eceef3;
vertical-align:top}th{background:#f5f6f9;font-weight:600}code,.mono{font-family:ui-monospace,monospace;font-size:12.5px}
.ok{color:#17663a;font-weight:600}.bad{color:#a8201a;font-weight:600}.muted{color:#687084}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.7rem;font-size:12px;font-weight:600}
.badge.ok{background:#dff3e6}.badge.bad{background:#fbe1df}.badge.warn{background:#fdf0d2;color:#7a5200}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1.2rem}dt{color:#687084}dd{margin:0}
"""


def _badge(ok: bool | None, yes: str, no: str, unknown: str = "unverifiable") -> str:
    if ok is None:
        return f'<span class="badge warn">{_e(unknown)}</span>'
    return f'<span class="badge {"ok" if ok else "bad"}">{_e(yes if ok else no)}</span>'


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained page (no script, no external resource)."""
    out = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Migration report {_e(report['run'])}</title>",
        f"<style>{STYLE}</style></head><body>",  # its hash is allowed by the console's CSP
        f"<h1>Migration <code>{_e(report['migration'])}</code>: run <code>{_e(report['run'])}</code></h1>",
        f"<p>Status: <strong id=status>{_e(report['status'])}</strong></p>",
        "<dl>",
        f"<dt>Ran by</dt><dd>{_e(report['ran_by'])} on {_e(report['host'])}</dd>",
        f"<dt>Config digest</dt><dd class=mono>{_e(report['config_digest'])}</dd>",
        f"<dt>Source file digest</dt><dd class=mono>{_e(report['source_file_digest'] or '(not a file)')}</dd>",
        f"<dt>Started / finished</dt><dd>{_e(report['started'])} / {_e(report['finished'] or '-')}</dd>",
        f"<dt>Duration</dt><dd>{_e(report['seconds'])} s ({_e(report['rows_per_second'])} rows/s)</dd>",
        f"<dt>Source rows</dt><dd>{report['source']['rows']:,} read, {report['source']['refused']:,} refused</dd>",
        f"<dt>Source checksum</dt><dd class=mono>{_e(report['source']['checksum'])}</dd>",
        f"<dt>Verified at</dt><dd>{_e(report['verified_at'])}</dd>",
        "</dl>",
        "<h2>Per subscriber</h2><table id=subscribers><tr><th>Subscriber</th><th>Records</th><th>Written</th><th>Unchanged</th>"
        "<th>Refused</th><th>Source checksum</th><th>Target checksum</th><th>Result</th></tr>",
    ]
    for s in report["subscribers"]:
        entries = s.get("entries", {})
        verifiable = s.get("verifiable")
        result = _badge(None if not verifiable else s.get("checksums_equal"), "checksums equal", f"{s.get('different', 0):,} differ")
        out.append(
            f"<tr><td><code>{_e(s['subscriber'])}</code></td><td>{s.get('records', 0):,}</td><td>{entries.get('written', 0):,}</td>"
            f"<td>{entries.get('unchanged', 0):,}</td><td>{s.get('refused', 0):,}</td>"
            f"<td class=mono>{_e(s.get('source_checksum'))}</td><td class=mono>{_e(s.get('target_checksum') or '-')}</td>"
            f"<td>{result}</td></tr>"
        )
    out.append("</table>")
    differing = [(s["subscriber"], d) for s in report["subscribers"] for d in s.get("differences", [])]
    out.append("<h2>Records that differ</h2>")
    unread = [s["subscriber"] for s in report["subscribers"] if not s.get("verifiable")]
    if not differing and len(unread) == len(report["subscribers"]):
        out.append('<p class="muted" id=no-differences>Not compared: no target of this run can be read back.</p>')
    elif not differing:
        out.append('<p class="ok" id=no-differences>None: every record read back holds what the run wrote.</p>')
    else:
        out.append("<table id=differences><tr><th>Subscriber</th><th>Key</th><th>Field</th><th>Expected</th><th>Actual</th></tr>")
        for subscriber, d in differing:
            for name, values in d["fields"].items():
                out.append(
                    f"<tr><td><code>{_e(subscriber)}</code></td><td class=mono>{_e(d['key'])}</td><td><code>{_e(name)}</code></td>"
                    f"<td class=mono>{_e(values['expected'])}</td><td class='mono bad'>{_e(values['actual'])}</td></tr>"
                )
        out.append("</table>")
    if unread and len(unread) < len(report["subscribers"]):
        out.append(f"<p class=muted>Not read back (unverifiable): {_e(', '.join(unread))}.</p>")
    out.append("<h2>Refused rows</h2>")
    if not report["refusals"]:
        out.append("<p class=muted>None.</p>")
    else:
        out.append("<table id=refusals><tr><th>Count</th><th>Where</th><th>Reason</th><th>Samples</th></tr>")
        for group in report["refusals"]:
            samples = "<br>".join(f"<span class=mono>{_e(s['where'])}: {_e(shown_row(s['row']))}</span>" for s in group["samples"])
            where = f"target {group['subscriber']}" if group["subscriber"] else "mapping"
            out.append(f"<tr><td>{group['count']:,}</td><td>{_e(where)}</td><td>{_e(group['reason'])}</td><td>{samples}</td></tr>")
        out.append("</table>")
    rollback = report.get("rollback")
    if rollback:
        out.append("<h2>Rollback</h2><dl>")
        for name, value in rollback.items():
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            out.append(f"<dt>{_e(name)}</dt><dd class=mono>{_e(shown)}</dd>")
        out.append("</dl>")
    batches = report["batches"]
    out.append(f"<h2>Batches</h2><p class=muted>{len(batches):,} batches of source rows; each one's checksums are in the JSON report.")
    for s in report["subscribers"]:
        if s.get("batches_differing"):
            shown = ", ".join(str(b) for b in s["batches_differing"][:20]) + (" ..." if len(s["batches_differing"]) > 20 else "")
            out.append(f"</p><p id=batches-differing>Batches whose records differ in <code>{_e(s['subscriber'])}</code>: {_e(shown)}")
    out.append("</p>")
    out.append("</body></html>")
    return "\n".join(out)
