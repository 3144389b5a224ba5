"""Model packages: a directory with ``model.json`` (STAC MLM fields), weights and a model card.

This module never imports torch; ``groundbreak.inference`` does.

CONTRACT (relied on by plan/run/CLI/plugin):

- ``default_model_path() -> Path``: the default package in ``resources/models/`` (override with the
  ``GROUNDBREAK_MODEL`` environment variable).
- ``load_model_package(path: str | Path | None) -> ModelPackage``: validates model.json (clear
  ModelError naming the field and file), checks the weights file exists and its sha256 matches.
- ``ModelPackage.preprocess(chips: np.ndarray, dtype: str) -> np.ndarray``: raw chips
  (N, bands, H, W) in the scene dtype -> float32 scaled per dtype and normalised per band.
  Unsupported dtype -> ModelError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple


@dataclass(frozen=True, slots=True)
class ModelPackage:
    root: Path
    model_id: str  # e.g. "groundbreak-demo-resnet18h-4b"
    version: str
    sha256: str  # of the weights file
    bands: Tuple[str, ...]  # e.g. ("red", "green", "blue", "nir"); order = channel order
    chip_size: int  # pixels, e.g. 256
    gsd: float  # metres per pixel, e.g. 2.0
    gsd_range: Tuple[float, float]  # accepted range without a warning
    classes: Tuple[str, ...]  # e.g. ("background", "construction")
    positive_class: str
    threshold: float  # score >= threshold -> detection
    demo: bool  # True: weights not validated on real construction imagery
    architecture: str
    cell_grid: int  # side of the coarse activity map per chip, e.g. 16
    scaling: Mapping[str, Tuple[float, float]]  # dtype -> (offset, scale): x' = (x - offset) * scale
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    weights_file: str
    card_summary: str = ""
    runtime: str = "auto"

    @property
    def chip_size_m(self) -> float:
        return self.chip_size * self.gsd

    def provenance(self) -> dict:
        return {
            "model_id": self.model_id,
            "version": self.version,
            "sha256": self.sha256,
            "demo": self.demo,
            "bands": list(self.bands),
            "gsd": self.gsd,
            "chip_size": self.chip_size,
        }
