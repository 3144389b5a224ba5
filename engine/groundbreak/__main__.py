"""``python -m groundbreak`` (how the QGIS plugin starts the engine)."""

from .cli import main

if __name__ == "__main__":
    main()
