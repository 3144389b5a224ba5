"""Plugin settings stored in QgsSettings under ``groundbreak/``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from qgis.core import QgsApplication, QgsSettings

from . import request

PREFIX = "groundbreak/"


@dataclass(frozen=True)
class EngineSettings:
    interpreter: str = ""
    threads: int = 2
    price_per_hour: float = 0.10
    batch_size: int = 32
    min_valid: float = 0.5
    model_dir: str = ""
    runtime: str = ""  # "" = the engine's default (auto)

    def with_changes(self, **changes) -> "EngineSettings":
        return replace(self, **changes)

    @property
    def effective_interpreter(self) -> str:
        """The configured interpreter, else $GROUNDBREAK_ENGINE_PYTHON, else the checkout's or the
        profile's engine venv."""
        import os

        return self.interpreter or os.environ.get("GROUNDBREAK_ENGINE_PYTHON", "") or default_interpreter()


def profile_dir() -> str:
    return QgsApplication.qgisSettingsDirPath()


def default_interpreter() -> str:
    return request.default_interpreter(profile_dir())


def engine_root() -> str:
    """Where "Set up engine" makes engine environments (one folder per set-up)."""
    import os

    return os.path.join(profile_dir(), "groundbreak")


def load(settings: Optional[QgsSettings] = None) -> EngineSettings:
    s = settings or QgsSettings()
    d = EngineSettings()
    return EngineSettings(
        interpreter=str(s.value(PREFIX + "interpreter", d.interpreter) or ""),
        threads=_int(s.value(PREFIX + "threads", d.threads), d.threads),
        price_per_hour=_float(s.value(PREFIX + "price_per_hour", d.price_per_hour), d.price_per_hour),
        batch_size=_int(s.value(PREFIX + "batch_size", d.batch_size), d.batch_size),
        min_valid=_float(s.value(PREFIX + "min_valid", d.min_valid), d.min_valid),
        model_dir=str(s.value(PREFIX + "model_dir", d.model_dir) or ""),
        runtime=str(s.value(PREFIX + "runtime", d.runtime) or ""),
    )


def save(values: EngineSettings, settings: Optional[QgsSettings] = None) -> None:
    s = settings or QgsSettings()
    s.setValue(PREFIX + "interpreter", values.interpreter)
    s.setValue(PREFIX + "threads", int(values.threads))
    s.setValue(PREFIX + "price_per_hour", float(values.price_per_hour))
    s.setValue(PREFIX + "batch_size", int(values.batch_size))
    s.setValue(PREFIX + "min_valid", float(values.min_valid))
    s.setValue(PREFIX + "model_dir", values.model_dir)
    s.setValue(PREFIX + "runtime", values.runtime)


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
