"""Messages from queues and topics: SQS, SNS, SES email receiving and CloudWatch Logs
subscriptions, described as messaging "process" spans (faas.trigger "pubsub").

An SQS batch links to the context of each message, as the AWS Lambda conventions ask for SQS;
SNS delivers one message per invocation, whose context becomes the parent (the messaging
conventions allow it for single messages; docs/semantic-conventions.md says why).
"""

from __future__ import annotations

from lambdawrap.handler.message_context import batch_links, sns_message_beside, sns_message_context, sqs_message_context
from lambdawrap.handler.trace_context import parse_message_context
from lambdawrap.handler.triggers.trigger import (
    CLOUDWATCH_LOGS,
    EVENT_SOURCE_ARN,
    SES,
    SNS,
    SQS,
    Trigger,
    arn_resource,
    mapping,
    messaging_attributes,
    messaging_trigger,
    put_arn,
    same_in_batch,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Optional


def sqs(records: list, first: dict) -> Trigger:
    arn = same_in_batch(records, lambda record: record.get("eventSourceARN"))
    queue = arn_resource(arn)  # arn:aws:sqs:<region>:<account>:<queue name>
    attributes = messaging_attributes("aws_sqs", queue, len(records), first.get("messageId"))
    put_arn(attributes, EVENT_SOURCE_ARN, arn)
    return messaging_trigger(SQS, attributes, links=batch_links(records, sqs_message_context))


def sns(records: list, first: dict) -> Trigger:
    message = mapping(first.get("Sns"))
    arn = message.get("TopicArn")
    single = len(records) == 1
    # SNS carries no batch: one message per invocation.
    attributes = messaging_attributes("aws.sns", arn_resource(arn), None if single else len(records), message.get("MessageId"))
    put_arn(attributes, "aws.sns.topic.arn", arn)
    if single:
        state, baggage = sns_message_beside(first)
        return messaging_trigger(SNS, attributes, parent=parse_message_context(sns_message_context(first)), parent_state=state, parent_baggage=baggage)
    return messaging_trigger(SNS, attributes, links=batch_links(records, sns_message_context))


def ses(records: list, first: dict) -> Trigger:
    """SES email receiving: a receipt rule hands over one email's headers (not its body)."""
    mail = mapping(mapping(first.get("ses")).get("mail"))
    return messaging_trigger(SES, messaging_attributes("aws.ses", None, None, mail.get("messageId")))


# The part of a CloudWatch Logs subscription's payload that names the log group and stream: it
# is gzip'd JSON ({"messageType", "owner", "logGroup", "logStream", ..., "logEvents": [...]}),
# and the names come first. Only this much is decoded and inflated, whatever the batch's size.
_LOGS_BASE64_CHARS = 1024
_LOGS_INFLATED_BYTES = 2048


def cloudwatch_logs(event: dict) -> Optional[Trigger]:
    """A CloudWatch Logs subscription filter's delivery: ``{"awslogs": {"data": <base64 gzip>}}``."""
    data = mapping(event.get("awslogs")).get("data")
    if not isinstance(data, str):
        return None
    group = _log_group(data)
    attributes = messaging_attributes("aws.logs", group, None, None)
    return messaging_trigger(CLOUDWATCH_LOGS, attributes)


def _log_group(data: str) -> Optional[str]:
    try:
        # The standard ones, whatever the function's folder holds; zlib only when a
        # subscription to CloudWatch Logs needs it.
        from lambdawrap.shared.own_stdlib import binascii, standard

        zlib = standard("zlib")

        compressed = binascii.a2b_base64(data[: _LOGS_BASE64_CHARS - _LOGS_BASE64_CHARS % 4])
        # 32 + MAX_WBITS: a gzip or a zlib header, whichever the stream has.
        head = zlib.decompressobj(32 + zlib.MAX_WBITS).decompress(compressed, _LOGS_INFLATED_BYTES)
    except Exception:  # not base64, not gzip: no name, but still a log subscription
        return None
    colon = head.find(b":", head.find(b'"logGroup"') + 10) if b'"logGroup"' in head else -1
    start = head.find(b'"', colon + 1) if colon >= 0 else -1
    end = head.find(b'"', start + 1) if start >= 0 else -1
    if end <= start + 1:
        return None
    # Log group names are ASCII letters, digits and _-./#: nothing JSON would escape.
    return head[start + 1 : end].decode("ascii", "replace")
