"""Human-readable run and plan summaries (stderr), and the terminal progress bar."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, Optional

import click

from ..estimate import Estimate
from ..pipeline import RunResult
from ..protocol import Event
from ..reporter import Reporter


def _fmt_usd(value) -> str:
    if value is None:
        return "n/a"
    return "$%.6f" % value if value < 0.01 else "$%.4f" % value


def print_run_summary(result: RunResult) -> None:
    s = result.stats
    c = result.cost
    d = s.chips_dropped
    dropped = sum(d.values())
    lines = [
        "",
        "Groundbreak run %s  (%s)" % (s.run_id, result.status.value),
        "  output        %s" % result.output,
        "  area          %.3f km² AOI, %.3f km² scanned over %d scene(s)" % (s.aoi_km2, s.scanned_km2, s.scenes),
        "  chips         %d planned, %d dropped before inference (%d nodata, %d cloud, %d shadow), "
        "%d inferred, %d failed" % (s.chips_planned, dropped, d["nodata"], d["cloud"], d["shadow"],
                                    s.chips_inferred, s.chips_failed),
        "  detections    %d (model %s%s)" % (s.detections, s.model_id, ", DEMO weights" if s.model_demo else ""),
        "  speed         %s chips/s, %s km²/h, %.1f s wall, %.1f CPU-s, runtime %s, forward batch %d, %d thread(s)"
        % (s.chips_per_s, s.km2_per_h, s.seconds, s.cpu_seconds, s.runtime, s.forward_batch, s.threads),
        "  cost          %s this run, %s per km², at $%.3f per node-hour (example price; set --price-per-hour)"
        % (_fmt_usd(c.run_usd), _fmt_usd(c.per_km2_usd), c.price_per_hour),
    ]
    if s.chips_resumed:
        lines.insert(4, "  resumed       %d chip(s) already done by an earlier attempt, %d new in this one"
                     % (s.chips_resumed, s.chips_processed))
    for r in s.resampled:
        lines.append("  resampled     %s from %.2f m to the model's %.2f m grid"
                     % (r["scene_id"], r["from_m"], r["to_m"]))
    if s.model_demo:
        lines.append("  note          DEMO model: not validated on real construction imagery.")
    click.echo("\n".join(lines), err=True)


def print_plan_summary(est: Estimate) -> None:
    d = est.expected_dropped
    lines = [
        "",
        "Groundbreak plan",
        "  area          %.3f km² AOI, %.3f km² scanned over %d scene(s)" % (est.aoi_km2, est.scanned_km2, est.scenes),
        "  grid          EPSG:%d, %.0f m chips, %d ground chip(s), %d work unit(s)"
        % (est.grid_epsg, est.chip_size_m, est.ground_chips, est.units),
        "  chips         %d planned, ~%d expected dropped (%d nodata, %d cloud, %d shadow), ~%d to infer"
        % (est.chips_planned, sum(d.values()), d["nodata"], d["cloud"], d["shadow"], est.chips_expected_inferred),
        "  time          ~%.0f s at %.0f chips/s (%s)" % (est.expected_seconds, est.chips_per_s, est.throughput_source),
        "  cost          ~%s, %s per km², at $%.3f per node-hour (example price; set --price-per-hour)"
        % (_fmt_usd(est.cost.run_usd), _fmt_usd(est.cost.per_km2_usd), est.cost.price_per_hour),
    ]
    click.echo("\n".join(lines), err=True)


class _Bar:
    """A click progress bar fed by progress events (created on the first one that has a total)."""

    def __init__(self) -> None:
        self.bar: Optional[Any] = None
        self.done = 0

    def listen(self, event: Event) -> None:
        if event.type != "progress":
            return
        total = event.get("total") or 0
        if self.bar is None and total:
            bar: Any = click.progressbar(length=int(total), label="chips", file=sys.stderr)
            bar.__enter__()
            self.bar = bar
        step = (event.get("done") or 0) - self.done
        if self.bar is not None and step > 0:
            self.bar.update(step)
            self.done = event.get("done")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@contextlib.contextmanager
def progress_listener(reporter: Reporter, *, enabled: bool) -> Iterator[None]:
    """A progress bar on stderr fed by the reporter's progress events (terminals only)."""
    if not enabled:
        yield
        return
    bar = _Bar()
    previous = reporter.listener
    reporter.listener = bar.listen
    try:
        yield
    finally:
        reporter.listener = previous
        bar.close()
