"""The one cancel -> terminate -> kill escalation shared by the dock and Processing."""

from __future__ import annotations

from plugin.escalation import DEFAULT_POLICY, Escalation, StopPolicy, StopStep


def escalation(policy):
    taken = []
    actions = {step: (lambda s=step: taken.append(s)) for step in StopStep}
    return Escalation(actions, policy), taken


def test_steps_come_in_order_each_once_when_due():
    esc, taken = escalation(StopPolicy(cancel_grace_s=10, terminate_grace_s=2))
    assert esc.poll(0.0) is None and taken == []  # nothing before cancel is asked
    esc.request(100.0)
    assert taken == [StopStep.CANCEL]
    esc.request(101.0)  # asking again sends nothing new
    assert esc.poll(109.9) is None and taken == [StopStep.CANCEL]
    assert esc.next_due_in(105.0) == 5.0
    assert esc.poll(110.0) == StopStep.TERMINATE
    assert esc.next_due_in(111.0) == 1.0
    assert esc.poll(112.0) == StopStep.KILL
    assert taken == [StopStep.CANCEL, StopStep.TERMINATE, StopStep.KILL]
    assert esc.next_due_in(200.0) is None and esc.poll(300.0) is None


def test_a_late_poll_takes_every_overdue_step():
    esc, taken = escalation(StopPolicy(cancel_grace_s=1, terminate_grace_s=1))
    esc.request(0.0)
    assert esc.poll(50.0) == StopStep.KILL
    assert taken == [StopStep.CANCEL, StopStep.TERMINATE, StopStep.KILL]


def test_the_default_waits_a_batch_before_terminating():
    assert DEFAULT_POLICY.step_due(19.9) == StopStep.CANCEL
    assert DEFAULT_POLICY.step_due(20.0) == StopStep.TERMINATE
    assert DEFAULT_POLICY.step_due(25.0) == StopStep.KILL
