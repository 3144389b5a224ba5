"""The settings dialog: engine interpreter, threads, batch size, minimum valid fraction, price."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from . import names, settings


class SettingsDialog(QDialog):
    def __init__(self, parent=None, on_setup=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Groundbreak settings")
        values = settings.load()
        form = QFormLayout(self)
        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        self.interpreter_edit = QLineEdit(values.interpreter)
        self.interpreter_edit.setPlaceholderText(settings.default_interpreter() or "not set")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        lay.addWidget(self.interpreter_edit, 1)
        lay.addWidget(browse)
        form.addRow("Engine Python", row)
        form.addRow("", QLabel("The engine runs in its own virtualenv, never in QGIS's Python.\n"
                               "Leave empty to use the default shown in grey."))
        self.setup_button = QPushButton("Set up engine…")
        if on_setup is not None:
            self.setup_button.clicked.connect(on_setup)
        form.addRow("", self.setup_button)
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(1, 256)
        self.threads_spin.setValue(values.threads)
        form.addRow("Threads", self.threads_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 1024)
        self.batch_spin.setValue(values.batch_size)
        form.addRow("Batch size", self.batch_spin)
        self.min_valid_spin = QDoubleSpinBox()
        self.min_valid_spin.setRange(0.0, 1.0)
        self.min_valid_spin.setSingleStep(0.05)
        self.min_valid_spin.setValue(values.min_valid)
        form.addRow("Minimum valid fraction", self.min_valid_spin)
        self.price_spin = QDoubleSpinBox()
        self.price_spin.setRange(0.0, 1000.0)
        self.price_spin.setDecimals(3)
        self.price_spin.setPrefix("$ ")
        self.price_spin.setValue(values.price_per_hour)
        form.addRow("Price per hour", self.price_spin)
        self.runtime_combo = QComboBox()
        self.runtime_combo.addItems(list(names.RUNTIME_CHOICES))
        self.runtime_combo.setCurrentText(values.runtime or names.AUTO)
        form.addRow("Inference runtime", self.runtime_combo)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Engine Python interpreter")
        if path:
            self.interpreter_edit.setText(path)

    def values(self) -> settings.EngineSettings:
        return settings.load().with_changes(
            interpreter=self.interpreter_edit.text().strip(), threads=self.threads_spin.value(),
            batch_size=self.batch_spin.value(), min_valid=self.min_valid_spin.value(),
            price_per_hour=self.price_spin.value(),
            runtime="" if self.runtime_combo.currentText() == names.AUTO else self.runtime_combo.currentText())

    def accept(self) -> None:
        settings.save(self.values())
        super().accept()
