"""The "Set up engine" dialog: the steps with their state, what is happening now, the full log one
click away, and at the end what was done or what failed and what to do."""

from __future__ import annotations

from typing import List, Optional

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
)

from .setup_engine import KINDS, STEPS, EngineKind, EngineSetup

PENDING, CURRENT, DONE, FAILED = "·", "▶", "✓", "✗"


class SetupDialog(QDialog):
    def __init__(self, setup: EngineSetup, parent=None) -> None:
        super().__init__(parent)
        self.setup = setup
        self.setWindowTitle("Groundbreak: set up engine")
        self.setMinimumWidth(560)
        col = QVBoxLayout(self)
        info = KINDS[setup.plan.kind]
        col.addWidget(QLabel("A new Python environment for the engine (%s: %s) in\n%s"
                             % (info.title.lower(), info.size, setup.plan.venv_dir)))
        self.step_labels: List[QLabel] = []
        for title in STEPS:
            label = QLabel("%s  %s" % (PENDING, title))
            label.setWordWrap(True)
            self.step_labels.append(label)
            col.addWidget(label)
        self.detail_label = QLabel("")
        self.detail_label.setWordWrap(True)
        col.addWidget(self.detail_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        col.addWidget(self.progress)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        col.addWidget(self.result_label)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setVisible(False)
        self.log_view.setMinimumHeight(140)
        col.addWidget(self.log_view, 1)
        row = QHBoxLayout()
        self.log_button = QPushButton("Show full log")
        self.log_button.setCheckable(True)
        self.log_button.toggled.connect(self._toggle_log)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._cancel_or_close)
        row.addWidget(self.log_button)
        row.addStretch(1)
        row.addWidget(self.cancel_button)
        col.addLayout(row)
        self.ok: Optional[bool] = None
        setup.step_started.connect(self._on_step)
        setup.detail.connect(self._on_detail)
        setup.output.connect(self.log_view.appendPlainText)
        setup.finished.connect(self._on_finished)

    def _on_step(self, index: int, total: int, title: str) -> None:
        for i, label in enumerate(self.step_labels):
            mark = DONE if i < index else CURRENT if i == index else PENDING
            label.setText("%s  %s" % (mark, STEPS[i]))
            font = label.font()
            font.setBold(i == index)
            label.setFont(font)
        if index == 1 and self.setup.index_note:
            self.step_labels[0].setText("%s  %s: %s" % (DONE, STEPS[0], self.setup.index_note))

    def _on_detail(self, text: str, fraction: float) -> None:
        self.detail_label.setText(text)
        self.progress.setValue(int(round(1000 * max(0.0, min(1.0, fraction)))))

    def _on_finished(self, ok: bool, message: str) -> None:
        self.ok = ok
        index = max(0, min(self.setup.index, len(STEPS) - 1))
        if ok:
            for i, label in enumerate(self.step_labels):
                label.setText("%s  %s" % (DONE, STEPS[i]) + (": " + self.setup.index_note if i == 0 else ""))
            self.progress.setValue(1000)
        else:
            self.step_labels[index].setText("%s  %s" % (FAILED, STEPS[index]))
        self.detail_label.setText("")
        self.result_label.setText(message)
        self.cancel_button.setText("Close")
        self.adjustSize()  # the whole message, never cut

    def _toggle_log(self, shown: bool) -> None:
        self.log_view.setVisible(shown)
        self.log_button.setText("Hide full log" if shown else "Show full log")
        self.adjustSize()
        screen = self.screen().availableGeometry() if hasattr(self, "screen") else None
        if screen is not None and self.height() > screen.height() - 40:  # never taller than the screen
            self.resize(self.width(), screen.height() - 40)
            self.move(self.x(), screen.top() + 20)

    def _cancel_or_close(self) -> None:
        if self.ok is None:
            self.setup.cancel()
        else:
            self.accept()

    def reject(self) -> None:  # Esc or the window's close button
        if self.ok is None:
            self.setup.cancel()
        super().reject()


class SetupChoiceDialog(QDialog):
    """Which engine to install, with what each can do and its size, before anything is downloaded."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Groundbreak: set up engine")
        col = QVBoxLayout(self)
        col.addWidget(QLabel("Which engine should Groundbreak install? The engine you use now stays until the new "
                             "one works."))
        self.buttons = {}
        for kind, info in KINDS.items():
            button = QRadioButton("&%s (%s)" % (info.title, info.size))
            button.setChecked(kind == EngineKind.FULL)
            detail = QLabel(info.what)
            detail.setWordWrap(True)
            detail.setContentsMargins(24, 0, 0, 6)
            col.addWidget(button)
            col.addWidget(detail)
            self.buttons[kind] = button
        box = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        box.button(QDialogButtonBox.Ok).setText("&Install")
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        col.addWidget(box)

    @property
    def kind(self) -> EngineKind:
        return next(k for k, b in self.buttons.items() if b.isChecked())
