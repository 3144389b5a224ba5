"""Acquisition dates: from STAC, GeoTIFF tags or the file name."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from typing import Optional, Union

from groundbreak.errors import (
    MissingDateError,
    UsageError,
)

log = logging.getLogger(__name__)

_DATE_IN_NAME = (
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"),
)
_TAG_DATE = re.compile(r"^\s*(\d{4})[:\-/]?(\d{2})[:\-/]?(\d{2})")
_DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITION_DATE", "ACQUISITIONDATE", "DATE", "DATETIME")


def _valid_date(y: str, m: str, d: str) -> Optional[_dt.date]:
    year = int(y)
    if not 1970 <= year <= 2100:
        return None
    try:
        return _dt.date(year, int(m), int(d))
    except ValueError:
        return None


def date_from_name(name: str) -> Optional[_dt.date]:
    """The first valid calendar date (1970–2100) in a file name, as YYYY-MM-DD or YYYYMMDD."""
    base = os.path.basename(name)
    for pattern in _DATE_IN_NAME:
        for match in pattern.finditer(base):
            found = _valid_date(*match.groups())
            if found:
                return found
    return None


def _date_from_tag(value: str) -> Optional[_dt.date]:
    match = _TAG_DATE.match(value or "")
    return _valid_date(*match.groups()) if match else None


def parse_date(value: Union[str, _dt.date, _dt.datetime]) -> _dt.date:
    """``"YYYY-MM-DD"`` (or a date) -> date; UsageError otherwise."""
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise UsageError(
            f"date {value!r} is not a calendar date", hint="write it as YYYY-MM-DD, e.g. 2021-06-30"
        ) from None


def _missing_date(path: str) -> MissingDateError:
    return MissingDateError(
        f"no acquisition date for {path}: no STAC datetime, no TIFFTAG_DATETIME/ACQUISITION_DATE "
        "tag and no YYYYMMDD or YYYY-MM-DD date in the file name",
        hint="rename the file with its date (e.g. scene_20210630.tif), or set the tag with "
        f"gdal_edit.py -mo TIFFTAG_DATETIME='2021:06:30 00:00:00' {path}, or describe it with a "
        "STAC item, or pass --date 2021-06-30 for a single scene",
    )
