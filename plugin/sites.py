"""Sites with dates on the map: the ``sites`` and ``site_observations`` layers the engine's timeline
(``groundbreak timeline``, or the end of a multi-date ``groundbreak run``) writes into a run's
GeoPackage — opened, styled by start year, made temporal, and read back as one site's score series.

The layer, field and status names below mirror ``engine/groundbreak/timeline.py`` (``SITES_LAYER``,
``OBSERVATIONS_LAYER``, ``SITE_FIELDS``, ``OBSERVATION_FIELDS``, ``SiteStatus``). They live here and
not in ``names.py`` because ``names.py`` is a byte-identical copy of the engine's and the engine does
not export them there yet; once it does, these should be imported from ``names`` instead.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsFeature,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsLayerTreeGroup,
    QgsPalLayerSettings,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsProperty,
    QgsRendererCategory,
    QgsSimpleFillSymbolLayer,
    QgsSymbolLayer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
    QgsVectorLayerTemporalProperties,
)
from qgis.PyQt.QtCore import QDate, QDateTime
from qgis.PyQt.QtGui import QColor

from . import live_layer, log

# ---- names the engine writes: one home, names.py (a guarded copy of the engine's)
from .names import (  # noqa: E402
    DATE,
    END_DATE,
    OBSERVATIONS_LAYER,
    ONGOING,
    SCORE,
    SITE_ID,
    SITES_LAYER,
    START_DATE,
    START_YEAR,
    STATUS,
    SiteStatus,
)

ACTIVE, INACTIVE, UNKNOWN = SiteStatus.ACTIVE.value, SiteStatus.INACTIVE.value, SiteStatus.UNKNOWN.value

SITES_TITLE = "sites (by start year; dashed: ongoing)"
OBSERVATIONS_TITLE = "site observations (per date)"
#: Okabe-Ito colours (colour-blind safe), one per start year in year order; they repeat after eight.
YEAR_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: A site's one-line description, for labels and map tips: "site_0003  2023-05-12 → ongoing".
LABEL_EXPRESSION = ('"site_id" || \'  \' || format_date("start_date", \'yyyy-MM-dd\') || \' → \' || '
                    'coalesce(format_date("end_date", \'yyyy-MM-dd\'), \'ongoing\')')
ONGOING_STROKE = 'if("ongoing" = 1, \'dash\', \'solid\')'
STATUS_COLOURS = {ACTIVE: "#D55E00", INACTIVE: "#0072B2", UNKNOWN: "#9E9E9E"}


def gpkg_path(layer: QgsVectorLayer) -> str:
    """The file behind an OGR layer source (``/x/run.gpkg|layername=sites`` -> ``/x/run.gpkg``)."""
    return layer.source().split("|")[0]


def layer_source(gpkg: str, layer_name: str) -> str:
    return "%s|layername=%s" % (gpkg, layer_name)


def open_layer(gpkg: str, layer_name: str, title: str = "") -> Optional[QgsVectorLayer]:
    """One layer of a run GeoPackage; None when the file has no such layer."""
    layer = QgsVectorLayer(layer_source(gpkg, layer_name), title or layer_name, "ogr")
    return layer if layer.isValid() else None


def is_sites_layer(layer: Any) -> bool:
    return (isinstance(layer, QgsVectorLayer) and layer.isValid() and
            {SITE_ID, START_DATE, END_DATE, ONGOING} <= set(layer.fields().names()))


# ---------------------------------------------------------------- style and time
def year_expression(layer: QgsVectorLayer) -> str:
    """What the renderer classifies by: the engine's ``start_year``, or the year of ``start_date``."""
    return '"%s"' % START_YEAR if START_YEAR in layer.fields().names() else 'year("%s")' % START_DATE


def start_years(layer: QgsVectorLayer) -> List[int]:
    """The distinct start years of a sites layer, ascending."""
    expression = QgsExpression(year_expression(layer))
    years = set()
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    for feature in layer.getFeatures():
        context.setFeature(feature)
        value = expression.evaluate(context)
        if value is not None and str(value) not in ("", "NULL"):
            years.add(int(value))
    return sorted(years)


def _site_symbol(colour: str) -> QgsFillSymbol:
    """A light fill and a thick outline in the year's colour over a white casing, so a site reads
    above the red detections and magenta active cells of its run."""
    fill = QColor(colour)
    fill.setAlpha(60)
    symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "255,255,255,230",
                                         "outline_width": "1.6", "outline_style": "solid"})
    coloured = QgsSimpleFillSymbolLayer.create({"color": fill.name(QColor.HexArgb), "outline_color": colour,
                                                "outline_width": "0.9", "outline_style": "solid"})
    # ongoing sites are still active at the last date: their outline is dashed, whatever the year
    coloured.setDataDefinedProperty(QgsSymbolLayer.PropertyStrokeStyle, QgsProperty.fromExpression(ONGOING_STROKE))
    symbol.appendSymbolLayer(coloured)
    return symbol


def style_sites(layer: QgsVectorLayer) -> None:
    """Categorised by start year, ongoing sites dashed, labelled and map-tipped "id  start → end",
    temporal from start to end (open-ended while ongoing)."""
    categories = [QgsRendererCategory(year, _site_symbol(YEAR_COLOURS[i % len(YEAR_COLOURS)]),
                                      "started %d" % year) for i, year in enumerate(start_years(layer))]
    renderer = QgsCategorizedSymbolRenderer(year_expression(layer), categories)
    renderer.setSourceSymbol(_site_symbol("#777777"))
    layer.setRenderer(renderer)
    label = QgsPalLayerSettings()
    label.fieldName = LABEL_EXPRESSION
    label.isExpression = True
    text = QgsTextFormat()
    text.setSize(8)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(0.8)
    buffer.setColor(QColor("white"))
    text.setBuffer(buffer)
    label.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(label))
    layer.setLabelsEnabled(True)
    layer.setDisplayExpression(LABEL_EXPRESSION)
    layer.setMapTipTemplate("<b>[% \"site_id\" %]</b><br>started [% format_date(\"start_date\", 'yyyy-MM-dd') %]"
                            " → [% coalesce(format_date(\"end_date\", 'yyyy-MM-dd'), 'ongoing') %]<br>"
                            "peak score [% round(\"peak_score\", 2) %], [% \"supporting_dates\" %] supporting, "
                            "[% \"unknown_dates\" %] unknown date(s)")
    set_site_temporal(layer)
    layer.triggerRepaint()


def set_site_temporal(layer: QgsVectorLayer) -> None:
    """A site exists from its start date until its end date (the first date it was seen inactive
    again, excluded); an ongoing site has no end date, which QGIS's field mode treats as open-ended."""
    props = layer.temporalProperties()
    props.setMode(QgsVectorLayerTemporalProperties.ModeFeatureDateTimeStartAndEndFromFields)
    props.setStartField(START_DATE)
    props.setEndField(END_DATE)
    props.setLimitMode(Qgis.VectorTemporalLimitMode.IncludeBeginExcludeEnd)
    props.setIsActive(True)


def style_observations(layer: QgsVectorLayer) -> None:
    """Each observation coloured by the site's status that date; temporal for its date."""
    categories = []
    for status in (ACTIVE, INACTIVE, UNKNOWN):
        colour = QColor(STATUS_COLOURS[status])
        fill = QColor(colour)
        fill.setAlpha(0 if status != ACTIVE else 110)
        style = "dash" if status == UNKNOWN else "solid"
        symbol = QgsFillSymbol.createSimple({"color": fill.name(QColor.HexArgb), "outline_color": colour.name(),
                                             "outline_width": "0.5", "outline_style": style})
        categories.append(QgsRendererCategory(status, symbol, status))
    layer.setRenderer(QgsCategorizedSymbolRenderer(STATUS, categories))
    live_layer.set_temporal(layer)


def add_site_layers(gpkg: str, project: Optional[QgsProject] = None, group: Optional[QgsLayerTreeGroup] = None
                    ) -> Tuple[Optional[QgsVectorLayer], Optional[QgsVectorLayer]]:
    """Adds the run's sites (styled, on top) and site observations (styled, hidden until wanted) to
    the project, inside ``group`` when given. (None, None) when the GeoPackage has no timeline."""
    project = project or QgsProject.instance()
    sites = open_layer(gpkg, SITES_LAYER, SITES_TITLE)
    if sites is None:
        return None, None
    observations = open_layer(gpkg, OBSERVATIONS_LAYER, OBSERVATIONS_TITLE)
    root = group if group is not None else project.layerTreeRoot()
    if observations is not None:
        style_observations(observations)
        project.addMapLayer(observations, False)
        node = root.insertLayer(0, observations)
        node.setItemVisibilityChecked(False)  # the same places as the sites: shown when animating
    style_sites(sites)
    project.addMapLayer(sites, False)
    root.insertLayer(0, sites)
    log.info("added %d sites from %s" % (sites.featureCount(), gpkg))
    return sites, observations


class SiteLayerStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles a timeline layer a Processing algorithm loads into the project when it finishes."""

    _alive: List["SiteLayerStyler"] = []  # QGIS keeps no Python reference to post-processors

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    @classmethod
    def create(cls, kind: str) -> "SiteLayerStyler":
        styler = cls(kind)
        cls._alive.append(styler)
        del cls._alive[:-16]
        return styler

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS calls this name)
        if isinstance(layer, QgsVectorLayer):
            (style_sites if self.kind == SITES_LAYER else style_observations)(layer)


# ---------------------------------------------------------------- one site's series
def as_date(value: Any) -> Optional[_dt.date]:
    """QDate, QDateTime, ``YYYY-MM-DD`` text or a date -> date; None for NULL or anything else."""
    if isinstance(value, QDateTime):
        value = value.date()
    if isinstance(value, QDate):
        return value.toPyDate() if value.isValid() else None
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str) and len(value) >= 10:
        try:
            return _dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _as_score(value: Any) -> Optional[float]:
    if value is None or (hasattr(value, "isNull") and value.isNull()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Observation:
    date: _dt.date
    score: Optional[float]  # None: unknown (masked, failed or not covered that date)
    status: str

    @property
    def known(self) -> bool:
        return self.score is not None and self.status != UNKNOWN


@dataclass(frozen=True)
class SiteSeries:
    """One site's dates and its score on each processed date."""

    site_id: str
    start: Optional[_dt.date]
    end: Optional[_dt.date]  # None while ongoing
    ongoing: bool
    observations: Tuple[Observation, ...]

    @property
    def known(self) -> List[Observation]:
        return [o for o in self.observations if o.known]

    @property
    def unknown(self) -> List[Observation]:
        return [o for o in self.observations if not o.known]

    @property
    def caption(self) -> str:
        """``site_0003 · started 2023-05-12 (ongoing)`` / ``… (ended 2024-05-14)``."""
        start = self.start.isoformat() if self.start else "?"
        tail = "ongoing" if self.ongoing or self.end is None else "ended %s" % self.end.isoformat()
        return "%s · started %s (%s)" % (self.site_id, start, tail)


def site_series(site: QgsFeature, observations: QgsVectorLayer) -> SiteSeries:
    """The series of the site ``site`` (a feature of a sites layer) from its observations layer."""
    site_id = str(site[SITE_ID])
    request = QgsFeatureRequest().setFilterExpression(QgsExpression.createFieldEqualityExpression(SITE_ID, site_id))
    rows = []
    for feature in observations.getFeatures(request):
        day = as_date(feature[DATE])
        if day is not None:
            rows.append(Observation(day, _as_score(feature[SCORE]), str(feature[STATUS] or UNKNOWN)))
    rows.sort(key=lambda o: o.date)
    ongoing = str(site[ONGOING]) in ("1", "True", "true")
    return SiteSeries(site_id, as_date(site[START_DATE]), as_date(site[END_DATE]), ongoing, tuple(rows))


def observations_for(sites: QgsVectorLayer) -> Optional[QgsVectorLayer]:
    """The ``site_observations`` layer beside a sites layer (the same GeoPackage)."""
    return open_layer(gpkg_path(sites), OBSERVATIONS_LAYER)


def site_features(sites: QgsVectorLayer) -> List[QgsFeature]:
    """Every site, in site id order."""
    return sorted(sites.getFeatures(), key=lambda f: str(f[SITE_ID]))


def find_site(sites: QgsVectorLayer, site_id: str) -> Optional[QgsFeature]:
    request = QgsFeatureRequest().setFilterExpression(QgsExpression.createFieldEqualityExpression(SITE_ID, site_id))
    return next(iter(sites.getFeatures(request)), None)


def describe_sites(features: Sequence[QgsFeature]) -> str:
    ongoing = sum(1 for f in features if str(f[ONGOING]) in ("1", "True", "true"))
    return "%d site%s, %d ongoing" % (len(features), "" if len(features) == 1 else "s", ongoing)
