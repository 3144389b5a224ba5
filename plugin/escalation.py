"""How the plugin stops an engine: the protocol's cancel message, then terminate, then kill.

One policy and one escalation for both drivers: the live dock's asynchronous QProcess polls it from
a timer, the Processing algorithms' blocking process from their read loop. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional


class StopStep(str, Enum):
    CANCEL = "cancel"  # ask the engine to stop after its current batch (it still writes result/done)
    TERMINATE = "terminate"  # SIGTERM: the engine did not stop in time
    KILL = "kill"  # SIGKILL: it did not even terminate


@dataclass(frozen=True)
class StopPolicy:
    """Seconds to wait after each step before the next one."""

    # a batch on 2 cores takes seconds (OpenVINO compiling or a large batch: more): wait that long
    cancel_grace_s: float = 20.0
    terminate_grace_s: float = 5.0

    def step_due(self, elapsed_s: float) -> StopStep:
        """The step that should have been taken ``elapsed_s`` seconds after cancel was asked."""
        if elapsed_s >= self.cancel_grace_s + self.terminate_grace_s:
            return StopStep.KILL
        if elapsed_s >= self.cancel_grace_s:
            return StopStep.TERMINATE
        return StopStep.CANCEL


#: Runs and plans (dock and Processing).
DEFAULT_POLICY = StopPolicy()
#: Unloading the plugin or closing QGIS: nobody should wait 20 s for a window to close.
UNLOAD_POLICY = StopPolicy(cancel_grace_s=3.0, terminate_grace_s=1.0)


class Escalation:
    """Takes each stop step once, in order, when it is due; the caller polls :meth:`poll`.

    ``actions`` maps each step to what the driver does (write the cancel line, terminate, kill).
    """

    ORDER = (StopStep.CANCEL, StopStep.TERMINATE, StopStep.KILL)

    def __init__(self, actions: "dict[StopStep, Callable[[], None]]", policy: StopPolicy = DEFAULT_POLICY,
                 on_step: Optional[Callable[[StopStep], None]] = None) -> None:
        self.actions = actions
        self.policy = policy
        self.on_step = on_step
        self.started_at: Optional[float] = None
        self.taken: "list[StopStep]" = []

    @property
    def requested(self) -> bool:
        return self.started_at is not None

    def request(self, now: float) -> None:
        """Cancel asked (again asking does nothing): the cancel message goes out at once."""
        if self.started_at is None:
            self.started_at = now
            self.poll(now)

    def poll(self, now: float) -> Optional[StopStep]:
        """Takes every step that is due and not taken yet; returns the last one taken now."""
        if self.started_at is None:
            return None
        due = self.policy.step_due(now - self.started_at)
        last = None
        for step in self.ORDER[: self.ORDER.index(due) + 1]:
            if step not in self.taken:
                self.taken.append(step)
                if self.on_step is not None:
                    self.on_step(step)
                self.actions[step]()
                last = step
        return last

    def next_due_in(self, now: float) -> Optional[float]:
        """Seconds until the next step is due (None when every step was taken or none requested)."""
        if self.started_at is None or len(self.taken) == len(self.ORDER):
            return None
        elapsed = now - self.started_at
        marks = (0.0, self.policy.cancel_grace_s, self.policy.cancel_grace_s + self.policy.terminate_grace_s)
        return max(0.0, marks[len(self.taken)] - elapsed)
