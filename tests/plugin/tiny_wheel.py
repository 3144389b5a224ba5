"""A tiny stand-in engine wheel (package ``groundbreak``, no dependencies, extra ``fast``) so the real
"Set up engine" steps (venv, pip resolve, pip install, status probe) run in seconds in tests."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

NAME, VERSION = "groundbreak", "0.0.1"


def build(folder: Path) -> Path:
    dist = "%s-%s.dist-info" % (NAME, VERSION)
    files = {
        "%s/__init__.py" % NAME: '__version__ = "%s"\n' % VERSION,
        "%s/__main__.py" % NAME: "print('tiny engine')\n",
        dist + "/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: %s\nProvides-Extra: fast\n" % (NAME, VERSION),
        dist + "/WHEEL": "Wheel-Version: 1.0\nGenerator: tiny\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (name, digest, len(text.encode())))
    record.append(dist + "/RECORD,,")
    files[dist + "/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("%s-%s-py3-none-any.whl" % (NAME, VERSION))
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path
