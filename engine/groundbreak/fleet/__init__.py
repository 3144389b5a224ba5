"""Fleet runs: one shared queue over thousands of AOIs and many dates, on a process pool or Dask.

``plan_fleet`` (AOIs × scenes → a SQLite ledger of units with chips, km² and expected cost per AOI),
``run_fleet`` (the ledger's units through an executor: a bounded window, retries with backoff, a
failing unit split; results written atomically per unit as part files), ``fleet_status``,
``retry_failed`` and ``aggregate`` (the parts merged into one GeoPackage with the layers of
``groundbreak run``, or GeoParquet), and ``cost_report`` (cost per AOI, per km², km² per CPU-hour,
and the comparison with one instance per AOI). Importing this package does not import Dask or torch.
"""

from .aggregate import AggregateResult, OutputFormat, aggregate
from .costing import CostReport, InstanceModel, cost_report
from .executors import DaskExecutor, Executor, InProcessExecutor, ProcessPoolExecutor
from .ledger import Ledger, RunSpec, UnitState
from .planning import FleetPlanResult, plan_fleet
from .retry import RetryResult, retry_failed
from .runner import FleetRunner, FleetRunResult, RetryPolicy, run_fleet
from .status import FleetStatus, fleet_status
from .work import DEFAULT_UNIT_CHIPS, FleetUnit, pack_units

__all__ = [
    "DEFAULT_UNIT_CHIPS", "AggregateResult", "CostReport", "DaskExecutor", "Executor", "FleetPlanResult",
    "FleetRunResult", "FleetRunner", "FleetStatus", "FleetUnit", "InProcessExecutor", "InstanceModel", "Ledger",
    "OutputFormat", "ProcessPoolExecutor", "RetryPolicy", "RetryResult", "RunSpec", "UnitState", "aggregate",
    "cost_report", "fleet_status", "pack_units", "plan_fleet", "retry_failed", "run_fleet",
]
