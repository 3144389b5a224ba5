"""Run GeoPackages with chosen score series, written by the engine's own store (real files)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import shapely

from groundbreak.grid import ChipGrid
from groundbreak.store import ChipRecord, DetectionRecord, DetectionStore

GRID = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)
DATES = tuple("2022-%02d-01" % m for m in range(1, 13))

#: A series value: a score (inferred), "cloud"/"shadow"/"nodata" (dropped), "failed", or None (no
#: scene covered the chip that date: no row at all).
Value = Union[float, str, None]


def cell_box(col: int, row: int, i: int, j: int, n: int = 1):
    """The 32 m model cell (i, j) of a chip (from its north-west corner), n cells a side."""
    cs = GRID.size_m / 16
    left = col * GRID.size_m + j * cs
    top = (row + 1) * GRID.size_m - i * cs
    return shapely.box(left, top - n * cs, left + n * cs, top)


def write_run(path: Path, series: Dict[Tuple[int, int], Sequence[Value]], *, dates: Sequence[str] = DATES,
              threshold: float = 0.7, aoi: Union[str, Dict[Tuple[int, int], str]] = "a",
              cells: Optional[Dict[Tuple[int, int], object]] = None, model_sha256: str = "test") -> Path:
    """A run GeoPackage: every (chip, date) of ``series`` as a chips row (and a detection with
    activity cells when the score reaches ``threshold``), plus a runs row listing the scenes."""
    store = DetectionStore(path, epsg=GRID.epsg)
    try:
        store.start_attempt(run_id="r1", fingerprint="f", started="2024-01-01T00:00:00+00:00", row={
            "model_id": "test-model", "model_sha256": model_sha256,
            "inputs": {"scenes": [{"scene_id": "scene_%s" % d.replace("-", ""), "date": d} for d in dates],
                       "model": {"model_id": "test-model"}}})
        chips, dets = [], []
        for (col, row), values in series.items():
            a = aoi if isinstance(aoi, str) else aoi[(col, row)]
            wkb = shapely.to_wkb(GRID.polygon(col, row))
            for date, v in zip(dates, values):
                if v is None:
                    continue
                scene = "scene_%s" % date.replace("-", "")
                if isinstance(v, str):
                    status = "failed" if v == "failed" else "dropped-" + v
                    chips.append(ChipRecord(GRID.chip_id(col, row), a, scene, date, status, 0.1, "exact", wkb))
                    continue
                chips.append(ChipRecord(GRID.chip_id(col, row), a, scene, date, "inferred", 1.0, "exact", wkb,
                                        score=float(v)))
                if v >= threshold:
                    geom = (cells or {}).get((col, row), cell_box(col, row, 4, 4, 4))
                    if geom.geom_type == "Polygon":
                        geom = shapely.MultiPolygon([geom])
                    dets.append(DetectionRecord(GRID.chip_id(col, row), a, scene, date, float(v), "construction",
                                                "test-model", wkb, shapely.to_wkb(geom), 16))
        store.commit(chips, dets, run_id="r1")
        store.finalize()
    finally:
        store.close()
    return path
