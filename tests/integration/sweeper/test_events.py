"""The orphan sweeper's sample event (events/orphan-sweeper.json) runs through the real handler: it is what
the daily schedule sends (checked against the template in tests/unit/test_template_sweeper.py once the
schedule is merged), and the handler answers the sweep's counts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from functions.orphan_sweeper import app as sweeper
from keyhealth.observability import logger
from tests.support.api import created
from tests.support.events import LambdaContext

EVENT = Path(__file__).resolve().parents[3] / "events" / "orphan-sweeper.json"


def test_the_sample_event_has_the_schedules_shape():
    event = json.loads(EVENT.read_text())
    assert event == {"source": "keyhealth.schedule", "scheduled_time": event["scheduled_time"]}


def test_the_sample_event_sweeps_and_answers_the_counts(stack, clock, caplog):
    # Given one binding, two hours old
    created(stack, stack.exchanges.key("binance", "healthy"), scopes=["spot"])
    clock.skip(7200)
    # When the schedule's event reaches the sweeper
    with caplog.at_level(logging.INFO):
        answer = sweeper.lambda_handler(json.loads(EVENT.read_text()), LambdaContext())
    # Then it answers the sweep's counts, and the invocation's log lines carry the scheduled time
    assert answer == {"checked": 1, "removed": 0, "failed": 0}
    [finished] = [r for r in caplog.records if r.getMessage() == "orphan sweep finished"]
    assert (finished.checked, finished.removed, finished.failed) == (1, 0, 0)
    assert logger.get_current_keys()["scheduled_time"] == "2026-11-21T03:30:00Z"


def test_any_other_event_still_sweeps_and_logs_no_odd_value(stack):
    assert sweeper.lambda_handler({}, LambdaContext()) == {"checked": 0, "removed": 0, "failed": 0}
    assert sweeper.lambda_handler({"scheduled_time": "<script>"}, LambdaContext())["checked"] == 0
    assert "scheduled_time" not in logger.get_current_keys()
