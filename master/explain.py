"""`genefarm explain`: why a task failed, why it ran again, or why it did not run at all."""
from sqlalchemy import select

from master.store import Event


def task(db, t):
    events = [e.to_dict() for e in db.scalars(select(Event).where(Event.task_id == t.id).order_by(Event.id))]
    attempts = [a.to_dict() for a in t.attempts]
    lines = [f"task {t.id} ({t.key}) of run {t.run_id}: {t.state}" + (" (from the cache)" if t.cached else "")]
    lines.append(f"  retries spent {t.retries}, preemptions {t.preemptions} (preemptions spend no retry)")
    if t.cache_key:
        lines.append(f"  cache key {t.cache_key[:16]}...")
    for e in events:
        if e["kind"] == "cache-miss":
            lines.append(f"  why it ran: {e['text']}")
            continue
        if e["kind"] == "created" or e["text"] == "its inputs are done":
            continue
        lines.append(f"  - {e['text']}")
    for a in attempts:
        lines.append(f"  attempt {a['number']}: job {a['job_id'] or '-'} on {a['node'] or '-'}: "
                     f"{a['end_reason'] or a['state']}"
                     + (f", exit {a['exit_code']}" if a['exit_code'] is not None else "")
                     + (f", {a['cpu_seconds']:.1f} CPU s" if a['cpu_seconds'] else "")
                     + (f", peak {a['peak_mb']:.0f} MB" if a['peak_mb'] else "")
                     + (f": {a['message']}" if a['message'] else "") + f"  (log {a['log']})")
    if t.reason:
        lines.append(f"  now: {t.reason}")
    return {"task": t.to_dict(), "events": events, "attempts": attempts, "text": "\n".join(lines)}
