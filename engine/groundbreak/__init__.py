"""Groundbreak: find heavy construction activity in 4-band satellite imagery on CPUs.

Importing this package is cheap: it never imports torch (only ``groundbreak.inference`` does).
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

# Library code logs; only the CLI configures handlers.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
