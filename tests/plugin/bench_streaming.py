"""Benchmark (prints figures, asserts nothing): engine print -> feature in the live layer.

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/plugin/bench_streaming.py

A stand-in engine prints 200 features batches (8 and 64 features each, 10 ms apart) stamped with
the time they were printed; the dock's path (EngineProcess -> EventStream -> LiveDetections.add)
records how long each took to land in the memory layer.
"""

from __future__ import annotations

import stat
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

ENGINE = '''#!/usr/bin/python3
import json, sys, time
sys.path.insert(0, %r)
from plugin import protocol
n = int(sys.argv[-1])
ring = [[0, 0], [512, 0], [512, 512], [0, 512], [0, 0]]
seq = 0
def emit(kind, **data):
    global seq
    out = protocol.make_event(kind, seq, **data).to_dict()
    seq += 1
    if kind == "features":
        out["t_sent"] = time.time()  # unknown fields are ignored by clients
    print(json.dumps(out), flush=True)
emit("hello", engine="bench", command="run", model=None, pid=0)
for i in range(200):
    emit("features", crs="EPSG:32614", features=[{"type": "Feature", "geometry": {"type": "Polygon",
         "coordinates": [[[500000 + x + i * 10, 5200000 + y + k] for x, y in ring]]},
         "properties": {"chip_id": "c%%d_%%d" %% (i, k), "date": "2020-01-01", "score": 0.9}} for k in range(n)])
    time.sleep(0.01)
emit("result", outputs={}, stats={}, cost={})
emit("done", status="ok", exit_code=0)
''' % str(REPO)


def main() -> int:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from qgis.PyQt.QtCore import QEventLoop

    from plugin.engine_process import EngineProcess
    from plugin.live_layer import LiveDetections
    from plugin.stream import valid_features

    with tempfile.TemporaryDirectory() as tmp:
        engine = Path(tmp) / "engine.py"
        engine.write_text(ENGINE)
        engine.chmod(engine.stat().st_mode | stat.S_IEXEC)
        for n in (8, 64):
            live = LiveDetections("bench %d" % n)
            latencies = []
            proc = EngineProcess()

            def on_event(event, live=live, latencies=latencies):
                if event.type == "features":
                    live.add(event.get("crs"), valid_features(event))
                    latencies.append((time.time() - event.get("t_sent")) * 1000)

            proc.received.connect(on_event)
            loop = QEventLoop()
            proc.finished.connect(loop.quit)
            proc.start(str(engine), ["run", str(n)])
            loop.exec_()
            latencies.sort()
            print("%3d features/batch: %d batches, print -> layer median %.2f ms, p95 %.2f ms, max %.2f ms "
                  "(%d features in the layer)" % (n, len(latencies), statistics.median(latencies),
                                                  latencies[int(len(latencies) * 0.95)], latencies[-1], live.count))
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
