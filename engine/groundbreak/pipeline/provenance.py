"""A run's identity and provenance: the fingerprint that guards resume, and the ``runs`` row.

The fingerprint covers everything that changes results — the plan (grid, AOIs, scenes and dates),
the whole model package (``units.package_digest``: model.json and weights), each scene's band
mapping, the mask rules (drop rule and every scene's mask sources and values) and the requested
runtime — so re-running into the same output with any of them changed is refused instead of
merging results that do not belong together. Batch size, threads, readers and price do not change
results and are not in it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List

import numpy as np

from .. import __version__
from ..model import ModelPackage
from ..plan import Plan
from .options import RunOptions
from .units import package_digest


def run_fingerprint(plan: Plan, model: ModelPackage, options: RunOptions) -> str:
    scenes = []
    for index, scene in enumerate(plan.scenes):
        scenes.append({
            "scene_id": scene.scene_id,
            "bands": list(plan.fits[index].band_indexes) if plan.fits else [],
            "band_names": list(scene.band_names),
            "masks": [[m.kind, os.path.basename(m.path), m.band, list(m.cloud_values), list(m.shadow_values),
                       list(m.nodata_values)] for m in scene.mask_sources],
            "nodata": scene.nodata,
            "alpha": scene.alpha_band,
        })
    extra: Dict[str, object] = {
        "model": package_digest(model),
        "runtime": options.requested_runtime(model.runtime),
        "drop_rule": options.drop_rule.fingerprint(),
        "scenes": scenes,
    }
    return plan.fingerprint(extra)


def describe_difference(previous: Dict[str, Any], plan: Plan, model: ModelPackage, options: RunOptions) -> str:
    """What differs from the latest attempt recorded in an output (for the mismatch error)."""
    changed: List[str] = []
    params = previous.get("params") or {}
    inputs = previous.get("inputs") or {}
    if (inputs.get("model") or {}).get("digest") not in (None, package_digest(model)):
        changed.append("the model package (weights or model.json)")
    if params.get("requested_runtime") not in (None, options.requested_runtime(model.runtime)):
        changed.append("--runtime (%s, now %s)" % (params.get("requested_runtime"),
                                                   options.requested_runtime(model.runtime)))
    if params.get("drop_rule") not in (None, options.drop_rule.fingerprint()):
        changed.append("--min-valid or the prefilter margin")
    if [s.get("scene_id") for s in inputs.get("scenes", [])] != [s.scene_id for s in plan.scenes]:
        changed.append("the scenes")
    if params.get("bands") not in (None, _bands(plan)):
        changed.append("the band mapping (--band-order)")
    if params.get("masks") not in (None, _masks(plan)):
        changed.append("the mask rules (--mask-* options or sidecar masks)")
    return ", ".join(changed) or "the AOIs, the grid or the scenes' dates"


def _bands(plan: Plan) -> List[List[int]]:
    return [list(f.band_indexes) for f in plan.fits]


def _masks(plan: Plan) -> List[List[List[object]]]:
    return [[[m.kind, os.path.basename(m.path), list(m.cloud_values), list(m.shadow_values),
              list(m.nodata_values)] for m in s.mask_sources] for s in plan.scenes]


def attempt_row(plan: Plan, model: ModelPackage, options: RunOptions, *, command: str, runtime: str) -> Dict[str, Any]:
    """The provenance columns of one attempt's ``runs`` row."""
    return {
        "command": command, "engine_version": __version__, "model_id": model.model_id,
        "model_sha256": model.sha256, "model_demo": model.demo,
        "params": {
            "min_valid": options.min_valid, "drop_rule": options.drop_rule.fingerprint(),
            "batch_size": options.batch_size, "threads": options.threads, "readers": options.readers,
            "price_per_hour": options.price_per_hour, "runtime": runtime,
            "requested_runtime": options.requested_runtime(model.runtime), "force_runtime": options.force_runtime,
            "grid_epsg": plan.grid.epsg, "chip_px": plan.grid.chip_px, "gsd": plan.grid.gsd,
            "bands": _bands(plan), "masks": _masks(plan),
        },
        "inputs": {
            "aois": [{"aoi_id": a.aoi_id, "source": a.source} for a in plan.aois],
            "scenes": [{"scene_id": s.scene_id, "path": s.path, "date": s.date.isoformat(),
                        "quick_hash": s.quick_hash} for s in plan.scenes],
            "model": {**model.provenance(), "digest": package_digest(model)},
        },
        "versions": versions(),
    }


def versions() -> Dict[str, str]:
    import rasterio

    out = {"groundbreak": __version__, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__,
           "numpy": np.__version__}
    import sys

    for name in ("torch", "openvino"):
        module = sys.modules.get(name)  # only what this run loaded: never import torch to report it
        if module is not None:
            out[name] = str(getattr(module, "__version__", "?"))
    return out


def short_id(fingerprint: str) -> str:
    return fingerprint[:12]


def stable_hash(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
