"""A site's score over time, drawn with QPainter (no plotting library inside QGIS's Python).

Known scores are a line with points (filled: vermillion where the site was active that date, blue
where inactive); unknown dates (masked by cloud, shadow or nodata, failed, or not covered) are
hollow grey circles on the bottom edge over a grey band, never a zero score; the start date is a
solid green line, the end date a dashed one (an ongoing site's active span runs to the right edge
with an arrow). The x axis is time (dates at their true spacing), each date labelled vertically
where the labels do not collide (start and end first); the caption is the site id and
"started YYYY-MM-DD (ended … / ongoing)".
"""

from __future__ import annotations

import datetime as _dt
from typing import List, Optional, Tuple

from qgis.PyQt.QtCore import QPointF, QRectF, QSize, Qt
from qgis.PyQt.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen
from qgis.PyQt.QtWidgets import QSizePolicy, QWidget

from .sites import ACTIVE, SiteSeries

LINE = QColor("#0072B2")
ACTIVE_POINT = QColor("#D55E00")
INACTIVE_POINT = QColor("#0072B2")
UNKNOWN = QColor("#8C8C8C")
UNKNOWN_BAND = QColor(140, 140, 140, 50)
ACTIVE_SPAN = QColor(213, 94, 0, 28)
START = QColor("#009E73")
END = QColor("#404040")
GRID = QColor(0, 0, 0, 30)
POINT_RADIUS = 4.0
EMPTY_TEXT = "Select a site (on the map or in the list) to see its score over time."


class SitePlot(QWidget):
    """Score over dates of one :class:`SiteSeries` (or a hint when there is none)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.series: Optional[SiteSeries] = None
        self.setMinimumSize(260, 200)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setAttribute(Qt.WA_OpaquePaintEvent, True)

    def sizeHint(self) -> QSize:  # noqa: N802
        # modest: the dock's tabs share one preferred height (the largest page's), which must fit
        # 1366 x 768 without a scroll bar; the Expanding policy gives the plot whatever room is left
        return QSize(360, 190)

    def set_series(self, series: Optional[SiteSeries]) -> None:
        self.series = series
        self.setToolTip(self._tooltip())
        self.update()

    # ---------------------------------------------------------------- geometry (public for tests)
    def _small_font(self) -> QFont:
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1.0))
        return font

    def _caption_font(self) -> QFont:
        """Bold, a point smaller at a time (down to 7 pt) until the caption fits the width."""
        font = QFont(self.font())
        font.setBold(True)
        text = self.series.caption if self.series is not None else ""
        while font.pointSizeF() > 7.0 and QFontMetrics(font).horizontalAdvance(text) > self.width() - 8:
            font.setPointSizeF(font.pointSizeF() - 0.5)
        return font

    def plot_rect(self) -> QRectF:
        """The data area: score 0..1 bottom to top, first to last date left to right."""
        small = QFontMetrics(self._small_font())
        caption = QFontMetrics(self._caption_font())
        top = caption.height() + 6 + small.height()  # caption, then room for the start/end tags
        left = small.horizontalAdvance("0.5") + 8 + small.height()  # tick labels and the rotated title
        bottom = small.horizontalAdvance("2024-05-14") + 8 + small.height() + 6  # vertical dates, legend
        width = max(40.0, self.width() - left - 12.0)
        height = max(40.0, self.height() - top - bottom)
        return QRectF(left, top, width, height)

    def _span(self) -> Tuple[int, int]:
        assert self.series is not None and self.series.observations
        days = [o.date.toordinal() for o in self.series.observations]
        first, last = min(days), max(days)
        if last == first:
            first, last = first - 1, last + 1
        return first, last

    def x_of(self, date: _dt.date) -> float:
        rect = self.plot_rect()
        first, last = self._span()
        pad = 0.04 * rect.width()
        return rect.left() + pad + (rect.width() - 2 * pad) * (date.toordinal() - first) / float(last - first)

    def y_of(self, score: float) -> float:
        rect = self.plot_rect()
        return rect.bottom() - rect.height() * max(0.0, min(1.0, score))

    def points(self) -> List[Tuple[_dt.date, float, QPointF]]:
        """The known scores as drawn: (date, score, centre)."""
        if self.series is None:
            return []
        return [(o.date, float(o.score), QPointF(self.x_of(o.date), self.y_of(float(o.score))))
                for o in self.series.known if o.score is not None]

    def unknown_points(self) -> List[Tuple[_dt.date, QPointF]]:
        """The unknown dates as drawn: (date, centre of the hollow marker on the bottom edge)."""
        if self.series is None:
            return []
        y = self.plot_rect().bottom() - POINT_RADIUS - 2
        return [(o.date, QPointF(self.x_of(o.date), y)) for o in self.series.unknown]

    def unknown_band(self, date: _dt.date) -> QRectF:
        """The grey band of an unknown date: half-way to its neighbours on either side."""
        assert self.series is not None
        rect = self.plot_rect()
        dates = [o.date for o in self.series.observations]
        i = dates.index(date)
        x = self.x_of(date)
        left = (self.x_of(dates[i - 1]) + x) / 2 if i > 0 else rect.left()
        right = (self.x_of(dates[i + 1]) + x) / 2 if i + 1 < len(dates) else rect.right()
        return QRectF(left, rect.top(), right - left, rect.height())

    def date_labels(self) -> List[_dt.date]:
        """The dates that get a label: start and end first, then the others where they fit."""
        if self.series is None or not self.series.observations:
            return []
        gap = QFontMetrics(self._small_font()).height() + 1
        wanted = [d for d in (self.series.start, self.series.end) if d is not None]
        wanted += [o.date for o in self.series.observations if o.date not in wanted]
        chosen: List[_dt.date] = []
        for date in wanted:
            if all(abs(self.x_of(date) - self.x_of(c)) >= gap for c in chosen):
                chosen.append(date)
        return sorted(chosen)

    def _tooltip(self) -> str:
        s = self.series
        if s is None:
            return ""
        rows = ["%s: %s" % (o.date.isoformat(), "%.2f (%s)" % (o.score, o.status) if o.known and o.score is not None
                            else "unknown (masked or not covered)") for o in s.observations]
        return s.caption + "\n" + "\n".join(rows)

    # ---------------------------------------------------------------- drawing
    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.Antialiasing, True)
            self.draw(painter)
        finally:
            painter.end()

    def draw(self, painter: QPainter) -> None:
        palette = self.palette()
        painter.fillRect(self.rect(), palette.base())
        text = palette.text().color()
        series = self.series
        if series is None or not series.observations:
            painter.setPen(text)
            painter.drawText(QRectF(self.rect()).adjusted(8, 8, -8, -8), Qt.AlignCenter | Qt.TextWordWrap,
                             EMPTY_TEXT if series is None else "%s: no observations" % series.site_id)
            return
        rect = self.plot_rect()
        small = self._small_font()
        fm = QFontMetrics(small)
        # caption
        painter.setFont(self._caption_font())
        painter.setPen(text)
        caption_fm = QFontMetrics(self._caption_font())
        painter.drawText(QRectF(4, 2, self.width() - 8, caption_fm.height()), Qt.AlignLeft | Qt.AlignVCenter,
                         caption_fm.elidedText(series.caption, Qt.ElideRight, self.width() - 8))
        painter.setFont(small)
        # the active span (start to end, or to the right edge while ongoing), then the unknown bands
        if series.start is not None:
            x0 = self.x_of(series.start)
            x1 = rect.right() if series.ongoing or series.end is None else self.x_of(series.end)
            painter.fillRect(QRectF(x0, rect.top(), max(1.0, x1 - x0), rect.height()), ACTIVE_SPAN)
        for obs in series.unknown:  # grey over the plain background, whether inside the span or not
            painter.fillRect(self.unknown_band(obs.date), palette.base())
            painter.fillRect(self.unknown_band(obs.date), UNKNOWN_BAND)
        # grid, axes and score ticks
        painter.setPen(QPen(GRID, 1))
        for score in (0.25, 0.5, 0.75, 1.0):
            painter.drawLine(QPointF(rect.left(), self.y_of(score)), QPointF(rect.right(), self.y_of(score)))
        painter.setPen(QPen(text, 1))
        painter.drawLine(rect.bottomLeft(), rect.bottomRight())
        painter.drawLine(rect.bottomLeft(), rect.topLeft())
        for score, label in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
            y = self.y_of(score)
            painter.drawLine(QPointF(rect.left() - 3, y), QPointF(rect.left(), y))
            painter.drawText(QRectF(0, y - fm.height() / 2, rect.left() - 5, fm.height()),
                             Qt.AlignRight | Qt.AlignVCenter, label)
        painter.save()
        painter.translate(fm.ascent() - 1, rect.center().y())
        painter.rotate(-90)
        painter.drawText(QRectF(-rect.height() / 2, -fm.ascent(), rect.height(), fm.height()), Qt.AlignCenter,
                         "score")
        painter.restore()
        # a tick per date, a vertical label where it fits
        labelled = set(self.date_labels())
        for obs in series.observations:
            x = self.x_of(obs.date)
            painter.drawLine(QPointF(x, rect.bottom()), QPointF(x, rect.bottom() + 3))
            if obs.date in labelled:
                painter.save()
                painter.translate(x + fm.ascent() / 2 - 1, rect.bottom() + 5)
                painter.rotate(-90)
                painter.drawText(QRectF(-fm.horizontalAdvance("2024-05-14") - 2, -fm.ascent(),
                                        fm.horizontalAdvance("2024-05-14") + 2, fm.height()),
                                 Qt.AlignRight | Qt.AlignVCenter, obs.date.isoformat())
                painter.restore()
        self._draw_markers(painter, rect, fm)
        self._draw_scores(painter)
        self._draw_legend(painter, rect, fm, text)

    def _draw_markers(self, painter: QPainter, rect: QRectF, fm: QFontMetrics) -> None:
        series = self.series
        assert series is not None
        tag_y = rect.top() - fm.height() - 1
        if series.start is not None:
            x = self.x_of(series.start)
            painter.setPen(QPen(START, 2))
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
            painter.drawText(QRectF(x - 60, tag_y, 120, fm.height()), Qt.AlignCenter, "start")
        if series.end is not None and not series.ongoing:
            x = self.x_of(series.end)
            painter.setPen(QPen(END, 2, Qt.DashLine))
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
            painter.setPen(END)
            painter.drawText(QRectF(x - 60, tag_y, 120, fm.height()), Qt.AlignCenter, "end")
        elif series.start is not None:
            painter.setPen(START)
            painter.drawText(QRectF(rect.right() - 120, tag_y, 120, fm.height()), Qt.AlignRight | Qt.AlignVCenter,
                             "ongoing →")

    def _draw_scores(self, painter: QPainter) -> None:
        series = self.series
        assert series is not None
        # solid between consecutive known dates, dotted across unknown ones (no score was seen there)
        previous = None
        for obs in series.observations:
            if not obs.known or obs.score is None:
                continue
            point = QPointF(self.x_of(obs.date), self.y_of(obs.score))
            if previous is not None:
                gap = any(not o.known for o in series.observations if previous[0] < o.date < obs.date)
                painter.setPen(QPen(LINE, 2, Qt.DotLine if gap else Qt.SolidLine))
                painter.drawLine(previous[1], point)
            previous = (obs.date, point)
        status_of = {o.date: o.status for o in series.observations}
        for date, _score, centre in self.points():
            colour = ACTIVE_POINT if status_of[date] == ACTIVE else INACTIVE_POINT
            painter.setPen(QPen(QColor("white"), 1))
            painter.setBrush(QBrush(colour))
            painter.drawEllipse(centre, POINT_RADIUS + 0.5, POINT_RADIUS + 0.5)
        painter.setBrush(Qt.NoBrush)
        painter.setPen(QPen(UNKNOWN, 2))
        for _date, centre in self.unknown_points():
            painter.drawEllipse(centre, POINT_RADIUS, POINT_RADIUS)

    def _draw_legend(self, painter: QPainter, rect: QRectF, fm: QFontMetrics, text: QColor) -> None:
        y = self.height() - fm.height() / 2 - 3
        x = 6.0
        items = (("active", "dot", ACTIVE_POINT), ("inactive", "dot", INACTIVE_POINT),
                 ("unknown", "ring", UNKNOWN), ("start", "line", START), ("end", "dash", END))
        for label, kind, colour in items:
            if kind == "dot":
                painter.setPen(Qt.NoPen)
                painter.setBrush(QBrush(colour))
                painter.drawEllipse(QPointF(x + 4, y), POINT_RADIUS, POINT_RADIUS)
            elif kind == "ring":
                painter.setBrush(Qt.NoBrush)
                painter.setPen(QPen(colour, 2))
                painter.drawEllipse(QPointF(x + 4, y), POINT_RADIUS, POINT_RADIUS)
            else:
                painter.setPen(QPen(colour, 2, Qt.DashLine if kind == "dash" else Qt.SolidLine))
                painter.drawLine(QPointF(x + 4, y - fm.height() / 2 + 2), QPointF(x + 4, y + fm.height() / 2 - 2))
            painter.setBrush(Qt.NoBrush)
            painter.setPen(text)
            width = fm.horizontalAdvance(label)
            painter.drawText(QRectF(x + 11, y - fm.height() / 2, width + 2, fm.height()),
                             Qt.AlignLeft | Qt.AlignVCenter, label)
            x += 11 + width + 12

