"""Per-service attributes of AWS SDK client spans, after the semantic conventions (aws.*, messaging.*,
faas.invoked_*, gen_ai.*): names of resources (tables, buckets, queues, topics, functions, state
machines, secrets, parameters, models, guardrails) and, for DynamoDB, the shape of the call (its
limits, indexes, capacities, counts), for a Bedrock Runtime `Converse` its inference parameters,
token counts and stop reason; never a value the call sends or receives: no item's, message's or
secret's, no prompt, system prompt, tool input or completion."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any

_SQS_OPERATION_TYPES = {"SendMessage": "send", "SendMessageBatch": "send", "ReceiveMessage": "receive"}
# The conventions' send spans (SQS, SNS): PRODUCER, the context the messages carry.
_SENDS = {("sqs", "SendMessage"), ("sqs", "SendMessageBatch"), ("sns", "Publish"), ("sns", "PublishBatch")}


def sends_messages(service: str, operation: str) -> bool:
    """Whether the call is a messaging send span, PRODUCER in the conventions (the rest are CLIENT)."""
    return (service, operation) in _SENDS


def span_name(service: str, operation: str, attributes: dict) -> "str | None":
    """The span's name where a service's conventions give one (a Bedrock `Converse`: `chat
    {gen_ai.request.model}`, the GenAI inference span's), else None (`{rpc.service}.{operation}`)."""
    if service == "bedrock-runtime" and operation == "Converse":
        model = attributes.get("gen_ai.request.model")
        if model:
            return f"{attributes.get('gen_ai.operation.name') or 'chat'} {model}"
    return None


def request_attributes(service: str, operation: str, params: dict, region: str, attributes: dict) -> None:
    """Attributes read from the call's parameters (botocore's service name, e.g. `dynamodb`)."""
    reader = _REQUEST_READERS.get(service)
    if reader is not None:
        reader(operation, params, region, attributes)


def response_attributes(service: str, operation: str, parsed: dict, attributes: dict) -> None:
    """Attributes read from the parsed answer."""
    reader = _RESPONSE_READERS.get(service)
    if reader is not None:
        reader(operation, parsed, attributes)


def _text(value: "Any") -> str:
    return value if isinstance(value, str) else ""


def _dynamodb(operation: str, params: dict, region: str, attributes: dict) -> None:
    attributes["db.system.name"] = "aws.dynamodb"  # the conventions: MUST, at the span's start
    table = _text(params.get("TableName"))
    if table:
        attributes["aws.dynamodb.table_names"] = [table]
    elif isinstance(params.get("RequestItems"), dict):  # BatchGetItem, BatchWriteItem
        attributes["aws.dynamodb.table_names"] = [name for name in params["RequestItems"] if isinstance(name, str)]
    _read_fields(params, _DYNAMODB_REQUESTS.get(operation, ()), attributes)


def _read_fields(source: dict, fields: tuple, attributes: dict) -> None:
    """Each (field, attribute, reader) whose field `source` holds and whose reader makes a value of it."""
    for field, attribute, reader in fields:
        value = source.get(field)
        if value is not None:
            value = reader(value)
            if value is not None:
                attributes[attribute] = value


# DynamoDB's readers: a value of the type the conventions give, or None (the attribute left out).
def _flag(value: "Any") -> "Any":
    return value if type(value) is bool else None


def _whole(value: "Any") -> "Any":
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _name(value: "Any") -> "Any":
    return value if isinstance(value, str) else None


def _some_text(value: "Any") -> "Any":
    return value if isinstance(value, str) and value else None


def _names(value: "Any") -> "Any":
    if isinstance(value, (list, tuple)) and all(isinstance(name, str) for name in value):
        return list(value)
    return None


def _units(key: str) -> "Any":
    def read(throughput: "Any") -> "Any":  # a double in the conventions; botocore's model has a long
        units = throughput.get(key) if isinstance(throughput, dict) else None
        if isinstance(units, (int, float)) and not isinstance(units, bool) and -1e300 < units < 1e300:
            return float(units)
        return None

    return read


def _each_as_json(value: "Any") -> "Any":
    """string[]: one JSON text per member of a list (a single object: a list of one)."""
    members = [value] if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else None
    if members is None:
        return None
    texts = [_json(member) for member in members]
    return None if None in texts else texts


def _size(value: "Any") -> "Any":
    return len(value) if isinstance(value, (list, tuple)) else None


def _collection_metrics(value: "Any") -> "Any":
    """The answer's ItemCollectionMetrics as JSON, each ItemCollectionKey left out: it holds the
    items' partition key value. One write's is an object, a batch's a list of them per table."""
    if not isinstance(value, dict):
        return None
    if "ItemCollectionKey" in value or "SizeEstimateRangeGB" in value:
        return _json(_without_key(value))
    return _json({table: [_without_key(m) for m in metrics] if isinstance(metrics, (list, tuple)) else metrics for table, metrics in value.items()})


def _without_key(metrics: "Any") -> "Any":
    return {k: v for k, v in metrics.items() if k != "ItemCollectionKey"} if isinstance(metrics, dict) else metrics


_CONSISTENT_READ = ("ConsistentRead", "aws.dynamodb.consistent_read", _flag)
_PROJECTION = ("ProjectionExpression", "aws.dynamodb.projection", _name)
_LIMIT = ("Limit", "aws.dynamodb.limit", _whole)
_THROUGHPUT = (
    ("ProvisionedThroughput", "aws.dynamodb.provisioned_read_capacity", _units("ReadCapacityUnits")),
    ("ProvisionedThroughput", "aws.dynamodb.provisioned_write_capacity", _units("WriteCapacityUnits")),
)
_READS = (
    ("AttributesToGet", "aws.dynamodb.attributes_to_get", _names),
    _CONSISTENT_READ,
    ("IndexName", "aws.dynamodb.index_name", _name),
    _LIMIT,
    _PROJECTION,
    ("Select", "aws.dynamodb.select", _name),
)
# The request parameters the conventions name, per operation (of the rest, e.g. a Query's key
# condition and its values, nothing).
_DYNAMODB_REQUESTS = {
    "CreateTable": (
        ("GlobalSecondaryIndexes", "aws.dynamodb.global_secondary_indexes", _each_as_json),
        ("LocalSecondaryIndexes", "aws.dynamodb.local_secondary_indexes", _each_as_json),
        *_THROUGHPUT,
    ),
    "GetItem": (_CONSISTENT_READ, _PROJECTION),
    "ListTables": (("ExclusiveStartTableName", "aws.dynamodb.exclusive_start_table", _name), _LIMIT),
    "Query": (("ScanIndexForward", "aws.dynamodb.scan_forward", _flag), *_READS),
    "Scan": (("Segment", "aws.dynamodb.segment", _whole), ("TotalSegments", "aws.dynamodb.total_segments", _whole), *_READS),
    "UpdateTable": (
        ("AttributeDefinitions", "aws.dynamodb.attribute_definitions", _each_as_json),
        ("GlobalSecondaryIndexUpdates", "aws.dynamodb.global_secondary_index_updates", _each_as_json),
        *_THROUGHPUT,
    ),
}
_CONSUMED = ("ConsumedCapacity", "aws.dynamodb.consumed_capacity", _each_as_json)
_WRITE_ANSWER = (_CONSUMED, ("ItemCollectionMetrics", "aws.dynamodb.item_collection_metrics", _collection_metrics))
# The answer's fields, likewise (a Query's or Scan's items, a GetItem's item: never).
_DYNAMODB_ANSWERS = {
    "BatchGetItem": (_CONSUMED,),
    "BatchWriteItem": _WRITE_ANSWER,
    "DeleteItem": _WRITE_ANSWER,
    "GetItem": (_CONSUMED,),
    "ListTables": (("TableNames", "aws.dynamodb.table_count", _size),),
    "PutItem": _WRITE_ANSWER,
    "Query": (_CONSUMED,),
    "Scan": (("Count", "aws.dynamodb.count", _whole), ("ScannedCount", "aws.dynamodb.scanned_count", _whole), _CONSUMED),
    "UpdateItem": _WRITE_ANSWER,
}

def _json(value: "Any") -> "Any":
    """`value` as JSON (as the contrib instrumentation writes it), None where json cannot write it."""
    import json  # deferred: botocore, whose call this reads, has it loaded already

    try:
        return json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # a Decimal or bytes, a cycle, deep nesting
        return None


# S3's: what the conventions recommend of the call's parameters. `aws.s3.delete` is left out: a
# DeleteObjects container lists up to 1,000 keys, an attribute far over any collector's limits.
_S3_REQUESTS = (
    ("Bucket", "aws.s3.bucket", _some_text),
    ("Key", "aws.s3.key", _some_text),
    ("CopySource", "aws.s3.copy_source", _some_text),  # botocore's own handler has made `bucket/key` text of a dict
    ("UploadId", "aws.s3.upload_id", _some_text),
    ("PartNumber", "aws.s3.part_number", _whole),
)


def _s3(operation: str, params: dict, region: str, attributes: dict) -> None:
    _read_fields(params, _S3_REQUESTS, attributes)


def _sqs(operation: str, params: dict, region: str, attributes: dict) -> None:
    queue_url = _text(params.get("QueueUrl"))
    attributes["messaging.system"] = "aws_sqs"
    attributes["messaging.operation.name"] = operation  # Required: the system's own name of it
    if queue_url:
        attributes["aws.sqs.queue.url"] = queue_url
        attributes["messaging.destination.name"] = queue_url.rstrip("/").rpartition("/")[2]
    operation_type = _SQS_OPERATION_TYPES.get(operation)
    if operation_type:
        attributes["messaging.operation.type"] = operation_type
    if operation == "SendMessageBatch" and isinstance(params.get("Entries"), (list, tuple)):  # botocore takes both
        attributes["messaging.batch.message_count"] = len(params["Entries"])


def _sns(operation: str, params: dict, region: str, attributes: dict) -> None:
    attributes["messaging.system"] = "aws.sns"
    attributes["messaging.operation.name"] = operation
    topic = _text(params.get("TopicArn"))
    if topic:
        attributes["aws.sns.topic.arn"] = topic
    if operation in ("Publish", "PublishBatch"):
        # A phone number is personal data: never recorded.
        destination = topic or _text(params.get("TargetArn"))
        if destination:
            attributes["messaging.destination.name"] = destination
        attributes["messaging.operation.type"] = "send"
    if operation == "PublishBatch" and isinstance(params.get("PublishBatchRequestEntries"), (list, tuple)):
        attributes["messaging.batch.message_count"] = len(params["PublishBatchRequestEntries"])


def _lambda(operation: str, params: dict, region: str, attributes: dict) -> None:
    name = _text(params.get("FunctionName"))
    if operation != "Invoke" or not name:
        return
    attributes["faas.invoked_provider"] = "aws"
    attributes["faas.invoked_region"] = region
    if name.startswith("arn:"):
        attributes["aws.lambda.invoked_arn"] = name
    # A name, a partial ARN (123456789012:function:name) or a full one; a version or alias after it.
    parts = name.split(":")
    if "function" in parts and parts.index("function") + 1 < len(parts):
        name = parts[parts.index("function") + 1]
    elif len(parts) == 2:  # name:alias
        name = parts[0]
    attributes["faas.invoked_name"] = name


def _step_functions(operation: str, params: dict, region: str, attributes: dict) -> None:
    for key, attribute in (("stateMachineArn", "aws.step_functions.state_machine.arn"), ("activityArn", "aws.step_functions.activity.arn")):
        arn = _text(params.get(key))
        if arn:
            attributes[attribute] = arn


def _secrets_manager(operation: str, params: dict, region: str, attributes: dict) -> None:
    secret = _text(params.get("SecretId"))
    if secret.startswith("arn:"):
        attributes["aws.secretsmanager.secret.arn"] = secret


def _ssm(operation: str, params: dict, region: str, attributes: dict) -> None:
    # No convention names an SSM parameter yet; the name only, never its value.
    name = _text(params.get("Name"))
    if name:
        attributes["aws.ssm.parameter.name"] = name
    elif isinstance(params.get("Names"), list):
        attributes["aws.ssm.parameter.name"] = [n for n in params["Names"] if isinstance(n, str)]


def _kinesis(operation: str, params: dict, region: str, attributes: dict) -> None:
    name = _text(params.get("StreamName")) or _text(params.get("StreamARN")).rpartition("/")[2]
    if name:
        attributes["aws.kinesis.stream_name"] = name


# Bedrock Runtime: the GenAI conventions' inference span, for a `Converse` (not streamed) only.
# Never a prompt, a system prompt, a tool's input or definition, or the completion: their
# conventions' attributes are opt-in, and lambdawrap records no content.
def _real(value: "Any") -> "Any":
    """A double of the conventions (botocore takes an int for a float parameter)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and -1e300 < value < 1e300:
        return float(value)
    return None


def _count(value: "Any") -> "Any":
    """A token count, as OpenTelemetry's instrumentation records one: a positive int (0 left out)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


_INFERENCE = (
    ("maxTokens", "gen_ai.request.max_tokens", _whole),
    ("temperature", "gen_ai.request.temperature", _real),
    ("topP", "gen_ai.request.top_p", _real),
    ("stopSequences", "gen_ai.request.stop_sequences", _names),
)
_USAGE = (
    ("inputTokens", "gen_ai.usage.input_tokens", _count),
    ("outputTokens", "gen_ai.usage.output_tokens", _count),
    ("cacheReadInputTokens", "gen_ai.usage.cache_read.input_tokens", _count),
    ("cacheWriteInputTokens", "gen_ai.usage.cache_creation.input_tokens", _count),
)


def _bedrock_runtime(operation: str, params: dict, region: str, attributes: dict) -> None:
    if operation != "Converse":
        return
    attributes["gen_ai.provider.name"] = "aws.bedrock"
    model = _text(params.get("modelId"))
    if not model:
        return
    attributes["gen_ai.operation.name"] = "chat"
    attributes["gen_ai.request.model"] = model
    config = params.get("inferenceConfig")
    if isinstance(config, dict):
        _read_fields(config, _INFERENCE, attributes)
    guardrail = params.get("guardrailConfig")
    if isinstance(guardrail, dict):
        _read_fields(guardrail, (("guardrailIdentifier", "aws.bedrock.guardrail.id", _name),), attributes)


_REQUEST_READERS = {
    "dynamodb": _dynamodb,
    "s3": _s3,
    "sqs": _sqs,
    "sns": _sns,
    "lambda": _lambda,
    "stepfunctions": _step_functions,
    "secretsmanager": _secrets_manager,
    "ssm": _ssm,
    "kinesis": _kinesis,
    "bedrock-runtime": _bedrock_runtime,
}


def _sqs_answer(operation: str, parsed: dict, attributes: dict) -> None:
    # The conventions name a message's id where the span is about one message only.
    message_id: "Any" = None
    if operation == "SendMessage":
        message_id = parsed.get("MessageId")
    elif operation == "SendMessageBatch":
        message_id = _only_id(parsed.get("Successful"))
    elif operation == "ReceiveMessage":
        # A batch operation, whatever it returned: the conventions' count, 0 included.
        messages = parsed.get("Messages")
        attributes["messaging.batch.message_count"] = len(messages) if isinstance(messages, list) else 0
        message_id = _only_id(messages)
    if isinstance(message_id, str):
        attributes["messaging.message.id"] = message_id


def _only_id(messages: "Any") -> "Any":
    if isinstance(messages, list) and len(messages) == 1 and isinstance(messages[0], dict):
        return messages[0].get("MessageId")
    return None


def _dynamodb_answer(operation: str, parsed: dict, attributes: dict) -> None:
    _read_fields(parsed, _DYNAMODB_ANSWERS.get(operation, ()), attributes)


def _secrets_manager_answer(operation: str, parsed: dict, attributes: dict) -> None:
    arn = _text(parsed.get("ARN"))
    if arn:
        attributes["aws.secretsmanager.secret.arn"] = arn


def _sns_answer(operation: str, parsed: dict, attributes: dict) -> None:
    topic = _text(parsed.get("TopicArn"))
    if topic:
        attributes["aws.sns.topic.arn"] = topic
    message_id = parsed.get("MessageId") if operation == "Publish" else _only_id(parsed.get("Successful")) if operation == "PublishBatch" else None
    if isinstance(message_id, str):
        attributes["messaging.message.id"] = message_id


def _step_functions_answer(operation: str, parsed: dict, attributes: dict) -> None:
    _step_functions(operation, parsed, "", attributes)


def _bedrock_runtime_answer(operation: str, parsed: dict, attributes: dict) -> None:
    if operation != "Converse":
        return
    usage = parsed.get("usage")
    if isinstance(usage, dict):
        _read_fields(usage, _USAGE, attributes)
    reason = parsed.get("stopReason")
    if reason and isinstance(reason, str):
        attributes["gen_ai.response.finish_reasons"] = [reason]


_RESPONSE_READERS = {
    "dynamodb": _dynamodb_answer,
    "sqs": _sqs_answer,
    "secretsmanager": _secrets_manager_answer,
    "sns": _sns_answer,
    "stepfunctions": _step_functions_answer,
    "bedrock-runtime": _bedrock_runtime_answer,
}
