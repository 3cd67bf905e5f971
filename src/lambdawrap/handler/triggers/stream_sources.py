"""Records from streams and brokers an event source mapping polls: Kinesis Data Streams, Data
Firehose (transformation), Kafka (Amazon MSK and self-managed) and Amazon MQ (ActiveMQ and
RabbitMQ), described as messaging "process" spans of a batch, with a link per record that
carries its producer's context.
"""

from __future__ import annotations

from itertools import islice

from lambdawrap.handler.message_context import (
    batch_links,
    firehose_record_context,
    kafka_record_context,
    kinesis_record_context,
    mq_message_context,
    rabbitmq_message_context,
)
from lambdawrap.handler.trace_context import MAX_SCANNED_MESSAGES
from lambdawrap.handler.triggers.trigger import (
    ACTIVEMQ,
    EVENT_SOURCE_ARN,
    FIREHOSE,
    KAFKA,
    KINESIS,
    MAX_PARSED_CHARS,
    RABBITMQ,
    Trigger,
    arn_name,
    first,
    mapping,
    messaging_attributes,
    messaging_trigger,
    put,
    put_arn,
    same_in_batch,
    text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Iterator, List, Optional, Tuple

# Kafka and RabbitMQ events group records by partition or queue: real events hold a handful of
# groups; a forged one is read this far.
MAX_GROUPS = 256


def kinesis(records: list, first_record: dict) -> Trigger:
    arn = first_record.get("eventSourceARN")
    # stream/<name>, or stream/<name>/consumer/<consumer>:<time> with enhanced fan-out
    attributes = messaging_attributes("aws.kinesis", arn_name(arn, "stream/"), len(records), None)
    # One invocation reads one shard; the record ids start with it ("shardId-000000000006:4959...").
    event_id = text(first_record.get("eventID"))
    if event_id and ":" in event_id[:MAX_PARSED_CHARS]:
        attributes["messaging.destination.partition.id"] = event_id[: event_id.index(":")]
    put_arn(attributes, EVENT_SOURCE_ARN, arn)
    return messaging_trigger(KINESIS, attributes, links=batch_links(records, kinesis_record_context))


def firehose(event: dict) -> Optional[Trigger]:
    """A Data Firehose transformation: ``{"deliveryStreamArn", "records": [{recordId, data}]}``."""
    records = event.get("records")
    arn = text(event.get("deliveryStreamArn"))
    if not isinstance(records, list) or arn is None:
        return None
    attributes = messaging_attributes("aws.firehose", arn_name(arn, "deliverystream/"), len(records), first(records).get("recordId"))
    put_arn(attributes, EVENT_SOURCE_ARN, arn)
    return messaging_trigger(FIREHOSE, attributes, links=batch_links(records, firehose_record_context))


def _groups(grouped: dict) -> List[Tuple[object, list]]:
    return [(key, items) for key, items in islice(grouped.items(), MAX_GROUPS) if isinstance(items, list)]


def _flattened(groups: List[Tuple[object, list]]) -> Iterator:
    for _, items in groups:
        yield from islice(items, MAX_SCANNED_MESSAGES)


def kafka(event: dict) -> Optional[Trigger]:
    """MSK (``eventSource`` ``aws:kafka``) and self-managed Kafka (``SelfManagedKafka``):
    ``{"records": {"<topic>-<partition>": [{topic, partition, offset, key, value, headers}]}}``."""
    grouped = event.get("records")
    if not isinstance(grouped, dict):
        return None
    groups = _groups(grouped)
    count = _batch_size(grouped)
    heads = [first(items) for _, items in groups]
    # Text only: a topic given as a list or an object (not hashable) names none.
    topics = {text(head.get("topic")) for head in heads}
    topic = topics.pop() if len(topics) == 1 else None
    attributes = messaging_attributes("kafka", topic, count, None)
    partition = kafka_partition(heads[0].get("partition")) if len(heads) == 1 else None
    if partition is not None:
        attributes["messaging.destination.partition.id"] = partition
    if count == 1 and groups:
        put_kafka_record(attributes, first(groups[0][1]))
    put_arn(attributes, EVENT_SOURCE_ARN, event.get("eventSourceArn"))
    return messaging_trigger(KAFKA, attributes, links=batch_links(_flattened(groups), kafka_record_context))


def _batch_size(grouped: dict) -> int:
    """Every record of a batch grouped by partition or queue, past the groups read (one pass,
    no record read)."""
    return sum(len(items) for items in grouped.values() if isinstance(items, list))


def put_kafka_record(attributes: dict, record: dict) -> None:
    """The attributes of a batch's one record: its offset, key, and whether it is a tombstone
    (Lambda gives a tombstone's `value` as null, or leaves it out)."""
    offset = record.get("offset")
    if isinstance(offset, int) and not isinstance(offset, bool):
        attributes["messaging.kafka.offset"] = offset
    put(attributes, "messaging.kafka.message.key", kafka_key(record.get("key")))
    if record and record.get("value") is None:
        attributes["messaging.kafka.message.tombstone"] = True


def kafka_partition(value: object) -> Optional[str]:
    """A partition number as the conventions write it (a string): an event source mapping's
    records give it as a number, the Pipes samples as a string. A boolean is no number, though
    Python counts it as an int."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= 10 and value.isdigit():
        return value
    return None


def kafka_key(key: object) -> Optional[str]:
    """A record key (base64 in the event) as text, when it is UTF-8 text; the conventions want no
    value for keys without a canonical string form."""
    if not isinstance(key, str) or not key or len(key) > MAX_PARSED_CHARS:
        return None
    from lambdawrap.shared.own_stdlib import binascii  # the standard one, whatever the function's folder holds

    try:
        return binascii.a2b_base64(key).decode("utf-8") or None
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def activemq(event: dict) -> Optional[Trigger]:
    """Amazon MQ for ActiveMQ: ``{"eventSource": "aws:mq", "messages": [...]}``."""
    messages = event.get("messages")
    if not isinstance(messages, list):
        return None
    head = first(messages)
    destination = same_in_batch(messages, lambda message: mapping(message.get("destination")).get("physicalName"))
    attributes = messaging_attributes("activemq", destination, len(messages), head.get("messageID"))
    if len(messages) == 1:
        put(attributes, "messaging.message.conversation_id", head.get("correlationID"))
    put_arn(attributes, EVENT_SOURCE_ARN, event.get("eventSourceArn"))
    return messaging_trigger(ACTIVEMQ, attributes, links=batch_links(messages, mq_message_context))


def rabbitmq(event: dict) -> Optional[Trigger]:
    """Amazon MQ for RabbitMQ: ``{"rmqMessagesByQueue": {"<queue>::<vhost>": [...]}}``."""
    grouped = event.get("rmqMessagesByQueue")
    if not isinstance(grouped, dict):
        return None
    groups = _groups(grouped)
    count = _batch_size(grouped)
    # The event names the queue only (no exchange, no routing key): the destination is the queue.
    queue = groups[0][0] if len(groups) == 1 else None
    destination = queue[:MAX_PARSED_CHARS].partition("::")[0] if isinstance(queue, str) else None
    properties = mapping(first(groups[0][1]).get("basicProperties")) if count == 1 and groups else {}
    attributes = messaging_attributes("rabbitmq", destination, count, properties.get("messageId"))
    put(attributes, "messaging.message.conversation_id", properties.get("correlationId"))
    put_arn(attributes, EVENT_SOURCE_ARN, event.get("eventSourceArn"))
    return messaging_trigger(RABBITMQ, attributes, links=batch_links(_flattened(groups), rabbitmq_message_context))

