"""Events with a ``source`` and a ``detail-type``: EventBridge rules' events (pubsub), schedules
of EventBridge scheduled rules and of EventBridge Scheduler (timer), and S3 notifications sent
through EventBridge (datasource).

An event is one message: the W3C context its producer put in ``detail`` becomes the parent.
"""

from __future__ import annotations

from lambdawrap.handler.message_context import payload_context, payload_state
from lambdawrap.handler.trace_context import parse_traceparent
from lambdawrap.handler.triggers.data_sources import s3_from_eventbridge
from lambdawrap.handler.triggers.trigger import (
    EVENT_SOURCE_ARN,
    EVENTBRIDGE,
    SCHEDULE,
    Trigger,
    first_text,
    messaging_attributes,
    messaging_trigger,
    put,
    put_arn,
    text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Dict, Optional

# Sources whose "Scheduled Event" is a schedule firing. Other events of aws.scheduler (API calls
# through CloudTrail) are ordinary events.
_SCHEDULERS = frozenset(("aws.events", "aws.scheduler"))


def from_detail_type(event: dict) -> Optional[Trigger]:
    source = text(event.get("source"))
    detail_type = text(event.get("detail-type"))
    if source is None or detail_type is None or "detail" not in event:
        return None
    if detail_type == "Scheduled Event" and source in _SCHEDULERS:
        return _schedule(event)
    if source == "aws.s3" and detail_type.startswith("Object "):
        return s3_from_eventbridge(event, detail_type)
    attributes = messaging_attributes("aws.eventbridge", None, None, event.get("id"))
    attributes["lambdawrap.eventbridge.source"] = source
    attributes["lambdawrap.eventbridge.detail_type"] = detail_type
    detail = event.get("detail")
    return messaging_trigger(EVENTBRIDGE, attributes, parent=parse_traceparent(payload_context(detail)), parent_state=payload_state(detail))


def _schedule(event: dict) -> Trigger:
    # The schedule expression is not in the event, so faas.cron cannot be set.
    attributes: Dict[str, object] = {"faas.trigger": "timer"}
    put(attributes, "faas.time", event.get("time"))
    # The rule's or the schedule's ARN.
    put_arn(attributes, EVENT_SOURCE_ARN, first_text(event.get("resources")))
    return Trigger(SCHEDULE, attributes)
