"""Data sources (faas.trigger "datasource"): S3 event notifications (direct, or through
EventBridge), DynamoDB Streams, DocumentDB change streams, and S3 Object Lambda reads.

The FaaS conventions describe the change with faas.document.*; the database conventions add
db.system.name and db.collection.name where the source is a database. Batches of change
records carry their size as messaging.batch.message_count, like every other batch source.
"""

from __future__ import annotations

from lambdawrap.handler.triggers.http_request import request_headers
from lambdawrap.handler.triggers.trigger import (
    DOCUMENTDB,
    DYNAMODB,
    EVENT_SOURCE_ARN,
    MAX_PARSED_CHARS,
    S3,
    S3_OBJECT_LAMBDA,
    Trigger,
    arn_name,
    first,
    iso_time,
    mapping,
    put,
    put_arn,
    text,
)
from lambdawrap.shared.own_stdlib import standard

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Dict, Optional


# An object key is at most 1,024 bytes, each written as at most three characters (%XX) where
# it is URL-encoded: a real key is decoded whole, never cut inside an escape.
MAX_ENCODED_KEY_CHARS = 3 * 1024


def s3_key(key: object, plus_is_space: bool = True) -> Optional[str]:
    """An object key as S3 writes it into events (URL-encoded, with "+" for spaces), or as a
    URL path holds it (``plus_is_space=False``: a "+" there is a plus)."""
    name = text(key)
    if name and ("%" in name or (plus_is_space and "+" in name)):
        parse = standard("urllib.parse")  # only keys that need it pay for the import
        name = (parse.unquote_plus if plus_is_space else parse.unquote)(name[:MAX_ENCODED_KEY_CHARS])
    return name


def _document(operation: str, collection: object, name: object, time: object) -> Dict[str, object]:
    attributes: Dict[str, object] = {"faas.trigger": "datasource"}
    put(attributes, "faas.document.collection", collection)
    attributes["faas.document.operation"] = operation
    put(attributes, "faas.document.time", time)
    put(attributes, "faas.document.name", name)
    return attributes


# Event types that delete an object (or put a delete marker on it): a request's, or S3
# Lifecycle's expiration (EventBridge reports both as "Object Deleted").
_S3_DELETIONS = ("ObjectRemoved:", "LifecycleExpiration:")


def s3(first_record: dict) -> Trigger:
    """An S3 event notification delivered to the function (``Records[].s3``)."""
    s3_event = mapping(first_record.get("s3"))
    event_name = first_record.get("eventName")
    if isinstance(event_name, str) and event_name.startswith("s3:"):
        event_name = event_name[3:]  # the SDKs' samples of newer types keep the configuration's prefix
    if isinstance(event_name, str) and event_name.startswith("ObjectCreated:"):
        operation = "insert"
    elif isinstance(event_name, str) and event_name.startswith(_S3_DELETIONS):
        operation = "delete"
    else:
        operation = "edit"  # restores, replication, tagging, ACL and lifecycle transitions
    key = s3_key(mapping(s3_event.get("object")).get("key"))
    return Trigger(S3, _document(operation, mapping(s3_event.get("bucket")).get("name"), key, first_record.get("eventTime")))


# EventBridge detail types of S3 notifications; the others ("Object Restore Completed",
# "Object Tags Added", "Object ACL Updated"...) change an object that stays.
_S3_DETAIL_OPERATIONS = {"Object Created": "insert", "Object Deleted": "delete"}


def s3_from_eventbridge(event: dict, detail_type: str) -> Trigger:
    """An S3 notification delivered through EventBridge (source ``aws.s3``, ``Object ...``)."""
    detail = mapping(event.get("detail"))
    operation = _S3_DETAIL_OPERATIONS.get(detail_type, "edit")
    key = s3_key(mapping(detail.get("object")).get("key"))
    return Trigger(S3, _document(operation, mapping(detail.get("bucket")).get("name"), key, event.get("time")))


_DYNAMODB_OPERATIONS = {"INSERT": "insert", "MODIFY": "edit", "REMOVE": "delete"}


def dynamodb(records: list, first_record: dict) -> Trigger:
    # arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>
    arn = first_record.get("eventSourceARN")
    table = arn_name(arn, "table/")
    event_name = first_record.get("eventName")
    operation = _DYNAMODB_OPERATIONS.get(event_name, "edit") if isinstance(event_name, str) else "edit"
    created = mapping(first_record.get("dynamodb")).get("ApproximateCreationDateTime")
    attributes = _document(operation, table, None, iso_time(created))
    attributes["db.system.name"] = "aws.dynamodb"
    if table:
        attributes["db.collection.name"] = table
        attributes["aws.dynamodb.table_names"] = [table]
    attributes["messaging.batch.message_count"] = len(records)
    put_arn(attributes, EVENT_SOURCE_ARN, arn)
    return Trigger(DYNAMODB, attributes)


# MongoDB change stream operation types; the others (drop, rename, dropDatabase, invalidate)
# are reported as they are: the conventions allow values of one's own where none applies.
_CHANGE_OPERATIONS = {"insert": "insert", "update": "edit", "replace": "edit", "delete": "delete"}


def documentdb(event: dict) -> Optional[Trigger]:
    """A DocumentDB change stream batch: ``{"eventSource": "aws:docdb", "events": [{"event": ...}]}``."""
    events = event.get("events")
    if not isinstance(events, list):
        return None
    change = mapping(first(events).get("event"))
    namespace = mapping(change.get("ns"))
    operation = text(change.get("operationType"))
    cluster_time = mapping(mapping(change.get("clusterTime")).get("$timestamp")).get("t")
    # faas.document.collection names the database (as for Cosmos DB), faas.document.name the
    # collection in it; the database conventions call them db.namespace and db.collection.name.
    attributes = _document(_CHANGE_OPERATIONS.get(operation, operation) if operation else "edit", namespace.get("db"), namespace.get("coll"), iso_time(cluster_time))
    # DocumentDB speaks the MongoDB protocol and is identified as MongoDB by its clients.
    attributes["db.system.name"] = "mongodb"
    put(attributes, "db.namespace", namespace.get("db"))
    put(attributes, "db.collection.name", namespace.get("coll"))
    attributes["messaging.batch.message_count"] = len(events)
    put_arn(attributes, EVENT_SOURCE_ARN, event.get("eventSourceArn"))
    return Trigger(DOCUMENTDB, attributes)


_OBJECT_LAMBDA_CONTEXTS = ("getObjectContext", "headObjectContext", "listObjectsContext", "listObjectsV2Context")


def s3_object_lambda(event: dict) -> Optional[Trigger]:
    """An S3 Object Lambda access point handing over a GET, HEAD or LIST request to serve.

    A read of stored data: faas.document.operation "read", a value of our own (the conventions
    name only insert, edit and delete). The user's request headers carry the caller's context.
    """
    if not any(name in event for name in _OBJECT_LAMBDA_CONTEXTS):
        return None
    configuration = mapping(event.get("configuration"))
    request = mapping(event.get("userRequest"))
    access_point = arn_name(configuration.get("supportingAccessPointArn"), "accesspoint/")
    key = None
    if "getObjectContext" in event or "headObjectContext" in event:
        # https://<access point>-<account>.s3-accesspoint.<region>.amazonaws.com/<key>?<query>
        url = text(request.get("url"))
        if url:
            path = url[: MAX_PARSED_CHARS + MAX_ENCODED_KEY_CHARS].partition("://")[2].partition("/")[2]
            key = s3_key(path.partition("?")[0], plus_is_space=False)
    return Trigger(S3_OBJECT_LAMBDA, _document("read", access_point, key, None), headers=request_headers(request.get("headers")))
