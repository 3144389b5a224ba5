"""Writes plugin/styles/detections.qml (run with /usr/bin/python3 and QT_QPA_PLATFORM=offscreen).

Detections are coloured by score (the engine's threshold is usually 0.5); rejected reviews are
drawn grey and dashed so the reviewed state is visible on the map.
"""

import sys
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsFillSymbol,
    QgsRuleBasedRenderer,
    QgsVectorLayer,
)

STYLES = Path(__file__).resolve().parents[2] / "plugin" / "styles"
# Review states override the score colours; rules are not exclusive by themselves.
UNREVIEWED = "coalesce(\"review\", '') NOT IN ('confirmed', 'rejected')"


def fill(color, outline, style="solid"):
    return QgsFillSymbol.createSimple({
        "color": color, "outline_color": outline, "outline_width": "0.6", "outline_style": style,
    })


def main():
    app = QgsApplication([], False)
    app.initQgis()
    layer = QgsVectorLayer(
        "Polygon?crs=EPSG:32614&field=score:double&field=review:string&field=date:string", "detections", "memory")
    root = QgsRuleBasedRenderer.Rule(None)
    rules = [
        ("rejected", "\"review\" = 'rejected'", fill("160,160,160,40", "120,120,120,200", "dash")),
        ("confirmed", "\"review\" = 'confirmed'", fill("40,170,60,90", "20,120,40,255")),
        ("score >= 0.85", UNREVIEWED + " AND \"score\" >= 0.85", fill("215,25,28,110", "170,0,0,255")),
        ("0.7 - 0.85", UNREVIEWED + " AND \"score\" >= 0.7 AND \"score\" < 0.85",
         fill("253,141,60,100", "220,100,20,255")),
        ("< 0.7", UNREVIEWED + " AND \"score\" < 0.7", fill("254,217,118,90", "200,160,40,255")),
    ]
    for label, expression, symbol in rules:
        rule = QgsRuleBasedRenderer.Rule(symbol, 0, 0, expression, label)
        root.appendChild(rule)
    renderer = QgsRuleBasedRenderer(root)
    layer.setRenderer(renderer)
    message, ok = layer.saveNamedStyle(str(STYLES / "detections.qml"))
    print(message, ok)
    app.exitQgis()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
