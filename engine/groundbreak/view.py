"""Reading a scene on the ground-fixed chip grid.

When a scene's pixels already sit on the grid (same CRS, pixel size = model GSD, origin on a pixel
boundary) chips are plain windowed reads. Otherwise the scene is read through a GDAL warped view
(``WarpedVRT``) onto the grid, so a chip id always means the same ground square, whatever the
scene's own pixel grid, CRS or resolution.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import box

from .errors import CorruptFileError, ReadError
from .grid import ChipGrid, to_grid_crs
from .masks import NODATA, VALID, MaskSource, decode_mask, merge_classes
from .scene import Scene

log = logging.getLogger(__name__)

_ALIGN_TOL = 1e-3  # of a pixel


@dataclass(frozen=True, slots=True)
class ChipPixels:
    """One chip's data (bands, h, w) in the model's band order and its pixel classes (h, w)."""

    data: np.ndarray
    classes: np.ndarray


class _GridReader:
    """Reads windows of one dataset on the grid: direct when aligned, warped otherwise."""

    def __init__(self, path: str, grid: ChipGrid, *, resampling: Resampling, nodata: Optional[float]) -> None:
        try:
            self.src = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise CorruptFileError(
                "cannot open %s: %s" % (path, exc), hint="check the file is a complete GeoTIFF (try `gdalinfo`)"
            ) from None
        self.grid = grid
        src = self.src
        t = src.transform
        gsd = grid.gsd
        aligned = (
            src.crs is not None
            and src.crs.to_epsg() == grid.epsg
            and t.b == 0
            and t.d == 0
            and abs(t.a - gsd) / gsd < _ALIGN_TOL
            and abs(-t.e - gsd) / gsd < _ALIGN_TOL
            and _on_pixel(t.c, gsd)
            and _on_pixel(t.f, gsd)
        )
        self.aligned = aligned
        self.added_alpha: Optional[int] = None  # band index of the warped view's own alpha
        self.footprint = None  # the scene's outline in the grid CRS, when warped
        if aligned:
            self.ds = src
            self._x0, self._y0 = t.c, t.f
        else:
            # The warped view spans the scene's footprint snapped outward to whole chips.
            from rasterio.warp import transform_bounds

            left, bottom, right, top = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
            s = grid.size_m
            x0, y1 = math.floor(left / s) * s, math.ceil(top / s) * s
            x1, y0 = math.ceil(right / s) * s, math.floor(bottom / s) * s
            width = int(round((x1 - x0) / gsd))
            height = int(round((y1 - y0) / gsd))
            self._x0, self._y0 = x0, y1
            # The view is snapped outward to whole chips, so its extent overstates the scene.
            self.footprint = to_grid_crs(
                box(*src.bounds), CRS.from_wkt(src.crs.to_wkt()), grid,
                densify_m=max(src.bounds[2] - src.bounds[0], src.bounds[3] - src.bounds[1]) / 32.0,
            )
            kwargs = dict(
                crs=grid.crs,
                transform=Affine(gsd, 0, x0, 0, -gsd, y1),
                width=width,
                height=height,
                resampling=resampling,
            )
            if nodata is not None:
                kwargs["src_nodata"] = nodata
                kwargs["nodata"] = nodata
            else:
                # Without nodata, only an alpha band tells warped pixels outside the scene apart.
                kwargs["add_alpha"] = True
                self.added_alpha = src.count + 1
            self.ds = WarpedVRT(src, **kwargs)

    def window(self, col: int, row: int) -> Window:
        s = self.grid.size_m
        x_off = (col * s - self._x0) / self.grid.gsd
        y_off = (self._y0 - (row + 1) * s) / self.grid.gsd
        return Window(int(round(x_off)), int(round(y_off)), self.grid.chip_px, self.grid.chip_px)

    def block_window(self, cols: Tuple[int, int], rows: Tuple[int, int]) -> Window:
        """The window covering chips cols[0]..cols[1] (inclusive) × rows[0]..rows[1]."""
        top_left = self.window(cols[0], rows[1])
        n_c = cols[1] - cols[0] + 1
        n_r = rows[1] - rows[0] + 1
        return Window(top_left.col_off, top_left.row_off, n_c * self.grid.chip_px, n_r * self.grid.chip_px)

    def read(
        self,
        window: Window,
        *,
        indexes: Sequence[int],
        fill: float,
        out_shape: Optional[Tuple[int, int]] = None,
        masks: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Read ``window`` (which may reach outside the dataset). Returns (array, inside) where
        ``inside`` marks pixels that lie on the dataset; outside pixels are ``fill``."""
        ds = self.ds
        h_out, w_out = out_shape or (int(window.height), int(window.width))
        out = np.full((len(indexes), h_out, w_out), fill, dtype=ds.dtypes[indexes[0] - 1] if not masks else np.uint8)
        inside, place = self.placement(window, (h_out, w_out))
        if place is None:
            return out, inside
        inter, r0, r1, c0, c1 = place
        shape = (len(indexes), r1 - r0, c1 - c0)
        try:
            if masks:
                part = ds.dataset_mask(window=inter, out_shape=shape[1:])[None]
            else:
                part = ds.read(list(indexes), window=inter, out_shape=shape, resampling=Resampling.nearest)
        except rasterio.errors.RasterioIOError as exc:
            raise ReadError(
                "cannot read %s window %s: %s" % (self.src.name, _window_text(inter), exc),
                hint="the file may be damaged here; re-download or re-export it",
            ) from None
        out[:, r0:r1, c0:c1] = part
        inside[r0:r1, c0:c1] = True
        return out, inside

    def placement(self, window: Window, out_shape: Tuple[int, int]):
        """Where ``window`` meets the dataset: (inside mask, (intersection, r0, r1, c0, c1) or None)."""
        ds = self.ds
        h_out, w_out = out_shape
        fy = h_out / window.height
        fx = w_out / window.width
        inside = np.zeros((h_out, w_out), dtype=bool)
        try:
            inter = window.intersection(Window(0, 0, ds.width, ds.height))
        except rasterio.errors.WindowError:
            return inside, None
        r0 = int(round((inter.row_off - window.row_off) * fy))
        c0 = int(round((inter.col_off - window.col_off) * fx))
        r1 = int(round((inter.row_off + inter.height - window.row_off) * fy))
        c1 = int(round((inter.col_off + inter.width - window.col_off) * fx))
        if r1 <= r0 or c1 <= c0:
            return inside, None
        inside[r0:r1, c0:c1] = True
        return inside, (inter, r0, r1, c0, c1)

    def footprint_mask(self, window: Window, out_shape: Tuple[int, int]) -> np.ndarray:
        """Pixels of ``window`` (resampled to ``out_shape``) whose centre lies on the scene."""
        if self.footprint is None:
            return np.ones(out_shape, dtype=bool)
        gsd = self.grid.gsd
        transform = Affine(gsd * window.width / out_shape[1], 0, self._x0 + window.col_off * gsd,
                           0, -gsd * window.height / out_shape[0], self._y0 - window.row_off * gsd)
        return geometry_mask([self.footprint], out_shape=out_shape, transform=transform, invert=True)

    def close(self) -> None:
        if self.ds is not self.src:
            self.ds.close()
        self.src.close()


class SceneView:
    """A scene (and its sidecar masks) seen through the chip grid."""

    def __init__(self, scene: Scene, grid: ChipGrid, band_indexes: Sequence[int]) -> None:
        self.scene = scene
        self.grid = grid
        self.band_indexes = tuple(band_indexes)
        self._data = _GridReader(scene.path, grid, resampling=Resampling.bilinear, nodata=scene.nodata)
        # Mask-like datasets decide validity: alpha, internal masks (GDAL dataset mask) and nodata.
        self._uses_dataset_mask = scene.alpha_band is not None or scene.has_internal_mask
        # Alpha bands are read explicitly: GDAL's dataset mask honours alpha only for 2- and 4-band
        # datasets whose colour interpretation says so, so a 4-band scene's warped view (5 bands with
        # the added alpha), an RGBN+alpha file or an alpha named by description or STAC would
        # otherwise count pixels outside the scene or transparent pixels as valid.
        self._alpha_indexes = tuple(i for i in (scene.alpha_band, self._data.added_alpha) if i is not None)
        self._sidecars: List[Tuple[MaskSource, _GridReader, Tuple[int, ...]]] = []
        for source in scene.mask_sources:
            reader = _GridReader(source.path, grid, resampling=Resampling.nearest, nodata=None)
            bands = tuple(range(1, reader.ds.count + 1)) if source.kind == "udm2" else (source.band,)
            self._sidecars.append((source, reader, bands))

    @property
    def aligned(self) -> bool:
        return self._data.aligned

    def prefilter(self, cells: Sequence[Tuple[int, int]], *, factor: int = 8) -> np.ndarray:
        """Estimated class fractions (n, 4) per chip from decimated sidecar masks and scene
        coverage, without touching the data bands (unless the scene has overviews)."""
        fractions = np.zeros((len(cells), 4), dtype=np.float64)
        if not cells:
            return fractions
        cols = [c for c, _ in cells]
        rows = [r for _, r in cells]
        c_lo, c_hi, r_lo, r_hi = min(cols), max(cols), min(rows), max(rows)
        n = self.grid.chip_px
        small = max(1, n // factor)
        shape = ((r_hi - r_lo + 1) * small, (c_hi - c_lo + 1) * small)
        classes = np.full(shape, VALID, dtype=np.uint8)
        window = self._data.block_window((c_lo, c_hi), (r_lo, r_hi))
        inside, _ = self._data.placement(window, shape)
        inside &= self._data.footprint_mask(window, shape)
        classes[~inside] = NODATA
        # The data mask needs pixel values: use it here only when overviews make it cheap.
        if self._data.src.overviews(1):
            mask, _ = self._data.read(window, indexes=(1,), fill=0, out_shape=shape, masks=True)
            classes[(mask[0] == 0) & inside] = NODATA
        for source, reader, bands in self._sidecars:
            win = reader.block_window((c_lo, c_hi), (r_lo, r_hi))
            raw, side_inside = reader.read(win, indexes=bands, fill=0, out_shape=shape)
            decoded = decode_mask(source, raw)
            merge_classes(classes, decoded, side_inside)
        for i, (c, r) in enumerate(cells):
            y = (r_hi - r) * small
            x = (c - c_lo) * small
            sub = classes[y : y + small, x : x + small]
            fractions[i] = np.bincount(sub.ravel(), minlength=4)[:4] / sub.size
        return fractions

    def read_chip(self, col: int, row: int) -> ChipPixels:
        """Full-resolution data and exact pixel classes for one chip."""
        window = self._data.window(col, row)
        nodata = self.scene.nodata
        fill = 0 if nodata is None else nodata
        data, inside = self._data.read(window, indexes=self.band_indexes, fill=fill)
        classes = np.full(inside.shape, VALID, dtype=np.uint8)
        classes[~inside] = NODATA
        if self._uses_dataset_mask:
            mask, _ = self._data.read(window, indexes=(1,), fill=0, masks=True)
            classes[mask[0] == 0] = NODATA
        elif nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
            classes[np.all(data == nodata, axis=0)] = NODATA
        elif nodata is not None:
            classes[np.all(np.isnan(data), axis=0)] = NODATA
        if self._alpha_indexes:
            alpha, _ = self._data.read(window, indexes=self._alpha_indexes, fill=0)
            classes[np.any(alpha == 0, axis=0)] = NODATA
        for source, reader, bands in self._sidecars:
            raw, side_inside = reader.read(reader.window(col, row), indexes=bands, fill=0)
            merge_classes(classes, decode_mask(source, raw), side_inside)
        return ChipPixels(data=data, classes=classes)

    def close(self) -> None:
        self._data.close()
        for _, reader, _ in self._sidecars:
            reader.close()


def _on_pixel(value: float, gsd: float) -> bool:
    frac = (value / gsd) - round(value / gsd)
    return abs(frac) < _ALIGN_TOL


def _window_text(w: Window) -> str:
    return "col %d row %d size %dx%d" % (w.col_off, w.row_off, w.width, w.height)
