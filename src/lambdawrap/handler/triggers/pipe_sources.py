"""Batches an EventBridge Pipe hands a Lambda target from the sources whose records it flattens:
Amazon MSK, self-managed Kafka and Amazon MQ (ActiveMQ and RabbitMQ).

A Pipe invokes a Lambda target with a JSON array of records, even for a batch of one. For SQS,
Kinesis and DynamoDB the records are those of an event source mapping (read by the ``Records``
recognisers; Kinesis's are flat, their ``data`` at the top). For Kafka and Amazon MQ an event
source mapping groups records under ``records``/``rmqMessagesByQueue``/``messages``; a Pipe
hands over each record on its own, with the event's ``eventSource``, ``eventSourceArn`` and the
group's ``eventSourceKey`` copied into it. The shapes are the EventBridge Pipes user guide's
samples for each source (eb-pipes-msk, eb-pipes-kafka, eb-pipes-mq):

- MSK: ``{"eventSource": "aws:kafka", "eventSourceArn", "eventSourceKey": "<topic>-<partition>",
  "topic", "partition": "0", "offset", "timestamp", "key", "value", "headers": [...]}``
  (``partition`` is a string there, a number in an event source mapping's records);
- self-managed Kafka: the same with ``"eventSource": "SelfManagedKafka"`` and
  ``bootstrapServers`` instead of an ARN;
- ActiveMQ: ``{"eventSource": "aws:amq", "eventSourceArn", "messageID", "destination":
  {"physicalname": ...}, ...}`` (``physicalname`` in the Pipes sample, ``physicalName`` in an
  event source mapping's);
- RabbitMQ: ``{"eventSource": "aws:rmq", "eventSourceArn", "eventSourceKey": "<queue>::<vhost>",
  "basicProperties": {...}, "data"}``.

An enrichment or an input transformer may reshape the records into anything: what no longer
says its ``eventSource`` is not recognised here. The attributes are the ones the event source
mapping's batches get (stream_sources), and the trace context is read from the same places.
"""

from __future__ import annotations

from lambdawrap.handler.message_context import batch_links, kafka_record_context, mq_message_context, rabbitmq_message_context
from lambdawrap.handler.triggers.stream_sources import kafka_partition, put_kafka_record
from lambdawrap.handler.triggers.trigger import (
    ACTIVEMQ,
    EVENT_SOURCE_ARN,
    KAFKA,
    MAX_PARSED_CHARS,
    RABBITMQ,
    Trigger,
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
    from typing import Optional

KAFKA_SOURCES = frozenset(("aws:kafka", "SelfManagedKafka"))
ACTIVEMQ_SOURCES = frozenset(("aws:amq", "aws:mq"))
RABBITMQ_SOURCE = "aws:rmq"


def pipe_records(records: list, head: dict) -> Optional[Trigger]:
    """The batch of a Pipe from Kafka or Amazon MQ, told apart by its first record's source."""
    source = text(head.get("eventSource"))  # a list or an object there would not be hashable
    if source in KAFKA_SOURCES:
        return _kafka(records, head)
    if source in ACTIVEMQ_SOURCES:
        return _activemq(records, head)
    if source == RABBITMQ_SOURCE:
        return _rabbitmq(records, head)
    return None


def _kafka(records: list, head: dict) -> Trigger:
    attributes = messaging_attributes("kafka", same_in_batch(records, lambda record: record.get("topic")), len(records), None)
    last = records[-1]
    partition = kafka_partition(head.get("partition"))
    if partition is not None and isinstance(last, dict) and kafka_partition(last.get("partition")) == partition:
        attributes["messaging.destination.partition.id"] = partition
    if len(records) == 1:
        put_kafka_record(attributes, head)
    put_arn(attributes, EVENT_SOURCE_ARN, same_in_batch(records, lambda record: record.get("eventSourceArn")))
    return messaging_trigger(KAFKA, attributes, links=batch_links(records, kafka_record_context))


def _physical_name(message: dict) -> object:
    destination = mapping(message.get("destination"))
    name = destination.get("physicalName")
    return destination.get("physicalname") if name is None else name


def _activemq(records: list, head: dict) -> Trigger:
    attributes = messaging_attributes("activemq", same_in_batch(records, _physical_name), len(records), head.get("messageID"))
    if len(records) == 1:
        put(attributes, "messaging.message.conversation_id", head.get("correlationID"))
    put_arn(attributes, EVENT_SOURCE_ARN, same_in_batch(records, lambda record: record.get("eventSourceArn")))
    # The Pipes sample shows no "properties"; where a record has them (as an event source
    # mapping's messages do), they are read as there.
    return messaging_trigger(ACTIVEMQ, attributes, links=batch_links(records, mq_message_context))


def _rabbitmq(records: list, head: dict) -> Trigger:
    # "<queue>::<virtual host>": the event names the queue only, which is the destination.
    key = same_in_batch(records, lambda record: record.get("eventSourceKey"))
    queue = text(key[:MAX_PARSED_CHARS].partition("::")[0]) if key is not None else None
    properties = mapping(head.get("basicProperties")) if len(records) == 1 else {}
    attributes = messaging_attributes("rabbitmq", queue, len(records), properties.get("messageId"))
    put(attributes, "messaging.message.conversation_id", properties.get("correlationId"))
    put_arn(attributes, EVENT_SOURCE_ARN, same_in_batch(records, lambda record: record.get("eventSourceArn")))
    return messaging_trigger(RABBITMQ, attributes, links=batch_links(records, rabbitmq_message_context))
