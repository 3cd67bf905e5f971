"""Makes the same outgoing calls under lambdawrap, under OpenTelemetry's instrumentation of the
library, or bare, and prints the spans as JSON (one process per run: both patch the libraries).

    python outgoing_calls.py MODE LIBRARY HTTP_URL REFUSED_PORT [MOTO_URL [BEDROCK_URL]]

MODE is lambdawrap | contrib | bare. The calls run inside a parent span (the invocation span
under lambdawrap, a root span under the contrib instrumentation), one span per call expected.
BEDROCK_URL is a fake Bedrock Runtime's (support/fake_bedrock.py: moto has no `Converse`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import types

CONTRIB = {
    "requests": ("opentelemetry.instrumentation.requests", "RequestsInstrumentor"),
    "urllib3": ("opentelemetry.instrumentation.urllib3", "URLLib3Instrumentor"),
    "httpx": ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    "httpx-async": ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    "aiohttp": ("opentelemetry.instrumentation.aiohttp_client", "AioHttpClientInstrumentor"),
    "botocore": ("opentelemetry.instrumentation.botocore", "BotocoreInstrumentor"),
    "urllib": ("opentelemetry.instrumentation.urllib", "URLLibInstrumentor"),
}
HTTP_PATHS = ["/status/200", "/status/404?sig=secret&page=2", "/status/503", "/redirect"]


def http_calls(library: str, base: str, refused: int) -> list:
    """(label, thunk) for each call; a thunk that raises is a failed call (its span is checked)."""
    urls = [base + path for path in HTTP_PATHS] + [base.replace("://", "://user:pw@") + "/status/201", f"http://127.0.0.1:{refused}/refused"]
    if library == "requests":
        import requests

        session = requests.Session()
        return [(url, lambda url=url: session.get(url, timeout=10).status_code) for url in urls] + [("post", lambda: session.post(base + "/status/202", json={"a": 1}, timeout=10).status_code)]
    if library == "urllib3":
        import urllib3

        pool = urllib3.PoolManager(retries=urllib3.Retry(total=2, backoff_factor=0))
        return [(url, lambda url=url: pool.request("GET", url, timeout=10).status) for url in urls] + [("post", lambda: pool.request("POST", base + "/status/202", body=b"{}", timeout=10).status)]
    if library == "httpx":
        import httpx

        client = httpx.Client(timeout=10)
        return [(url, lambda url=url: client.get(url).status_code) for url in urls] + [("post", lambda: client.post(base + "/status/202", json={"a": 1}).status_code)]
    if library in ("httpx-async", "aiohttp"):
        return [(url, lambda url=url: asyncio.run(_async_get(library, url))) for url in urls]
    if library == "urllib":
        import urllib.request

        def get(url: str) -> int:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status

        return [(url, lambda url=url: get(url)) for url in urls if "user:pw" not in url]
    raise SystemExit(f"unknown library {library}")


async def _async_get(library: str, url: str) -> int:
    if library == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                return response.status
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url)).status_code


def aws_calls(endpoint: str, refused: int, bedrock: str = "") -> list:
    import boto3
    from botocore.config import Config

    def client(service: str, url: str = endpoint, **config: object):
        return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test", config=Config(**config) if config else None)

    ddb, s3, sqs, sns, sm = client("dynamodb"), client("s3"), client("sqs"), client("sns"), client("secretsmanager")
    queue = {}
    topic = {}
    upload = {}

    def make_queue():
        queue["url"] = sqs.create_queue(QueueName="orders")["QueueUrl"]

    def start_upload():
        upload["id"] = s3.create_multipart_upload(Bucket="files", Key="big.bin")["UploadId"]

    def make_topic():
        topic["arn"] = sns.create_topic(Name="events")["TopicArn"]

    return [
        ("dynamodb create", lambda: ddb.create_table(TableName="items", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")),
        ("dynamodb put", lambda: ddb.put_item(TableName="items", Item={"id": {"S": "1"}})),
        ("dynamodb missing table", lambda: ddb.get_item(TableName="nope", Key={"id": {"S": "1"}})),
        *dynamodb_calls(ddb),
        ("s3 bucket", lambda: s3.create_bucket(Bucket="files")),
        ("s3 put", lambda: s3.put_object(Bucket="files", Key="a.txt", Body=b"hello")),
        ("s3 missing key", lambda: s3.get_object(Bucket="files", Key="missing.txt")),
        ("s3 copy", lambda: s3.copy_object(Bucket="files", Key="b.txt", CopySource={"Bucket": "files", "Key": "a.txt"})),
        ("s3 multipart", start_upload),
        ("s3 part", lambda: s3.upload_part(Bucket="files", Key="big.bin", UploadId=upload["id"], PartNumber=2, Body=b"x")),
        ("sqs queue", make_queue),
        ("sqs send", lambda: sqs.send_message(QueueUrl=queue["url"], MessageBody="hi")),
        ("sqs batch", lambda: sqs.send_message_batch(QueueUrl=queue["url"], Entries=[{"Id": "1", "MessageBody": "a"}, {"Id": "2", "MessageBody": "b"}])),
        ("sqs receive", lambda: sqs.receive_message(QueueUrl=queue["url"], MaxNumberOfMessages=10, MessageAttributeNames=["All"])),
        ("sns topic", make_topic),
        ("sns publish", lambda: sns.publish(TopicArn=topic["arn"], Message="hi")),
        ("secret create", lambda: sm.create_secret(Name="db", SecretString="s3cr3t")),
        ("secret get", lambda: sm.get_secret_value(SecretId="db")),
        ("refused", lambda: client("dynamodb", f"http://127.0.0.1:{refused}", retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2).list_tables()),
        *(bedrock_calls(client("bedrock-runtime", bedrock)) if bedrock else []),
    ]


def bedrock_calls(runtime) -> list:
    """Converse (not streamed) with every inference parameter the conventions name, a system
    prompt and a guardrail; and one the service refuses (an unknown model)."""
    messages = [{"role": "user", "content": [{"text": "Say hello."}]}]
    return [
        ("bedrock converse", lambda: runtime.converse(
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            messages=messages,
            system=[{"text": "You are terse."}],
            inferenceConfig={"maxTokens": 256, "temperature": 0.5, "topP": 0.9, "stopSequences": ["###", "END"]},
            guardrailConfig={"guardrailIdentifier": "gr-abc123", "guardrailVersion": "1"},
        )["stopReason"]),
        ("bedrock converse missing model", lambda: runtime.converse(modelId="missing-model", messages=messages)),
    ]


def dynamodb_calls(ddb) -> list:
    """The calls whose parameters and answers DynamoDB's conventions describe (indexes, limits,
    capacities, counts): a table with provisioned throughput and both kinds of secondary index."""
    key = [{"AttributeName": "customer", "KeyType": "HASH"}, {"AttributeName": "day", "KeyType": "RANGE"}]
    throughput = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 3}
    orders = {
        "TableName": "orders",
        "KeySchema": key,
        "AttributeDefinitions": [{"AttributeName": "customer", "AttributeType": "S"}, {"AttributeName": "day", "AttributeType": "S"}, {"AttributeName": "total", "AttributeType": "N"}, {"AttributeName": "shop", "AttributeType": "S"}],
        "ProvisionedThroughput": throughput,
        "GlobalSecondaryIndexes": [{"IndexName": "by-shop", "KeySchema": [{"AttributeName": "shop", "KeyType": "HASH"}], "Projection": {"ProjectionType": "KEYS_ONLY"}, "ProvisionedThroughput": {"ReadCapacityUnits": 2, "WriteCapacityUnits": 1}}],
        "LocalSecondaryIndexes": [{"IndexName": "by-total", "KeySchema": [key[0], {"AttributeName": "total", "KeyType": "RANGE"}], "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["note"]}}],
    }
    order = {"customer": {"S": "c1"}, "day": {"S": "2024-05-01"}, "total": {"N": "12.5"}, "shop": {"S": "north"}, "note": {"S": "gift wrap"}}
    return [
        ("dynamodb create with indexes", lambda: ddb.create_table(**orders)),
        ("dynamodb update table", lambda: ddb.update_table(
            TableName="orders",
            AttributeDefinitions=[{"AttributeName": "region", "AttributeType": "S"}],
            ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 4},
            GlobalSecondaryIndexUpdates=[{"Create": {"IndexName": "by-region", "KeySchema": [{"AttributeName": "region", "KeyType": "HASH"}], "Projection": {"ProjectionType": "ALL"}, "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}}}],
        )),
        ("dynamodb put with capacity", lambda: ddb.put_item(TableName="orders", Item=order, ReturnConsumedCapacity="TOTAL", ReturnItemCollectionMetrics="SIZE")),
        ("dynamodb batch write", lambda: ddb.batch_write_item(
            RequestItems={"orders": [{"PutRequest": {"Item": dict(order, day={"S": f"2024-05-0{d}"})}} for d in (2, 3)], "items": [{"PutRequest": {"Item": {"id": {"S": "2"}}}}]},
            ReturnConsumedCapacity="INDEXES",
            ReturnItemCollectionMetrics="SIZE",
        )),
        ("dynamodb get consistent", lambda: ddb.get_item(TableName="orders", Key={"customer": {"S": "c1"}, "day": {"S": "2024-05-01"}}, ConsistentRead=True, ProjectionExpression="#d, note", ExpressionAttributeNames={"#d": "day"}, ReturnConsumedCapacity="TOTAL")),
        ("dynamodb query index", lambda: ddb.query(
            TableName="orders",
            IndexName="by-total",
            KeyConditionExpression="customer = :c",
            ExpressionAttributeValues={":c": {"S": "c1"}},
            Limit=2,
            ConsistentRead=True,
            ProjectionExpression="customer, note",
            Select="SPECIFIC_ATTRIBUTES",
            ScanIndexForward=False,
            ReturnConsumedCapacity="INDEXES",
        )),
        ("dynamodb scan segment", lambda: ddb.scan(TableName="orders", Segment=1, TotalSegments=2, Limit=10, AttributesToGet=["customer", "day"], Select="SPECIFIC_ATTRIBUTES", ReturnConsumedCapacity="TOTAL")),
        ("dynamodb list tables", lambda: ddb.list_tables(Limit=1, ExclusiveStartTableName="items")),
        ("dynamodb batch get", lambda: ddb.batch_get_item(RequestItems={"orders": {"Keys": [{"customer": {"S": "c1"}, "day": {"S": "2024-05-02"}}]}}, ReturnConsumedCapacity="TOTAL")),
        ("dynamodb delete item", lambda: ddb.delete_item(TableName="orders", Key={"customer": {"S": "c1"}, "day": {"S": "2024-05-03"}}, ReturnConsumedCapacity="TOTAL", ReturnItemCollectionMetrics="SIZE")),
    ]


def run(mode: str, library: str, base: str, refused: int, moto: str, bedrock: str = "") -> dict:
    # Instrumentation first, as in Lambda (the boot runs before the function imports anything).
    session = {"lambdawrap": _lambdawrap, "contrib": _contrib, "bare": _bare}[mode](library)
    calls = aws_calls(moto, refused, bedrock) if library == "botocore" else http_calls(library, base, refused)
    outcomes = []

    def handler(event: object, context: object) -> None:
        for label, thunk in calls:
            label = label.rpartition(":")[2].partition("/")[2] if label.startswith("http") else label  # no port: it differs per run
            try:
                outcomes.append([label, "ok", _plain(thunk())])
            except Exception as exc:  # noqa: BLE001 - a failed call is a scenario
                outcomes.append([label, "raised", type(exc).__name__])

    return {"spans": session(handler), "outcomes": outcomes}


def _plain(value: object) -> object:
    return value if isinstance(value, (int, str, type(None))) else type(value).__name__


def _bare(library: str):
    def run_calls(handler) -> list:
        handler({}, None)
        return []

    return run_calls


def _lambdawrap(library: str):
    from lambdawrap.handler import import_hooks, outgoing, private_wrapt
    from lambdawrap.handler.invocation import InvocationTracer
    from lambdawrap.shared.settings import Settings
    from support.recording import CONTEXT, RecordingChannel

    settings = Settings.from_env(os.environ)
    channel = RecordingChannel()
    tracer = InvocationTracer(settings, channel, environ={})
    wrapper = private_wrapt.load().FunctionWrapper
    outgoing.install(settings, tracer.sampled, tracer.inflight, channel, wrapper, import_hooks.when_imported, lambda name: print("hook failed", name, file=sys.stderr))

    def run_calls(handler) -> list:
        tracer.wrap(handler)({}, CONTEXT)
        record = [r for r in channel.records if r["type"] == "invocation"][-1]
        root = record["start"]["span_id"]
        spans = record["end"].get("spans", []) + [s for r in channel.records if r["type"] == "spans" for s in r["spans"]]
        return [_normal(s["name"], s["kind"], s["parent_span_id"], root, s["status"][0], s["attributes"], [e[0] for e in s["events"]]) for s in spans]

    return run_calls


def _contrib(library: str):
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    import importlib

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    module, name = CONTRIB[library]
    getattr(importlib.import_module(module), name)().instrument()

    def run_calls(handler) -> list:
        with trace.get_tracer("test").start_as_current_span("invocation") as root:
            handler({}, None)
            root_id = f"{root.get_span_context().span_id:016x}"
        out = []
        for span in exporter.get_finished_spans():
            if span.name == "invocation":
                continue
            parent = f"{span.parent.span_id:016x}" if span.parent else ""
            out.append(_normal(span.name, span.kind.value, parent, root_id, span.status.status_code.value, dict(span.attributes or {}), [e.name for e in span.events]))
        return out

    return run_calls


def _normal(name: str, kind: int, parent: str, root: str, status: int, attributes: dict, events: list) -> dict:
    return {"name": name, "kind": kind, "parent": "invocation" if parent == root else (parent or "none"), "status": status, "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in attributes.items()}, "events": events}


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    mode, library, base, refused = sys.argv[1:5]
    moto = sys.argv[5] if len(sys.argv) > 5 else ""
    bedrock = sys.argv[6] if len(sys.argv) > 6 else ""
    print(json.dumps(run(mode, library, base, int(refused), moto, bedrock)))
