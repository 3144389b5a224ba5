"""Re-records event streams from the real engine into this folder (``real_*.jsonl``):

    .venv/bin/python tests/plugin/recorded/record_real.py

A generated demo world and a fixed random-weights model package (the engine's own generators)
are run through ``plan`` and ``run`` (one normal, one cancelled after its first inference batch).
Absolute temporary paths are replaced by ``<tmp>`` so the files are stable. test_stream.py replays
every recording through the plugin's parser.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    from groundbreak.modelpack import make_random_package
    from groundbreak.world import generate_world, test_spec

    with tempfile.TemporaryDirectory(prefix="gb-record-") as tmp:
        world = generate_world(Path(tmp) / "world", test_spec())
        make_random_package(Path(tmp) / "model", seed=3, width=8, threshold=0.5)
        base = ["--aoi", str(world.aoi), "--scenes", *[str(p) for p in world.scene_paths],
                "--model", str(Path(tmp) / "model"), "--events", "jsonl"]
        engine = [sys.executable, "-m", "groundbreak"]
        recordings = {}
        done = subprocess.run(engine + ["plan"] + base, capture_output=True, stdin=subprocess.PIPE, check=True)
        recordings["real_plan.jsonl"] = done.stdout
        run = ["run", "--out", str(Path(tmp) / "run.gpkg"), "--batch-size", "4", "--runtime", "eager"]
        proc = subprocess.Popen(engine + run + base, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out = proc.stdout.read()
        proc.stdin.close()
        proc.wait()
        recordings["real_run_ok.jsonl"] = out
        run = ["run", "--out", str(Path(tmp) / "cancel.gpkg"), "--batch-size", "1", "--runtime", "eager"]
        proc = subprocess.Popen(engine + run + base, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if b'"type":"progress"' in line and b'"stage":"infer"' in line and b'"done":0,' not in line:
                proc.stdin.write(b'{"v": 1, "type": "cancel"}\n')
                proc.stdin.flush()
                break
        lines += proc.stdout.readlines()
        proc.stdin.close()
        proc.wait()
        recordings["real_run_cancelled.jsonl"] = b"".join(lines)
        for name, data in recordings.items():
            (HERE / name).write_bytes(data.replace(tmp.encode(), b"<tmp>"))
            print("wrote %s (%d lines)" % (name, data.count(b"\n")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
