"""``fleet status``: where a run stands, read from its ledger (safe while a runner writes it)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .costing import cost_report
from .ledger import Ledger, UnitState
from .planning import usd_per_worker_second


@dataclass(frozen=True)
class FleetStatus:
    run_id: str
    runner_active: bool
    units: Dict[str, int]  # per state
    chips_total: int
    chips_done: int  # processed: done or given up
    chips_failed: int
    detections: int
    chips_per_s: Optional[float]  # of the latest runner attempt
    eta_s: Optional[float]
    cost_so_far_usd: float
    expected_total_usd: float
    failures: List[Dict[str, Any]]  # the latest failed attempts (unit, kind, error)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def runner_active(ledger_path: Path) -> bool:
    """True while a runner holds the ledger's lock."""
    import fcntl

    lock = Path(str(ledger_path) + ".lock")
    if not lock.exists():
        return False
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def fleet_status(ledger_path: "str | Path", *, failures: int = 10) -> FleetStatus:
    ledger_path = Path(ledger_path)
    with Ledger(ledger_path, readonly=True) as ledger:
        states = ledger.state_counts()
        totals = ledger.totals()
        total = sum(v["chips"] for k, v in states.items() if k != UnitState.SPLIT.value)
        done = states[UnitState.DONE.value]["chips"] + states[UnitState.FAILED.value]["chips"]
        rate = _latest_rate(ledger)
        recent = [a for a in ledger.unit_attempts() if a["outcome"] == "failed"][-failures:]
        return FleetStatus(
            run_id=ledger.spec.run_id, runner_active=runner_active(ledger_path),
            units={k: v["units"] for k, v in states.items()}, chips_total=total, chips_done=done,
            chips_failed=ledger.failed_chips(),
            detections=int(totals["detections"]), chips_per_s=None if rate is None else round(rate, 2),
            eta_s=round((total - done) / rate, 1) if rate else None,
            cost_so_far_usd=float(totals["seconds"]) * usd_per_worker_second(ledger.spec),
            expected_total_usd=cost_report(ledger).total_usd,
            failures=[{"unit_id": a["unit_id"], "attempt": a["attempt"], "kind": a["kind"], "error": a["error"]}
                      for a in recent],
        )


def _latest_rate(ledger: Ledger) -> Optional[float]:
    attempts = ledger.runner_attempts()
    if not attempts:
        return None
    latest = attempts[-1]
    chips, last = ledger.done_by_runner(latest["id"])
    if not chips:
        return None
    end = latest["finished"] or (time.time() if last is None else max(last, time.time()))
    span = end - latest["started"]
    return chips / span if span > 0 else None
