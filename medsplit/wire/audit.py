"""A site's own audit log: every tensor that left the site, appended to a local file, and its summary.

The file is JSON lines, one per tensor: time, step, phase, kind, edge, destination, shape, dtype, bytes (what
left: fewer than the shape's when a codec encoded it, named in ``codec``).
It never holds tensor values or patient IDs. `medsplit audit SITE_DIR` summarises it for the site
administrator: what left, to whom, how much, and whether anything but declared cut tensors did.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .meter import TransferRecord

__all__ = ["AuditLog", "summarise_audit", "render_audit", "AUDIT_FILE"]

AUDIT_FILE = "audit.jsonl"
# What may leave a site, and why; anything else in the log is flagged.
EXPECTED = {"activation": "cut activations", "gradient": "gradients for a peer's cut",
            "fingerprint": "keyed hashes of batch row IDs", "psi": "private set intersection messages",
            "weights": "client segment weights (horizontal, SplitFed)", "label": "labels (shared by the topology)"}


class AuditLog:
    """A Meter listener that appends what ``party`` sent to ``path`` (line-buffered, flushed per record)."""

    def __init__(self, path: str | Path, party: str) -> None:
        self.path = Path(path)
        self.party = party
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open for the node's lifetime

    def __call__(self, rec: TransferRecord) -> None:
        if rec.direction != "sent" or rec.src != self.party:
            return
        line = json.dumps({"ts": round(time.time(), 3), "step": rec.step, "phase": rec.phase, "kind": rec.kind,
                           "edge": rec.edge, "dst": rec.dst, "shape": list(rec.shape), "dtype": rec.dtype,
                           "bytes": rec.bytes, **({"codec": rec.codec} if rec.codec else {})})
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        self._fh.close()


def summarise_audit(site_dir: str | Path) -> dict[str, Any]:
    """Totals per (destination, kind, edge), with the per-sample shapes seen, from a site's audit file."""
    path = Path(site_dir)
    path = path / AUDIT_FILE if path.is_dir() else path
    if not path.exists():
        raise ConfigError(f"no audit log at {path}",
                            hint="a site node writes audit.jsonl in its run directory (node.run_dir)")
    rows: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(lambda: {"count": 0, "bytes": 0, "shapes": set(),
                                                                  "dtypes": set()})
    first = last = None
    bad_lines = 0
    with open(path) as fh:
        for line in fh:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                bad_lines += 1  # a line cut short by a crash
                continue
            row = rows[(r["dst"], r["kind"], r["edge"])]
            row["count"] += 1
            row["bytes"] += r["bytes"]
            per_sample = r["shape"][1:] if r["kind"] in ("activation", "label") else r["shape"]
            row["shapes"].add(tuple(per_sample))
            row["dtypes"].add(r["dtype"])
            first = r["ts"] if first is None else min(first, r["ts"])
            last = r["ts"] if last is None else max(last, r["ts"])
    out = [{"dst": d, "kind": k, "edge": e, "count": v["count"], "bytes": v["bytes"],
            "shapes": sorted(list(s) for s in v["shapes"]), "dtypes": sorted(v["dtypes"])}
           for (d, k, e), v in sorted(rows.items())]
    unexpected = [r for r in out if r["kind"] not in EXPECTED]
    return {"file": str(path), "tensors": sum(r["count"] for r in out), "bytes": sum(r["bytes"] for r in out),
            "first": first, "last": last, "rows": out, "labels_left": any(r["kind"] == "label" for r in out),
            "unexpected": unexpected, "unreadable_lines": bad_lines}


def render_audit(summary: Mapping[str, Any]) -> str:
    lines = [f"audit log {summary['file']}: {summary['tensors']} tensors, "
             f"{summary['bytes'] / 1e6:.2f} MB left this site"]
    if summary["first"] is not None:
        lines.append(f"  from {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(summary['first']))} "
                     f"to {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(summary['last']))}")
    for r in summary["rows"]:
        lines.append(f"  -> {r['dst']:<12} {r['kind']:<12} {r['count']:>7} x  {r['bytes'] / 1e6:10.3f} MB  "
                     f"per-sample {r['shapes']} {','.join(r['dtypes'])}  [{r['edge']}]")
    lines.append("  labels left this site: " + ("YES (the topology shares them)" if summary["labels_left"] else "no"))
    if summary["unexpected"]:
        lines.append(f"  WARNING: {len(summary['unexpected'])} kinds of tensor that a site should not send")
    if summary["unreadable_lines"]:
        lines.append(f"  {summary['unreadable_lines']} unreadable lines (cut short by a crash)")
    return "\n".join(lines)
