"""``fleet retry``: give failed work another chance (then ``fleet run`` does it).

Units that failed on every attempt go back to pending with a fresh budget of attempts; a done unit
whose part records unreadable chips (``failed`` chip records, e.g. a damaged tile) gets a retry unit
of just those chips (``UNIT~rN``), whose records replace the old ones when the run is aggregated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

from .ledger import Ledger, RunnerLock, UnitState
from .work import FleetUnit, retry_unit


@dataclass(frozen=True)
class RetryResult:
    units_reset: int
    chips_reset: int
    retry_units: int
    retry_chips: int


def retry_failed(ledger_path: "str | Path") -> RetryResult:
    """Re-queue the run's failed work (holding the ledger's runner lock)."""
    with RunnerLock(ledger_path), Ledger(ledger_path) as ledger:
        failed = ledger.rows([UnitState.FAILED])
        ledger.reset([r.unit_id for r in failed])
        generation = 1 + max((r.generation for r in ledger.rows()), default=0)
        retries: List[FleetUnit] = []
        for row in ledger.rows([UnitState.DONE]):
            if row.failed and not ledger.children(row.unit_id):  # a retry unit already carries them
                chip_ids = ledger.summary_of(row.unit_id).get("failed_chips", [])
                if chip_ids:
                    retries.append(retry_unit(ledger.unit(row.unit_id), chip_ids, generation))
        ledger.add_units(retries)
        return RetryResult(units_reset=len(failed), chips_reset=sum(r.chips for r in failed),
                           retry_units=len(retries), retry_chips=sum(u.chips for u in retries))
