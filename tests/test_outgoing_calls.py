"""Outgoing calls through the real path: the emulator, the real awslambdaric and the layer, a
real moto server and real HTTP servers on loopback. Each call is one client span under the
invocation span; the servers saw the context; a chain of two functions through SQS, SNS and a
direct Invoke is one trace."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from conftest import write_function
from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.local.moto_server import MotoServer
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from lambdawrap.shared.semconv import SCHEMA_URL
from lambdawrap.shared.settings import Settings
from support.lazy_loading import LAZY_LOADER_RECIPE
from support.local_servers import closed_port, recording_server, silent_server
from support.pip_target import installed
from support.scripted_server import ScriptedServer
from support.python_versions import every_python
from support.stack import EVENTS, LAYER, instrumented, metric_total

CLIENT = 3  # OTLP's SPAN_KIND_CLIENT
OUTGOING = (CLIENT, 4)  # and PRODUCER, OTLP's 4: an SQS or SNS send

CALLER = """
import asyncio, json, os, urllib.request
import aiohttp, boto3, httpx, requests, urllib3

def client(service):
    return boto3.client(service, endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")

async def aiohttp_get(url):
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return response.status

def handler(event, context):
    base = event["http"]
    client("dynamodb").create_table(TableName="table-t", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    client("s3").create_bucket(Bucket="bucket-b")
    queue = client("sqs").create_queue(QueueName="queue-q")["QueueUrl"]
    client("sqs").send_message(QueueUrl=queue, MessageBody="hello")
    client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0)
    topic = client("sns").create_topic(Name="topic-n")["TopicArn"]
    client("sns").publish(TopicArn=topic, Message="hi")
    client("secretsmanager").create_secret(Name="s", SecretString="value-never-recorded")
    statuses = [
        requests.get(base + "/status/200?via=requests", timeout=5).status_code,
        urllib3.PoolManager().request("GET", base + "/status/200?via=urllib3").status,
        urllib.request.urlopen(base + "/status/200?via=urllib", timeout=5).status,
        httpx.get(base + "/status/200?via=httpx").status_code,
        asyncio.run(aiohttp_get(base + "/status/200?via=aiohttp")),
    ]
    return {"statuses": statuses}
"""

EXPECTED_CALLS = ["DynamoDB.CreateTable", "S3.CreateBucket", "SQS.CreateQueue", "SQS.SendMessage", "SQS.ReceiveMessage", "SNS.CreateTopic", "SNS.Publish", "Secrets Manager.CreateSecret", "GET", "GET", "GET", "GET", "GET"]


@pytest.fixture(scope="module")
def moto():
    with MotoServer() as server:
        yield server


def answer_without_layer(task, event: dict, env: dict | None = None) -> object:
    """What the function answers `event` without the layer (its JSON), through the emulator."""
    with Emulator(str(task), "app.handler", env=env, invoke_port=None, timeout_s=30) as bare:
        return bare.invoke(event).json()


def invocation_span(receiver, request_id):
    return receiver.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == request_id, timeout=20)[0]


def children(receiver, parent, count):
    spans = receiver.wait_for_spans(lambda s: s.get("parent_span_id") == parent["span_id"] and s["kind"] in OUTGOING, count=count, timeout=20)
    return sorted(spans, key=lambda s: s["start_time_unix_nano"])


def drained(moto, queue_name: str) -> list:
    """Every message of the queue, with its attributes, taken off it."""
    sqs = moto.client("sqs")
    queue = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    received = []
    while batch := sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"], MaxNumberOfMessages=10).get("Messages"):
        received += batch
        sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    return received


def without_and_with_the_layer(task) -> tuple:
    """The function invoked with {"http": a recording server's URL}: what it returned without the
    layer, its result with it, the receiver (read after the companion's last flush) and the
    function's log lines with the layer."""
    with recording_server() as http:
        without = answer_without_layer(task, {"http": http.url})
        with instrumented(task, timeout_s=30) as (emu, rx):
            result = emu.invoke({"http": http.url})
            lines = emu.log_lines("function")
    return without, result, rx, lines


def test_each_call_is_a_child_span_and_the_servers_saw_the_context(tmp_path, moto):
    task = write_function(tmp_path / "task", CALLER)
    with recording_server() as http, instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"statuses": [200] * 5}
        invocation = invocation_span(rx, result.request_id)
        calls = children(rx, invocation, len(EXPECTED_CALLS))
        assert [s["name"] for s in calls] == EXPECTED_CALLS
        assert all(s["trace_id"] == invocation["trace_id"] and s["status_code"] != 2 for s in calls)
        # ... each of a scope that names its version and the conventions' schema, as the
        # invocation's does (before: neither)
        assert {(s["scope_version"], s["schema_url"]) for s in calls} == {(invocation["scope_version"], SCHEMA_URL)}
        by_name = {s["name"]: s["attributes"] for s in calls}
        assert by_name["DynamoDB.CreateTable"]["aws.dynamodb.table_names"] == ["table-t"] and by_name["DynamoDB.CreateTable"]["rpc.system"] == "aws-api"
        assert by_name["S3.CreateBucket"]["aws.s3.bucket"] == "bucket-b"
        assert by_name["SQS.SendMessage"]["messaging.destination.name"] == "queue-q" and by_name["SQS.SendMessage"]["http.response.status_code"] == 200
        assert by_name["SNS.Publish"]["aws.sns.topic.arn"].endswith(":topic-n")
        # ... after the conventions (v1.44.0): a DynamoDB call names its database system, a
        # receive its batch's count, and a send is the PRODUCER span the message's context names
        # (before: none of the three)
        assert by_name["DynamoDB.CreateTable"]["db.system.name"] == "aws.dynamodb"
        assert by_name["SQS.ReceiveMessage"]["messaging.batch.message_count"] == 1 and by_name["SQS.ReceiveMessage"]["messaging.operation.type"] == "receive"
        assert {s["name"] for s in calls if s["kind"] == 4} == {"SQS.SendMessage", "SNS.Publish"}
        assert all(a.get("aws.request_id") and a["cloud.region"] == "us-east-1" for n, a in by_name.items() if "." in n)
        assert "value-never-recorded" not in json.dumps(rx.spans())
        # Every HTTP server request carried the invocation's trace, parented by its client span.
        http_spans = [s for s in calls if s["name"] == "GET"]
        seen = {r["path"].partition("via=")[2]: r["headers"].get("traceparent") for r in http.requests}
        for library, span in zip(["requests", "urllib3", "urllib", "httpx", "aiohttp"], http_spans):
            assert span["attributes"]["url.full"].endswith(f"via={library}")
            assert seen[library] == f"00-{invocation['trace_id']}-{span['span_id']}-01", library
        # The SQS message carries the context of its SendMessage span.
        sqs = moto.client("sqs")
        message = sqs.receive_message(QueueUrl=sqs.get_queue_url(QueueName="queue-q")["QueueUrl"], MessageAttributeNames=["All"])["Messages"][0]
        send = next(s for s in calls if s["name"] == "SQS.SendMessage")
        assert message["MessageAttributes"]["traceparent"]["StringValue"] == f"00-{invocation['trace_id']}-{send['span_id']}-01"


SENDS_ITS_OWN_PARAMETERS = """
import os
import boto3

def handler(event, context):
    sqs = boto3.client("sqs", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    queue = sqs.create_queue(QueueName="params-q")["QueueUrl"]
    params = {"QueueUrl": queue, "MessageBody": "m"}
    for _ in range(2):
        sqs._make_api_call("SendMessage", params)  # as libraries that wrap the client call it
    return {"params": sorted(params)}
"""


def test_parameters_a_library_hands_botocore_itself_stay_its_own_and_each_send_carries_its_own_context(tmp_path, moto):
    # GIVEN a function that hands botocore its own parameters dict, twice
    task = write_function(tmp_path / "task", SENDS_ITS_OWN_PARAMETERS)
    with instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        # THEN the dict is as the function wrote it (before: it gained MessageAttributes) ...
        assert result.json() == {"params": ["MessageBody", "QueueUrl"]}
        invocation = invocation_span(rx, result.request_id)
        sends = [s for s in children(rx, invocation, 3) if s["name"] == "SQS.SendMessage"]
    # ... and each message names its own send (before: the second carried the first's, taken for
    # the function's own attribute)
    sqs = moto.client("sqs")
    messages = sqs.receive_message(QueueUrl=sqs.get_queue_url(QueueName="params-q")["QueueUrl"], MessageAttributeNames=["All"], MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["MessageAttributes"]["traceparent"]["StringValue"] for m in messages) == sorted(f"00-{invocation['trace_id']}-{s['span_id']}-01" for s in sends)


AIO_CALLER = """
import asyncio, os, sys
sys.path.insert(0, os.environ["VENDORED"])  # the function's own SDK, as its package ships it
import botocore
from aiobotocore.session import get_session

async def calls():
    options = dict(endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    async with get_session().create_client("sqs", **options) as sqs:
        queue = (await sqs.create_queue(QueueName="aio-q"))["QueueUrl"]
        await sqs.send_message(QueueUrl=queue, MessageBody="hello")
        try:
            await sqs.get_queue_url(QueueName="no-such-queue")
        except botocore.exceptions.ClientError as exc:
            return type(exc).__name__

def handler(event, context):
    return {"error": asyncio.run(calls()), "botocore": botocore.__version__}
"""


@pytest.fixture(scope="module")
def aiobotocore_path() -> str:
    """aiobotocore and the botocore it pins, in a folder of their own (made once per venv)."""
    return installed("aiobotocore-requirements.txt", "lambdawrap-aiobotocore")


def test_each_aiobotocore_call_is_a_child_span_and_its_http_request_is_not(tmp_path, moto, aiobotocore_path):
    # GIVEN a function on the async SDK (aiobotocore, over aiohttp), with its own botocore
    task = write_function(tmp_path / "task", AIO_CALLER)
    with instrumented(task, env={"MOTO_URL": moto.endpoint, "VENDORED": aiobotocore_path}, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        # THEN the function saw what it sees without the layer: its SDK, and the AWS error it raised
        assert result.json() == {"error": "QueueDoesNotExist", "botocore": "1.43.117"}
        # ...and each API call is one client span under the invocation, none for aiohttp below it
        invocation = invocation_span(rx, result.request_id)
        calls = children(rx, invocation, 3)
        assert len([s for s in rx.spans() if s["kind"] in OUTGOING]) == 3
        assert [s["name"] for s in calls] == ["SQS.CreateQueue", "SQS.SendMessage", "SQS.GetQueueUrl"]
        send, missing = calls[1], calls[2]
        assert send["attributes"]["rpc.system"] == "aws-api" and send["attributes"]["messaging.destination.name"] == "aio-q"
        assert send["attributes"]["http.response.status_code"] == 200 and send["attributes"].get("aws.request_id") and send["status_code"] != 2
        assert missing["status_code"] == 2 and missing["attributes"]["error.type"] == "AWS.SimpleQueueService.NonExistentQueue"  # the answer's Error.Code, not the exception's class
        assert send["kind"] == 4 and missing["kind"] == CLIENT  # a send is PRODUCER
        # ...and the message carries the context of its SendMessage span
        sqs = moto.client("sqs")
        message = sqs.receive_message(QueueUrl=sqs.get_queue_url(QueueName="aio-q")["QueueUrl"], MessageAttributeNames=["All"])["Messages"][0]
        assert message["MessageAttributes"]["traceparent"]["StringValue"] == f"00-{invocation['trace_id']}-{send['span_id']}-01"


AIO_CANCELLED = """
import asyncio, os, sys
sys.path.insert(0, os.environ["VENDORED"])
import aiohttp, httpx, requests
from aiobotocore.session import get_session

async def calls(base, silent):
    options = dict(endpoint_url=silent, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    async with get_session().create_client("sqs", **options) as sqs:
        try:
            async with asyncio.timeout(0.5):  # the endpoint never answers: the call is cancelled
                await sqs.list_queues()
        except TimeoutError:
            pass
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/status/200?via=aiohttp") as response:
            statuses = [response.status]
    async with httpx.AsyncClient() as client:
        statuses.append((await client.get(base + "/status/200?via=httpx")).status_code)
    statuses.append(requests.get(base + "/status/200?via=requests", timeout=5).status_code)
    return statuses

def handler(event, context):
    return asyncio.run(calls(event["http"], event["silent"]))
"""


def test_an_aiobotocore_call_cancelled_by_a_timeout_leaves_the_calls_after_it_traced(tmp_path, aiobotocore_path):
    # GIVEN a function whose aiobotocore call is cancelled by asyncio.timeout() while its HTTP
    # request waits for an answer (aiobotocore then emits no after-call-error: it catches
    # Exception only), and which then makes HTTP calls in the same task
    task = write_function(tmp_path / "task", AIO_CANCELLED)
    with recording_server() as http, silent_server() as silent, instrumented(task, env={"VENDORED": aiobotocore_path}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url, "silent": silent.rsplit("/", 1)[0]})
        assert result.json() == [200, 200, 200]
        invocation = invocation_span(rx, result.request_id)
        # THEN the cancelled call is a failed span, and each call after it is a span of its own
        # (before: the AWS call's mark stayed set in the task's context: no span for it, and the
        # three requests after it went untraced, without a traceparent)
        calls = children(rx, invocation, 4)
    assert [s["name"] for s in calls] == ["SQS.ListQueues", "GET", "GET", "GET"], calls
    cancelled = calls[0]
    assert cancelled["status_code"] == 2 and cancelled["attributes"]["error.type"] == "CancelledError", cancelled
    seen = {r["path"].partition("via=")[2]: r["headers"].get("traceparent") for r in http.requests}
    for library, span in zip(["aiohttp", "httpx", "requests"], calls[1:]):
        assert span["attributes"]["url.full"].endswith(f"via={library}")
        assert seen[library] == f"00-{invocation['trace_id']}-{span['span_id']}-01", (library, seen)


PRODUCER = """
import json, os
import boto3

def client(service, url=None):
    return boto3.client(service, endpoint_url=url or os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")

def handler(event, context):
    client("sqs").send_message(QueueUrl=event["queue"], MessageBody=json.dumps({"order": 1}))
    client("sns").publish(TopicArn=event["topic"], Message="shipped")
    answer = client("lambda", event["consumer"]).invoke(FunctionName="function", Payload=json.dumps({"direct": True}))
    return json.loads(answer["Payload"].read())
"""

CONSUMER = """
def handler(event, context):
    custom = getattr(getattr(context, "client_context", None), "custom", None)
    return {"custom": custom}
"""


def in_trace(consumer: dict, producer_call: dict) -> bool:
    """The consumer's span continues the producer's call: as its child, or linked to it."""
    parented = consumer["trace_id"] == producer_call["trace_id"] and consumer.get("parent_span_id") == producer_call["span_id"]
    linked = any(l["trace_id"] == producer_call["trace_id"] and l["span_id"] == producer_call["span_id"] for l in consumer["links"])
    return parented or linked


@pytest.mark.timeout(300)
def test_two_functions_chained_through_sqs_sns_and_invoke_are_one_trace(tmp_path, moto):
    producer_dir = write_function(tmp_path / "producer", PRODUCER)
    consumer_dir = write_function(tmp_path / "consumer", CONSUMER)
    sqs, sns = moto.client("sqs"), moto.client("sns")
    queue = sqs.create_queue(QueueName="chain")["QueueUrl"]
    topic = sns.create_topic(Name="chain")["TopicArn"]
    fanout = sqs.create_queue(QueueName="chain-fanout")["QueueUrl"]
    fanout_arn = sqs.get_queue_attributes(QueueUrl=fanout, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=fanout_arn)
    # X-Ray too: the Invoke's X-Amzn-Trace-Id then names its span (Lineage kept), and the
    # platform hands it to the consumer as its parent.
    env = {"MOTO_URL": moto.endpoint, "OTEL_PROPAGATORS": "tracecontext,baggage,xray"}
    with OtlpReceiver() as rx:
        with instrumented(consumer_dir, receiver=rx, invoke_port=0) as (consumer, _), instrumented(producer_dir, env=env, receiver=rx, timeout_s=30) as (producer, _):
            produced = producer.invoke({"queue": queue, "topic": topic, "consumer": consumer.invoke_url.split("/2015-03-31/")[0]})
            assert produced.status == 200, produced.body
            producer_span = invocation_span(rx, produced.request_id)
            calls = {s["name"]: s for s in children(rx, producer_span, 3)}
            invoke = calls["Lambda.Invoke"]
            # The client context reached the consumer, naming the Invoke span.
            assert produced.json()["custom"]["traceparent"] == f"00-{invoke['trace_id']}-{invoke['span_id']}-01"
            # SQS: the message as an event source mapping hands it over.
            message = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"], AttributeNames=["All"])["Messages"][0]
            sqs_result = consumer.invoke({"Records": [sqs_record(message, queue)]})
            # SNS (through its SQS subscription): the notification as SNS hands it to Lambda.
            envelope = json.loads(sqs.receive_message(QueueUrl=fanout)["Messages"][0]["Body"])
            sns_result = consumer.invoke({"Records": [sns_record(envelope, topic)]})
            spans = {r.request_id: invocation_span(rx, r.request_id) for r in (sqs_result, sns_result)}
            direct = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") and s["attributes"].get("faas.invocation_id") not in spans and s["trace_id"] == invoke["trace_id"] and s["span_id"] != producer_span["span_id"], timeout=20)[0]
    assert in_trace(spans[sqs_result.request_id], calls["SQS.SendMessage"])
    assert in_trace(spans[sns_result.request_id], calls["SNS.Publish"])
    assert in_trace(direct, invoke)


def sqs_record(message: dict, queue_url: str) -> dict:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {k: {"stringValue": v["StringValue"], "dataType": v["DataType"], "stringListValues": [], "binaryListValues": []} for k, v in message.get("MessageAttributes", {}).items()},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:" + queue_url.rsplit("/", 1)[1],
        "awsRegion": "us-east-1",
    }


def sns_record(envelope: dict, topic: str) -> dict:
    return {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": topic + ":sub",
        "Sns": {
            "Type": "Notification",
            "MessageId": envelope["MessageId"],
            "TopicArn": topic,
            "Subject": None,
            "Message": envelope["Message"],
            "Timestamp": envelope["Timestamp"],
            "MessageAttributes": envelope.get("MessageAttributes", {}),
        },
    }


FORKS = """
import os, urllib.request

def handler(event, context):
    child = os.fork()
    if child == 0:  # a worker the function forks (multiprocessing's fork does the same)
        try:
            urllib.request.urlopen(event["http"] + "/from-the-child", timeout=10).read()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    return {"statusCode": 200}
"""


def test_a_call_made_by_a_child_forked_during_the_invocation_is_its_child_span(tmp_path):
    # The child holds a copy of the invocation that is never sent: its spans go on their own.
    task = write_function(tmp_path / "task", FORKS)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.status == 200 and result.function_error is None
        invocation = invocation_span(rx, result.request_id)
        (call,) = children(rx, invocation, 1)
        assert call["trace_id"] == invocation["trace_id"] and call["attributes"]["url.full"].endswith("/from-the-child")
        assert http.requests[0]["headers"].get("traceparent") == f"00-{invocation['trace_id']}-{call['span_id']}-01"


NEAR_THE_LIMIT = """
import os
import boto3

LIMIT = 256 * 1024


def handler(event, context):
    sqs = boto3.client("sqs", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    queue = sqs.create_queue(QueueName="near-the-limit")["QueueUrl"]
    attribute = {"kind": {"DataType": "String", "StringValue": "order"}}  # 4 + 6 + 5 bytes
    sqs.send_message(QueueUrl=queue, MessageBody="small")
    # A message SQS counts at 20 bytes under 256 KiB, and a batch of two 60 bytes under it:
    # with the context (~72 bytes a message) a queue at 256 KiB would refuse either call.
    sqs.send_message(QueueUrl=queue, MessageBody="b" * (LIMIT - 20 - 15), MessageAttributes=attribute)
    half = (LIMIT - 60) // 2
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": "1", "MessageBody": "c" * half}, {"Id": "2", "MessageBody": "d" * (LIMIT - 60 - half)}])
    return {"sent": 4}
"""


def test_messages_near_sqs_size_limit_go_without_the_context(tmp_path, moto):
    # GIVEN messages whose size with the context would pass 256 KiB, as SQS counts it (body and
    # attributes; moto counts the body only, so it would not refuse them: the test reads what
    # was sent)
    task = write_function(tmp_path / "task", NEAR_THE_LIMIT)
    with instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        assert result.json() == {"sent": 4}
        invocation_span(rx, result.request_id)
        assert emu.wait_idle(30)
    received = drained(moto, "near-the-limit")
    carried = {m["Body"][:1]: "traceparent" in m.get("MessageAttributes", {}) for m in received}
    # THEN only the small message carries it, the others go as the function wrote them, and
    # each message sent without it is counted
    assert carried == {"s": True, "b": False, "c": False, "d": False}, carried
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "context_not_injected"}) == 2  # per call


NAMED_EXECUTIONS = """
import json, os
import boto3

def handler(event, context):
    sfn = boto3.client("stepfunctions", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    machine = sfn.create_state_machine(name="orders", definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}), roleArn="arn:aws:iam::123456789012:role/orders")["stateMachineArn"]
    started = []
    for attempt in range(2):  # the same named execution started again, as a retried invocation would
        try:
            started.append(sfn.start_execution(stateMachineArn=machine, name="order-7", input='{"order": 7}')["executionArn"])
        except sfn.exceptions.ExecutionAlreadyExists as exc:
            started.append(exc.response["Error"]["Code"])
    unnamed = sfn.start_execution(stateMachineArn=machine, input='{"order": 8}')["executionArn"]
    inputs = [sfn.describe_execution(executionArn=arn)["input"] for arn in (started[0], unnamed)]
    return {"started": started, "inputs": inputs}
"""


def test_a_named_execution_started_again_is_the_one_already_running(tmp_path, moto):
    # GIVEN a function that starts a Step Functions execution by name twice with the same input
    # (StartExecution is idempotent by name and input: the second call answers with the execution
    # already running, where another input is refused as ExecutionAlreadyExists)
    task = write_function(tmp_path / "task", NAMED_EXECUTIONS)
    with instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        invocation_span(rx, result.request_id)
        assert emu.wait_idle(30)
    outcome = result.json()
    # THEN the second start answers as without the layer (before: ExecutionAlreadyExists, its
    # input differing by the context), the named input goes as written and is counted as going
    # without the context; an unnamed execution still carries it
    assert outcome["started"][1] == outcome["started"][0], outcome
    assert outcome["inputs"][0] == '{"order": 7}'
    unnamed = json.loads(outcome["inputs"][1])
    assert unnamed["order"] == 8 and unnamed["_lambdawrap"]["traceparent"].startswith("00-")
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "context_not_injected"}) == 2  # per named call


PROPAGATES_INTO_ITS_PAYLOAD = """
import json, os
import boto3

OWN = "00-11111111111111111111111111111111-2222222222222222-01"

def handler(event, context):
    sfn = boto3.client("stepfunctions", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    machine = sfn.create_state_machine(name="own-context", definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}), roleArn="arn:aws:iam::123456789012:role/orders")["stateMachineArn"]
    # The function propagates its own context into the input, as OpenTelemetry's inject() would
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"traceparent": OWN, "order": 9}))["executionArn"]
    return {"input": sfn.describe_execution(executionArn=execution)["input"]}
"""


def test_a_payload_carrying_the_functions_own_context_keeps_it(tmp_path, moto):
    from lambdawrap.handler.message_context import payload_context

    # GIVEN a function that puts its own traceparent at the top of a Step Functions input
    task = write_function(tmp_path / "task", PROPAGATES_INTO_ITS_PAYLOAD)
    with instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        invocation_span(rx, result.request_id)
    sent = result.json()["input"]
    # THEN the input goes as written and its consumer follows the function's context (before: our
    # _lambdawrap was added, which consumers read first)
    assert sent == json.dumps({"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "order": 9})
    assert payload_context(json.loads(sent)) == "00-11111111111111111111111111111111-2222222222222222-01"


INVOKES_WITH_ITS_OWN_CLIENT_CONTEXT = """
import base64
import boto3
from botocore.config import Config

DOCUMENT = b'{"custom": {"tenant": "acme"}}'

def handler(event, context):
    # The recording server stands in for Lambda's Invoke endpoint: it answers 200 to any call.
    lam = boto3.client("lambda", endpoint_url=event["http"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}))
    outcomes = {}
    for label, client_context in (("bytes", base64.b64encode(DOCUMENT)), ("line break", base64.encodebytes(DOCUMENT).decode()), ("text", base64.b64encode(DOCUMENT).decode())):
        try:
            lam.invoke(FunctionName="orders", ClientContext=client_context, Payload=b"{}")
            outcomes[label] = "sent"
        except Exception as exc:
            outcomes[label] = type(exc).__name__
    return outcomes
"""


def test_a_client_context_the_sdk_would_not_send_is_not_made_sendable(tmp_path):
    # GIVEN a function invoking another with its own client context: as bytes (botocore takes
    # a str), with the line break base64.encodebytes ends with (no header can hold it), as text
    task = write_function(tmp_path / "task", INVOKES_WITH_ITS_OWN_CLIENT_CONTEXT)
    with recording_server() as http:
        without = answer_without_layer(task, {"http": http.url})
        with instrumented(task, timeout_s=30) as (emu, rx):
            result = emu.invoke({"http": http.url})
            invocation_span(rx, result.request_id)
        sent = [r["headers"].get("x-amz-client-context") for r in http.requests]
    # THEN each call fails or goes as without the layer (before: the first two were decoded and
    # sent rewritten, where the SDK refuses them), and the one the SDK sends carries the context
    assert without["bytes"] == "ParamValidationError" and without["line break"] != "sent" and without["text"] == "sent", without
    assert result.json() == without
    assert len(sent) == 2
    custom = json.loads(base64.b64decode(sent[-1]))["custom"]
    assert custom["tenant"] == "acme" and custom["traceparent"].startswith("00-"), custom


SENDS_A_LONE_SURROGATE = """
import os
import boto3

def handler(event, context):
    args = dict(endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    # A file name read with surrogateescape, written into the JSON as it is
    text = '{"file": "' + os.fsdecode(b"report-\\xff.csv") + '"}'
    outcomes = {}
    calls = {
        "kinesis": lambda: boto3.client("kinesis", **args).put_record(StreamName="orders", Data=text, PartitionKey="k"),
        "eventbridge": lambda: boto3.client("events", **args).put_events(Entries=[{"Source": "shop", "DetailType": "order", "Detail": text}]),
    }
    for name, call in calls.items():
        try:
            call()
            outcomes[name] = "sent"
        except Exception as exc:
            outcomes[name] = f"{type(exc).__name__}: {exc}"
    return outcomes
"""


def test_a_payload_with_a_lone_surrogate_fails_as_without_the_layer(tmp_path, moto):
    # GIVEN a function that sends a Kinesis record and an EventBridge event whose JSON text holds
    # a lone surrogate (a file name decoded with surrogateescape): botocore cannot encode the
    # record's blob, and writes the event's JSON escaped
    task = write_function(tmp_path / "task", SENDS_A_LONE_SURROGATE)
    env = {"MOTO_URL": moto.endpoint}
    without = answer_without_layer(task, {}, env=env)
    with instrumented(task, env=env, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        invocation_span(rx, result.request_id)
    # THEN each goes, or fails with the error it fails with, as without the layer (before: the
    # record's error named another position, and its text held lambdawrap's traceparent)
    assert without["kinesis"].startswith("UnicodeEncodeError") and without["eventbridge"] == "sent", without
    assert result.json() == without


INVOKES_WITH_A_CUSTOM_VALUE = """
import base64, json
import boto3

def handler(event, context):
    lam = boto3.client("lambda", endpoint_url=event["http"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    for custom in ("tenant-acme", ["acme", 7], None):
        client_context = base64.b64encode(json.dumps({"custom": custom, "env": {"stage": "prod"}}).encode()).decode()
        lam.invoke(FunctionName="orders", ClientContext=client_context, Payload=b"{}")
    return {"statusCode": 200}
"""


def test_a_client_context_s_custom_value_that_is_not_an_object_is_kept(tmp_path):
    # GIVEN a function whose client context's custom value is a string, a list, or null
    task = write_function(tmp_path / "task", INVOKES_WITH_A_CUSTOM_VALUE)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"statusCode": 200}
        invocation_span(rx, result.request_id)
    sent = [json.loads(base64.b64decode(r["headers"]["x-amz-client-context"])) for r in http.requests]
    # THEN the string and the list reach the function invoked as they were (before: replaced
    # by an object holding the context), and a null one becomes the context's object
    assert sent[0] == {"custom": "tenant-acme", "env": {"stage": "prod"}}, sent[0]
    assert sent[1] == {"custom": ["acme", 7], "env": {"stage": "prod"}}, sent[1]
    assert sent[2]["env"] == {"stage": "prod"} and sent[2]["custom"]["traceparent"].startswith("00-"), sent[2]


INVOKES_WITH_ITS_OWN_CONTEXT_IN_THE_PAYLOAD = """
import json
import boto3

OWN = "00-11111111111111111111111111111111-2222222222222222-01"

def handler(event, context):
    lam = boto3.client("lambda", endpoint_url=event["http"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    # The function propagates its own context into the payload, as OpenTelemetry's inject() would
    lam.invoke(FunctionName="orders", Payload=json.dumps({"traceparent": OWN, "order": 9}).encode())
    lam.invoke(FunctionName="orders", Payload=json.dumps({"traceparent": OWN, "order": 9}))
    lam.invoke(FunctionName="orders", Payload=b'{"order": 9, "note": "traceparent is a word here"}')
    return {"statusCode": 200}
"""


def test_an_invoke_payload_carrying_the_functions_own_context_gets_no_client_context(tmp_path):
    # GIVEN a function invoking another with its own traceparent at the top of the payload
    task = write_function(tmp_path / "task", INVOKES_WITH_ITS_OWN_CONTEXT_IN_THE_PAYLOAD)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"statusCode": 200}
        invocation = invocation_span(rx, result.request_id)
        calls = children(rx, invocation, 3)
    sent = [r["headers"].get("x-amz-client-context") for r in http.requests]
    # THEN those two calls go as written, with no client context: the function invoked follows
    # the caller's own context (before: ours went in the client context, which it reads first);
    # a payload that merely holds the word gets the context as usual
    assert sent[:2] == [None, None], sent
    custom = json.loads(base64.b64decode(sent[2]))["custom"]
    assert custom["traceparent"] == f"00-{invocation['trace_id']}-{calls[2]['span_id']}-01"


def test_settings_name_what_is_traced_and_propagated(caplog):
    # GIVEN the variables WHEN parsed THEN groups stand for their members, unknown names are
    # dropped (with one warning), and lambdawrap's own endpoints are known
    s = Settings.from_env({"LAMBDAWRAP_INSTRUMENT": "aws-sdk,httpx,carrier-pigeon", "OTEL_PROPAGATORS": "xray,tracecontext", "LAMBDAWRAP_PROPAGATE_AWS": "sqs,lambda", "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector.example.com/v1/traces", "LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS": "Metadata.Internal, 10.0.0.1:8080"}, warn=False)
    assert s.instrument == ("botocore", "httpx") and s.propagators == ("tracecontext", "xray") and s.propagate_aws == ("sqs", "lambda")
    assert {"127.0.0.1:9001", "127.0.0.1:2773", "collector.example.com:443"} <= set(s.own_endpoints)
    assert s.instrument_exclude_hosts == ("metadata.internal", "10.0.0.1:8080")
    # ... and an entry whose port no call can be to is named, as one written otherwise is
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        kept = Settings.from_env({"LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS": f"a.example.com:99999, b.example.com:0, [::1]:70000, d.example.com:080, e.example.com:{'9' * 5000}, c.example.com:443"}).instrument_exclude_hosts
    warnings = [r.getMessage() for r in caplog.records]
    assert kept == ("c.example.com:443",), kept
    assert len(warnings) == 1 and "a.example.com:99999, b.example.com:0, [::1]:70000, d.example.com:080, e.example.com:" in warnings[0], warnings
    assert Settings.from_env({"LAMBDAWRAP_INSTRUMENT": "none"}).instrument == ()
    assert Settings.from_env({}).instrument == ("botocore", "requests", "urllib3", "urllib", "httpx", "aiohttp")


@pytest.mark.parametrize("value", ["none", "tracecontext,none", "baggage, NONE ,xray"])
def test_none_among_the_propagators_is_no_propagator_as_the_opentelemetry_api_reads_it(monkeypatch, caplog, value):
    # GIVEN OTEL_PROPAGATORS naming none, alone or beside others
    monkeypatch.setenv("OTEL_PROPAGATORS", value)
    from opentelemetry import propagate

    # WHEN lambdawrap and the OpenTelemetry API (the function's own code) read it
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        ours = Settings.from_env().propagators
    theirs = propagate._load_propagators()
    # THEN neither propagates anything, and lambdawrap says nothing of it (it warned "none" was
    # unknown, and kept the others)
    assert theirs.fields == set() and ours == (), ours
    assert not caplog.records


CALLS_TWO = """
import urllib.request

def handler(event, context):
    for target in event["targets"]:
        urllib.request.urlopen(target + "/status/200", timeout=5).read()
    return {"statusCode": 200}
"""


def test_hosts_excluded_as_host_port_are_not_traced_and_an_entry_written_otherwise_is_named(tmp_path):
    # GIVEN a function calling two servers, one excluded as host:port, the other written as a
    # URL (a wildcard, a path: no call's host is ever that)
    task = write_function(tmp_path / "task", CALLS_TWO)
    with recording_server() as kept, recording_server() as excluded:
        port = excluded.url.rsplit(":", 1)[1]
        env = {"LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS": f"{kept.url}, *.example.com, 127.0.0.1:{port}"}
        with instrumented(task, env=env, timeout_s=30) as (emu, rx):
            # WHEN it runs
            assert emu.invoke({"targets": [kept.url, excluded.url]}).json() == {"statusCode": 200}
            emu.stop()
            lines = emu.log_lines("function") + emu.log_lines("extension")
    # THEN the host:port excluded has no span, the other call has its own ...
    calls = [s["attributes"].get("server.port") for s in rx.spans() if s["kind"] in OUTGOING]
    assert calls == [int(kept.url.rsplit(":", 1)[1])], calls
    # ... and the entries no call can match were named once (before: ignored in silence)
    said = [line for line in lines if "LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS" in line]
    assert len(said) == 1 and f"entries {kept.url}, *.example.com (" in said[0], lines


SENT_AGAIN_TO_AN_EXCLUDED_HOST = """
import urllib.request
import httpx, requests

class Frozen(urllib.request.Request):
    # A request class whose headers cannot change once frozen (the function's own rule)
    def add_header(self, key, value):
        if getattr(self, "frozen", False):
            raise RuntimeError("headers frozen")
        super().add_header(key, value)

def handler(event, context):
    traced, excluded = event["targets"]
    kept = urllib.request.Request(traced + "/status/200?via=urllib")
    urllib.request.urlopen(kept, timeout=5).read()
    kept.full_url = excluded + "/status/200?via=urllib"
    urllib.request.urlopen(kept, timeout=5).read()
    session = requests.Session()
    prepared = requests.Request("GET", traced + "/status/200?via=requests").prepare()
    session.send(prepared, timeout=5)
    prepared.prepare_url(excluded + "/status/200?via=requests", None)
    session.send(prepared, timeout=5)
    with httpx.Client() as client:
        built = client.build_request("GET", traced + "/status/200?via=httpx")
        client.send(built)
        built.url = httpx.URL(excluded + "/status/200?via=httpx")
        client.send(built)
    frozen = Frozen(traced + "/status/200?via=frozen")
    frozen.frozen = True
    urllib.request.urlopen(frozen, timeout=5).read()
    requests.get(traced + "/status/200?via=after", timeout=5)
    urllib.request.urlopen(traced + "/status/200?via=after", timeout=5).read()
    return {"statusCode": 200}
"""


def test_a_request_sent_again_to_an_excluded_host_carries_no_context_and_a_failed_header_leaves_no_call_under_way(tmp_path):
    # GIVEN a function that sends urllib, requests and httpx request objects to a traced host,
    # then the same objects to an excluded one; then a urllib request whose class refuses new
    # headers, and more calls
    task = write_function(tmp_path / "task", SENT_AGAIN_TO_AN_EXCLUDED_HOST)
    with recording_server() as traced, recording_server() as excluded:
        env = {"LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS": f"127.0.0.1:{excluded.port}"}
        with instrumented(task, env=env, timeout_s=30) as (emu, rx):
            # WHEN it runs twice
            for _ in range(2):
                result = emu.invoke({"targets": [traced.url, excluded.url]})
                assert result.json() == {"statusCode": 200}
            invocation = invocation_span(rx, result.request_id)
            calls = children(rx, invocation, 6)
    # THEN the excluded host got no trace header (before: the one the earlier send carried,
    # naming another call's span) ...
    assert [r["headers"].get("traceparent") for r in excluded.requests] == [None] * 6, excluded.requests
    # ... the refused header left the request to the layer below (http.client, which copies
    # the headers), and the calls after it were traced, in this invocation and the next
    # (before: the call stayed marked as under way, and every later call in the process went
    # untraced, without context)
    assert [s["attributes"]["url.full"].rpartition("via=")[2] for s in calls] == ["urllib", "requests", "httpx", "frozen", "after", "after"], calls
    after = [r["headers"].get("traceparent") for r in traced.requests if r["path"].endswith("via=after")]
    assert len(after) == 4 and all(after), after


def test_with_baggage_alone_propagated_a_request_sent_again_to_an_excluded_host_carries_none_of_ours(tmp_path):
    # GIVEN OTEL_PROPAGATORS=baggage (no header of one send's own, which would tell a request
    # sent again), a caller's baggage, and request objects sent to a traced host, then again to
    # an excluded one
    task = write_function(tmp_path / "task", SENT_AGAIN_TO_AN_EXCLUDED_HOST)
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    with recording_server() as traced, recording_server() as excluded:
        env = {"LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS": f"127.0.0.1:{excluded.port}", "OTEL_PROPAGATORS": "baggage"}
        with instrumented(task, env=env, timeout_s=30) as (emu, rx):
            # WHEN it runs
            result = emu.invoke(dict(event, headers=dict(event["headers"], baggage="tenant=acme"), targets=[traced.url, excluded.url]))
            assert result.json() == {"statusCode": 200}
    # THEN the traced host got the caller's baggage, the excluded host none of it: the value is
    # all there is to tell lambdawrap's from the function's there
    assert [r["headers"].get("baggage") for r in traced.requests if r["path"].endswith(("via=urllib", "via=requests", "via=httpx"))] == ["tenant=acme"] * 3
    assert [r["headers"].get("baggage") for r in excluded.requests] == [None] * 3, excluded.requests


FORWARDS_TO_AN_EXCLUDED_HOST = """
import asyncio, urllib.request
import aiohttp, httpx, requests
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

async def aiohttp_get(url, headers):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            await response.read()

def handler(event, context):
    traced, excluded = event["targets"]
    # The caller's baggage and tracestate, forwarded by the function itself, as lambdawrap
    # carries them on its traced calls
    own = {"baggage": event["headers"]["baggage"], "tracestate": event["headers"]["tracestate"]}
    requests.get(traced + "/status/200?via=traced", timeout=5)
    requests.get(excluded + "/status/200?via=requests", headers=dict(own), timeout=5)
    httpx.get(excluded + "/status/200?via=httpx", headers=dict(own))
    urllib.request.urlopen(urllib.request.Request(excluded + "/status/200?via=urllib", headers=dict(own)), timeout=5).read()
    asyncio.run(aiohttp_get(excluded + "/status/200?via=aiohttp", dict(own)))
    with suppress_http_instrumentation():
        requests.get(traced + "/status/200?via=suppressed", headers=dict(own), timeout=5)
    return {"statusCode": 200}
"""


def test_headers_the_function_sets_on_a_call_lambdawrap_does_not_trace_go_as_it_set_them(tmp_path):
    # GIVEN a function that forwards its caller's baggage and tracestate on calls lambdawrap
    # does not trace (an excluded host, OpenTelemetry's suppression), after a traced call that
    # carried the same values
    task = write_function(tmp_path / "task", FORWARDS_TO_AN_EXCLUDED_HOST)
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    caller = {"traceparent": f"00-{1:032x}-{1:016x}-01", "tracestate": "congo=t61rcWkgMzE", "baggage": "tenant=acme"}
    with recording_server() as traced, recording_server() as excluded:
        env = {"LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS": f"127.0.0.1:{excluded.port}"}
        with instrumented(task, env=env, timeout_s=30) as (emu, rx):
            # WHEN it is invoked
            result = emu.invoke(dict(event, headers=dict(event["headers"], **caller), targets=[traced.url, excluded.url]))
            assert result.json() == {"statusCode": 200}
    # THEN every untraced call carries the function's headers as it set them, and no context
    # of lambdawrap's (before: lambdawrap took them for its own, left from an earlier send, and
    # removed them)
    untraced = excluded.requests + [r for r in traced.requests if r["path"].endswith("suppressed")]
    sent = [(r["path"].rsplit("=", 1)[1], r["headers"].get("baggage"), r["headers"].get("tracestate"), r["headers"].get("traceparent")) for r in untraced]
    assert sent == [(via, "tenant=acme", "congo=t61rcWkgMzE", None) for via in ("requests", "httpx", "urllib", "aiohttp", "suppressed")], sent
    # ... as the traced call carried them, beside its own traceparent
    first = traced.requests[0]["headers"]
    assert (first.get("baggage"), first.get("tracestate"), first.get("traceparent", "")[3:35]) == ("tenant=acme", "congo=t61rcWkgMzE", f"{1:032x}")


AWS_THEN_HTTP = """
import os, urllib.request
import boto3

def handler(event, context):
    sqs = boto3.client("sqs", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    sqs.list_queues()
    urllib.request.urlopen(event["http"] + "/status/200", timeout=5).read()
    return {"statusCode": 200}
"""


def test_an_aws_endpoint_excluded_as_host_port_is_not_traced(tmp_path, moto):
    # GIVEN a function calling an AWS endpoint excluded as host:port (a LocalStack or VPC
    # endpoint), then an HTTP server that is not WHEN it runs THEN only the HTTP call has a
    # span (before: AWS SDK calls ignored LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS)
    task = write_function(tmp_path / "task", AWS_THEN_HTTP)
    host_port = moto.endpoint.split("://", 1)[1].rstrip("/")
    env = {"MOTO_URL": moto.endpoint, "LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS": host_port, "OTEL_PROPAGATORS": "tracecontext,xray"}
    with recording_server() as http, instrumented(task, env=env, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"statusCode": 200}
        invocation = invocation_span(rx, result.request_id)
        (call,) = children(rx, invocation, 1)
        emu.stop()
    assert call["name"] == "GET" and [s["name"] for s in rx.spans() if s["kind"] in OUTGOING] == ["GET"]


ODD_ANSWERS = """
import io, urllib.request, urllib.error


class Answer(io.BytesIO):
    url = "http://odd.test/"
    code, msg = 200, "OK"  # what urllib's own error processor reads

    def info(self):
        return {}

    @property
    def status(self):
        raise RuntimeError("the function's answer has no status to give")


class Refusal(urllib.error.HTTPError):
    @property
    def code(self):
        raise RuntimeError("the function's error has no code to give")

    @code.setter
    def code(self, value):
        pass


class Odd(urllib.request.BaseHandler):
    handler_order = 100  # before urllib's own HTTPHandler

    def http_open(self, request):
        if request.full_url.endswith("/refuse"):
            raise Refusal(request.full_url, 418, "no", {}, None)
        return Answer(b"odd")


def handler(event, context):
    opener = urllib.request.build_opener(Odd)
    body = opener.open("http://odd.test/answer", timeout=5).read().decode()
    try:
        opener.open("http://odd.test/refuse", timeout=5)
    except Refusal as exc:
        return {"body": body, "raised": type(exc).__name__, "msg": exc.msg}
"""


def test_an_answer_or_error_whose_properties_raise_reaches_the_function_as_it_came(tmp_path):
    # GIVEN an opener handler of the function's own answering with an object whose `status`
    # raises, and raising an HTTPError subclass whose `code` raises WHEN the function calls
    # through it THEN it gets its answer and its exception, as without the layer (before: what
    # lambdawrap's reading of them raised replaced them), and each call still has its span
    task = write_function(tmp_path / "task", ODD_ANSWERS)
    with instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        assert result.json() == {"body": "odd", "raised": "Refusal", "msg": "no"}, result.json()
        invocation = invocation_span(rx, result.request_id)
        calls = children(rx, invocation, 2)
    assert [s["attributes"]["url.full"] for s in calls] == ["http://odd.test/answer", "http://odd.test/refuse"]
    # ... the refused one failed with the exception the function got, the other did not
    assert [s["attributes"].get("error.type") for s in calls] == [None, "Refusal"]


CALLS_ITS_COLLECTOR = """
import urllib.request

def handler(event, context):
    try:  # as an OpenTelemetry SDK of the function's own exports to the same collector
        urllib.request.urlopen(event["collector"], data=b"", timeout=2).read()
    except OSError:
        pass
    urllib.request.urlopen(event["other"] + "/status/200", timeout=5).read()
    return {"statusCode": 200}
"""


def test_a_call_to_a_collector_named_by_an_http_url_without_a_port_is_lambdawrap_s_own(tmp_path):
    # GIVEN the logs' collector named as http://host/path, its port the scheme's (80), and a
    # function that calls that URL, then another server
    task = write_function(tmp_path / "task", CALLS_ITS_COLLECTOR)
    collector = "http://127.0.0.1/v1/logs"
    with recording_server() as other, instrumented(task, env={"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": collector, "OTEL_EXPORTER_OTLP_TIMEOUT": "2"}, timeout_s=30) as (emu, rx):
        # WHEN it runs
        assert emu.invoke({"collector": collector, "other": other.url}).json() == {"statusCode": 200}
        emu.stop()
    # THEN the call to the collector has no span, as lambdawrap's own traffic (before: it was
    # taken for port 4318, and traced), and the other call has its own
    calls = [s["attributes"].get("server.port") for s in rx.spans() if s["kind"] in OUTGOING]
    assert calls == [int(other.url.rsplit(":", 1)[1])], calls


CARRIES_NONE = """
import urllib.request

def handler(event, context):
    urllib.request.urlopen(event["target"] + "/status/200", timeout=5).read()
    return {"statusCode": 200}
"""


def test_a_request_carries_no_context_with_none_among_the_propagators(tmp_path):
    # GIVEN a function that makes a request, and OTEL_PROPAGATORS=tracecontext,none
    task = write_function(tmp_path / "task", CARRIES_NONE)
    with recording_server() as http, instrumented(task, env={"OTEL_PROPAGATORS": "tracecontext,none"}, timeout_s=30) as (emu, rx):
        # WHEN it runs
        assert emu.invoke({"target": http.url}).json() == {"statusCode": 200}
        # THEN the request is traced, and carries no trace context
        rx.wait_for_spans(lambda s: s["kind"] in OUTGOING, timeout=30)
        lines = emu.log_lines("function")
    (request,) = http.requests
    assert not {"traceparent", "tracestate", "baggage", "x-amzn-trace-id"} & set(request["headers"]), request["headers"]
    assert not [line for line in lines if "OTEL_PROPAGATORS" in line], lines


SENDS_TO_EVERY_CARRIER = """
import json, os
import boto3

def handler(event, context):
    args = dict(endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    sqs, sfn = boto3.client("sqs", **args), boto3.client("stepfunctions", **args)
    queue = sqs.create_queue(QueueName="carried")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="order 9")
    received = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"])["Messages"][0]
    machine = sfn.create_state_machine(name="carried", definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}), roleArn="arn:aws:iam::123456789012:role/orders")["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"order": 9}))["executionArn"]
    # The recording server stands in for Lambda's Invoke endpoint: it answers 200 to any call.
    boto3.client("lambda", **dict(args, endpoint_url=event["http"])).invoke(FunctionName="orders", Payload=b"{}")
    return {"attributes": sorted(received.get("MessageAttributes", {})), "input": sfn.describe_execution(executionArn=execution)["input"]}
"""


@pytest.mark.parametrize("propagators", ["none", "baggage", "tracecontext"])
def test_aws_payloads_carry_a_trace_context_only_where_the_propagators_carry_one(tmp_path, moto, propagators):
    # GIVEN a function that sends an SQS message, starts a Step Functions execution and invokes
    # a function, with OTEL_PROPAGATORS carrying no trace context (none, baggage alone) or one
    task = write_function(tmp_path / "task", SENDS_TO_EVERY_CARRIER)
    with recording_server() as http, instrumented(task, env={"MOTO_URL": moto.endpoint, "OTEL_PROPAGATORS": propagators}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        invocation_span(rx, result.request_id)
        client_context = [r["headers"].get("x-amz-client-context") for r in http.requests]
    carried = propagators == "tracecontext"
    # THEN without one, the message, the input and the invoke go as written (before: each
    # carried a traceparent all the same); with one, each carries it
    assert (result.json()["attributes"] == ["traceparent"]) is carried and (result.json()["attributes"] == []) is not carried, result.json()
    assert (result.json()["input"] == json.dumps({"order": 9})) is not carried, result.json()
    assert (client_context != [None]) is carried, client_context


def test_xray_lambda_among_the_propagators_carries_the_xray_header(tmp_path):
    # GIVEN OTEL_PROPAGATORS naming the X-Ray propagator's Lambda form, as AWS's guides have it,
    # in a function with X-Ray active tracing (its context, sampled, is the parent: with
    # Sampled=0 the invocation is not sampled, as OpenTelemetry's xray-lambda decides)
    task = write_function(tmp_path / "task", CARRIES_NONE)
    sampled = "Root=1-6759e988-0123456789abcdef01234567;Parent=1122334455667788;Sampled=1"
    with recording_server() as http, instrumented(task, env={"OTEL_PROPAGATORS": "xray-lambda"}, timeout_s=30) as (emu, rx):
        # WHEN the function makes a request
        assert emu.invoke({"target": http.url}, trace_header=sampled).json() == {"statusCode": 200}
        (client,) = rx.wait_for_spans(lambda s: s["kind"] in OUTGOING, timeout=30)
        lines = emu.log_lines("extension") + emu.log_lines("function")
    # THEN the request carries the X-Ray header of its client span, as with xray (before: the
    # name was ignored as unknown, and the request carried nothing)
    (request,) = http.requests
    header = request["headers"].get("x-amzn-trace-id") or ""
    assert f"Root=1-{client['trace_id'][:8]}-{client['trace_id'][8:]};Parent={client['span_id']}" in header, (header, client)
    assert "traceparent" not in request["headers"]
    assert not [line for line in lines if "OTEL_PROPAGATORS" in line], lines


ECHO = """
def handler(event, context):
    return {"statusCode": 200}
"""


@pytest.mark.parametrize("propagators, parent_is_xray", [("xray-lambda", True), ("tracecontext,baggage,xray-lambda", False), ("", False)])
def test_otel_propagators_naming_xray_lambda_first_gives_lambda_s_x_ray_context_the_parent(tmp_path, propagators, parent_is_xray):
    # GIVEN an HTTP request with a W3C traceparent into a function with X-Ray active tracing
    # (the platform's trace header, sampled) WHEN OTEL_PROPAGATORS is xray-lambda alone, the
    # conventions' way to give X-Ray's context priority, THEN that context is the parent and the
    # request's a link (before: the request's always was); with tracecontext before xray-lambda,
    # or by default, the request's is the parent and X-Ray's the link
    task = write_function(tmp_path / "task", ECHO)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    xray = "Root=1-6759e988-0123456789abcdef01234567;Parent=1122334455667788;Sampled=1"
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    event["headers"] = {**event.get("headers", {}), "traceparent": traceparent}
    with instrumented(task, env={"OTEL_PROPAGATORS": propagators} if propagators else {}, timeout_s=30) as (emu, rx):
        result = emu.invoke(event, trace_header=xray)
        assert result.json() == {"statusCode": 200}
        span = invocation_span(rx, result.request_id)
    ids = {"xray": ("6759e9880123456789abcdef01234567", "1122334455667788"), "w3c": ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")}
    parent, link = (ids["xray"], ids["w3c"]) if parent_is_xray else (ids["w3c"], ids["xray"])
    assert (span["trace_id"], span["parent_span_id"]) == parent
    assert [(link_["trace_id"], link_["span_id"]) for link_ in span["links"]] == [link]


PAYLOAD_CARRIES_ON = """
import urllib.request

def handler(event, context):
    urllib.request.urlopen(event["target"] + "/status/200", timeout=5).read()
    return "ok"
"""


def test_with_tracecontext_before_xray_lambda_a_payload_s_headers_parent_the_invocation(tmp_path):
    # GIVEN OTEL_PROPAGATORS=tracecontext,baggage,xray-lambda (the conventions' example) and a
    # direct invocation whose payload carries the caller's context in `headers` (where
    # OpenTelemetry's botocore instrumentation puts an Invoke's), Lambda's header unsampled
    # WHEN it runs THEN that context is the parent and its baggage goes on, as OpenTelemetry's
    # Lambda instrumentation extracts it from any event's headers (before: X-Ray's unsampled
    # context won, and the invocation was sampled out)
    task = write_function(tmp_path / "task", PAYLOAD_CARRIES_ON)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    unsampled = "Root=1-6759e988-0123456789abcdef01234567;Parent=1122334455667788;Sampled=0"
    with recording_server() as http, instrumented(task, env={"OTEL_PROPAGATORS": "tracecontext,baggage,xray-lambda"}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"target": http.url, "headers": {"traceparent": traceparent, "baggage": "tenant=acme"}}, trace_header=unsampled)
        assert result.json() == "ok"
        span = invocation_span(rx, result.request_id)
    assert (span["trace_id"], span["parent_span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert http.requests[-1]["headers"]["baggage"] == "tenant=acme"


def test_with_xray_lambda_an_invocation_x_ray_did_not_sample_is_sampled_out_and_counted(tmp_path):
    # GIVEN xray-lambda and the platform's trace header with Sampled=0 (active tracing off, or
    # X-Ray's sampling said no) WHEN the function runs THEN no span, one sampled_out drop: the
    # parent-based sampler follows X-Ray's decision, as with OpenTelemetry's propagator (the
    # test fails if lambdawrap were to make its own root, sampled)
    task = write_function(tmp_path / "task", ECHO)
    unsampled = "Root=1-6759e988-0123456789abcdef01234567;Parent=1122334455667788;Sampled=0"
    with instrumented(task, env={"OTEL_PROPAGATORS": "xray-lambda"}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"order": 7}, trace_header=unsampled)
        assert result.json() == {"statusCode": 200}
        emu.wait_idle()
        rx.wait_for_metrics(lambda p: p["name"] == "lambdawrap.dropped" and p["attributes"].get("reason") == "sampled_out", timeout=30)
    assert not [s for s in rx.spans() if s["attributes"].get("faas.invocation_id") == result.request_id]
    # ... and the init's span, which joins the first invocation's trace
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "sampled_out"}) == 2


CARRIES_ON = """
import urllib.request
from opentelemetry import trace

def handler(event, context):
    with trace.get_tracer("app").start_as_current_span("work"):
        urllib.request.urlopen(event["headers"]["x-target"] + "/status/200", timeout=5).read()
    return {"statusCode": 200}
"""


def test_the_callers_tracestate_and_baggage_travel_on_with_the_trace(tmp_path):
    # W3C Trace Context: a vendor receiving tracestate MUST send it on to outgoing requests.
    task = write_function(tmp_path / "task", CARRIES_ON)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):  # the API: the suite's own
        event = {
            "version": "2.0", "routeKey": "GET /orders", "rawPath": "/orders", "rawQueryString": "",
            "headers": {"traceparent": traceparent, "tracestate": state, "baggage": "tenant=acme", "x-target": http.url},
            "requestContext": {"http": {"method": "GET", "path": "/orders", "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1", "userAgent": "t"}, "domainName": "api.example.com", "stage": "$default", "requestId": "r", "routeKey": "GET /orders", "accountId": "1", "apiId": "a", "timeEpoch": 0, "time": "x"},
            "isBase64Encoded": False,
        }
        result = emu.invoke(event)
        assert result.json() == {"statusCode": 200}
        invocation = invocation_span(rx, result.request_id)
        work = rx.wait_for_spans(lambda s: s["name"] == "work", timeout=20)[0]
        call = rx.wait_for_spans(lambda s: s["kind"] in OUTGOING and s["trace_id"] == invocation["trace_id"], timeout=20)[0]
        init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), timeout=20)[0]
    # THEN the invocation span and the spans under it, the init's among them, keep the caller's
    # tracestate (before: the init span had none) ...
    assert invocation["parent_span_id"] == "b7ad6b7169203331" and init["parent_span_id"] == invocation["span_id"]
    assert invocation["trace_state"] == work["trace_state"] == call["trace_state"] == init["trace_state"] == state
    # ... and the outgoing request carries it on, with the caller's baggage
    headers = http.requests[-1]["headers"]
    assert headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert headers["tracestate"] == state and headers["baggage"] == "tenant=acme"


SEES_ITS_BAGGAGE = """
import json, urllib.request
from opentelemetry import baggage, trace

def handler(event, context):
    with trace.get_tracer("app").start_as_current_span("work"):
        urllib.request.urlopen(event["headers"]["x-target"] + "/status/200", timeout=5).read()
    return {"statusCode": 200, "body": json.dumps(dict(baggage.get_all()))}
"""


@pytest.mark.parametrize("carried_in", ["request headers", "client context"])
def test_the_callers_baggage_travels_on_without_a_traceparent(tmp_path, carried_in):
    # GIVEN a caller that sends baggage but no W3C trace context (one traced by X-Ray, or none),
    # in its request's headers or in a Lambda Invoke's client context
    task = write_function(tmp_path / "task", SEES_ITS_BAGGAGE)
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    plain = {name: value for name, value in event["headers"].items() if name not in ("traceparent", "tracestate", "baggage")}
    sent = {"baggage": "tenant=acme", "tracestate": "congo=t61rcWkgMzE"}
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        # WHEN the function is invoked
        if carried_in == "request headers":
            result = emu.invoke(dict(event, headers=dict(plain, **sent, **{"x-target": http.url})))
        else:
            result = emu.invoke(dict(event, headers=dict(plain, **{"x-target": http.url})), client_context={"custom": sent})
        invocation = invocation_span(rx, result.request_id)
    # THEN the function sees the caller's baggage, and its request carries it on, as
    # OpenTelemetry's baggage propagator reads it apart from the trace context (before: it was
    # read only beside a traceparent); a tracestate, which belongs to one, does not go
    assert json.loads(result.json()["body"]) == {"tenant": "acme"}
    headers = http.requests[-1]["headers"]
    assert headers.get("baggage") == "tenant=acme" and "tracestate" not in headers
    assert headers["traceparent"].split("-")[1] == invocation["trace_id"] and not invocation["parent_span_id"]


SNS_CARRIES_ON = """
import json, urllib.request

def handler(event, context):
    target = json.loads(event["Records"][0]["Sns"]["Message"])["target"]
    urllib.request.urlopen(target + "/status/200", timeout=5).read()
    return "ok"
"""


def test_an_sns_message_s_baggage_travels_on_with_its_trace(tmp_path):
    # GIVEN an SNS message carrying the context in its attributes, as lambdawrap's producer
    # writes it (traceparent, tracestate and baggage: it spends three of SNS's ten attributes)
    task = write_function(tmp_path / "task", SNS_CARRIES_ON)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    attributes = {"traceparent": traceparent, "tracestate": "rojo=00f067aa0ba902b7", "baggage": "tenant=acme"}
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        message = {"TopicArn": "arn:aws:sns:us-east-1:123456789012:orders", "MessageId": "m1", "Message": json.dumps({"target": http.url}), "MessageAttributes": {k: {"Type": "String", "Value": v} for k, v in attributes.items()}}
        # WHEN the function consumes it and makes a request
        result = emu.invoke({"Records": [{"EventSource": "aws:sns", "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:orders:s", "Sns": message}]})
        assert result.json() == "ok"
        invocation = invocation_span(rx, result.request_id)
        rx.wait_for_spans(lambda s: s["kind"] in OUTGOING and s["trace_id"] == invocation["trace_id"], timeout=20)
    # THEN the request carries the message's trace, tracestate and baggage on (before: the
    # baggage was dropped at this hop)
    assert invocation["parent_span_id"] == "b7ad6b7169203331"
    headers = http.requests[-1]["headers"]
    assert headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert headers["tracestate"] == "rojo=00f067aa0ba902b7" and headers["baggage"] == "tenant=acme"


SETS_MUCH_BAGGAGE = """
import requests
from opentelemetry import baggage, context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator

def handler(event, context):
    entries = None
    for i in range(190):
        entries = baggage.set_baggage(f"k{i}", "v" * 40, context=entries)
    entries = baggage.set_baggage("big", "x" * 5000, context=entries)
    token = otel_context.attach(entries)
    try:
        expected = {}
        W3CBaggagePropagator().inject(expected)
        requests.get(event["http"] + "/status/200?via=baggage", timeout=5)
    finally:
        otel_context.detach(token)
    return expected
"""


def test_the_functions_baggage_goes_within_w3c_baggage_limits(tmp_path):
    # GIVEN a function whose OpenTelemetry baggage passes W3C Baggage's limits: 191 members,
    # one of 5,004 characters, ~13 KB in all
    task = write_function(tmp_path / "task", SETS_MUCH_BAGGAGE)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):  # the API: the suite's own
        result = emu.invoke({"http": http.url})
        invocation_span(rx, result.request_id)
    expected = result.json()["baggage"]
    sent = http.requests[-1]["headers"]["baggage"]
    # THEN the request carries what OpenTelemetry's own propagator would: the members within
    # 4,096 characters each, 180 at most, 8,192 characters in all (before: every member, a header
    # servers refuse: nginx by default holds 8 KiB a header line)
    assert sent == expected and len(sent) <= 8192 and "big=" not in sent, (len(sent), len(expected))


PRESIGNS = """
import os
import boto3, requests

s3 = boto3.client("s3", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")

def handler(event, context):
    s3.create_bucket(Bucket="presigned")
    s3.put_object(Bucket="presigned", Key="k", Body=b"hello")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "k"})
    s3.generate_presigned_post("presigned", "upload")
    body = requests.get(url, timeout=5).text
    requests.get(event["http"] + "/status/200?after=presign", timeout=5)
    return {"body": body}
"""


def test_a_presigned_url_is_no_call_and_the_calls_after_it_are_traced(tmp_path, moto):
    # GIVEN a function that presigns (botocore builds and signs the request, never sends it)
    task = write_function(tmp_path / "task", PRESIGNS)
    with recording_server() as http, instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        for _ in range(2):
            result = emu.invoke({"http": http.url})
            assert result.json() == {"body": "hello"}
            invocation = invocation_span(rx, result.request_id)
            # THEN the presigns are no spans, and the HTTP calls after them are traced and carry
            # the context (in this invocation and the next)
            calls = children(rx, invocation, 4)
            assert [s["name"] for s in calls] == ["S3.CreateBucket", "S3.PutObject", "GET", "GET"]
            assert http.requests[-1]["headers"].get("traceparent") == f"00-{invocation['trace_id']}-{calls[-1]['span_id']}-01"
        assert not [s for s in rx.spans() if s["name"] == "S3.GetObject"]


SENDS_AGAIN = """
import urllib.request
import httpx, requests

USERS = "00-11111111111111111111111111111111-2222222222222222-01"

def handler(event, context):
    base = event["http"]
    # A retry loop over one request object: each library's, sent twice
    again = urllib.request.Request(base + "/status/200?via=urllib")
    prepared = requests.Request("GET", base + "/status/200?via=requests").prepare()
    with requests.Session() as session, httpx.Client() as client:
        built = client.build_request("GET", base + "/status/200?via=httpx")
        for _ in range(2):
            urllib.request.urlopen(again, timeout=5).read()
            session.send(prepared, timeout=5)
            client.send(built)
        # httpx sends each redirect's request (a copy of the first, headers and all) as its own
        client.get(base + "/redirect", follow_redirects=True)
    # ... and the function's own traceparent, on a request sent twice, stays its own
    own = urllib.request.Request(base + "/status/200?via=own", headers={"Traceparent": USERS})
    for _ in range(2):
        urllib.request.urlopen(own, timeout=5).read()
    urllib.request.urlopen("file://" + __file__).read()  # no HTTP request: no span
    return {"statusCode": 200}
"""


def test_a_request_sent_again_names_its_own_span_downstream(tmp_path):
    task = write_function(tmp_path / "task", SENDS_AGAIN)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"statusCode": 200}
        invocation = invocation_span(rx, result.request_id)
        calls = children(rx, invocation, 10)
    # THEN each send told the server its own client span, not the first send's
    # (the redirect's two hops, /redirect then /status/200, are matched by their whole path)
    for ending, sends in (("?via=urllib", 2), ("?via=requests", 2), ("?via=httpx", 2), ("/redirect", 1), ("/status/200", 1)):
        spans = [s["span_id"] for s in calls if s["attributes"]["url.full"].endswith(ending)]
        seen = [r["headers"]["traceparent"] for r in http.requests if r["path"].endswith(ending)]
        assert len(spans) == sends and seen == [f"00-{invocation['trace_id']}-{span}-01" for span in spans], (ending, seen, spans)
    assert [r["headers"]["traceparent"] for r in http.requests if r["path"].endswith("via=own")] == ["00-11111111111111111111111111111111-2222222222222222-01"] * 2
    assert len([s for s in rx.spans() if s["kind"] in OUTGOING]) == 10  # the file:// read is none


KEPT_ACROSS_INVOCATIONS = """
import os, urllib.request
import httpx, requests

BASE = os.environ["HTTP_URL"]
# Request objects made once, at import, and sent by every invocation
KEPT = urllib.request.Request(BASE + "/status/200?via=urllib")
PREPARED = requests.Request("GET", BASE + "/status/200?via=requests").prepare()
CLIENT = httpx.Client()
BUILT = CLIENT.build_request("GET", BASE + "/status/200?via=httpx")
SESSION = requests.Session()

def handler(event, context):
    urllib.request.urlopen(KEPT, timeout=5).read()
    SESSION.send(PREPARED, timeout=5)
    CLIENT.send(BUILT)
    return {"statusCode": 200}
"""


@pytest.mark.parametrize("propagators", ["", "baggage"])
def test_a_request_kept_across_invocations_carries_only_the_current_context(tmp_path, propagators):
    # GIVEN request objects the function keeps and sends in every invocation, and invocations
    # whose callers send a tracestate and baggage, then another baggage, then neither; with
    # OTEL_PROPAGATORS=baggage too, where no traceparent marks a request as sent before
    trace = lambda n: f"{n:032x}"
    callers = [
        {"traceparent": f"00-{trace(1)}-{1:016x}-01", "tracestate": "first=1", "baggage": "tenant=a"},
        {"traceparent": f"00-{trace(2)}-{2:016x}-01", "baggage": "tenant=b"},
        {"traceparent": f"00-{trace(3)}-{3:016x}-01", "tracestate": "third=3"},
    ]
    task = write_function(tmp_path / "task", KEPT_ACROSS_INVOCATIONS)
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    plain = {name: value for name, value in event["headers"].items() if name not in ("traceparent", "tracestate", "baggage")}
    with recording_server() as http, instrumented(task, env={"HTTP_URL": http.url, **({"OTEL_PROPAGATORS": propagators} if propagators else {})}, timeout_s=30) as (emu, rx):
        for headers in callers:
            assert emu.invoke(dict(event, headers=dict(plain, **headers))).json() == {"statusCode": 200}
    # THEN each send carries its own invocation's trace, and that invocation's tracestate and
    # baggage only: none of an earlier caller's left on the object
    sent = [(r["headers"].get("traceparent", "")[3:35], r["headers"].get("tracestate"), r["headers"].get("baggage")) for r in http.requests]
    if propagators == "baggage":
        expected = [("", None, caller.get("baggage")) for caller in callers for _ in range(3)]
    else:
        expected = [(trace(n + 1), caller.get("tracestate"), caller.get("baggage")) for n, caller in enumerate(callers) for _ in range(3)]
    assert sent == expected, sent


SETS_ITS_OWN_BAGGAGE = """
import urllib3, requests

def handler(event, context):
    base = event["http"]
    # New requests each time, with the baggage and tracestate the function itself sets
    requests.get(base + "/status/200?via=requests", headers={"baggage": event["baggage"], "tracestate": event["tracestate"]}, timeout=5)
    urllib3.PoolManager().request("GET", base + "/status/200?via=urllib3", headers={"baggage": event["baggage"]})
    return {"statusCode": 200}
"""


def test_a_new_request_s_own_baggage_and_tracestate_are_the_function_s_even_when_lambdawrap_wrote_the_same_before(tmp_path):
    # GIVEN a first invocation whose caller sent baggage tenant=acme (lambdawrap carries it on),
    # then invocations whose function sets that same value on new requests itself, once with
    # no caller baggage and once with another caller's
    task = write_function(tmp_path / "task", SETS_ITS_OWN_BAGGAGE)
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    plain = {name: value for name, value in event["headers"].items() if name not in ("traceparent", "tracestate", "baggage")}
    caller = {"traceparent": f"00-{1:032x}-{1:016x}-01", "tracestate": "vendor=1", "baggage": "tenant=acme"}
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        for headers in (caller, {}, dict(caller, baggage="env=staging", tracestate="vendor=2")):
            function_sets = {"http": http.url, "baggage": "tenant=acme", "tracestate": "vendor=1"}
            assert emu.invoke(dict(event, headers=dict(plain, **headers), body=None, **function_sets)).json() == {"statusCode": 200}
    # THEN every request carries the function's own values, never removed nor replaced by the
    # caller's (before: the second invocation's went without baggage and tracestate, the
    # third's with the caller's env=staging and vendor=2); where it set none, the caller's
    sent = [(r["path"].rsplit("=", 1)[1], r["headers"].get("baggage"), r["headers"].get("tracestate")) for r in http.requests]
    expected = []
    for caller_state in ("vendor=1", None, "vendor=2"):
        expected += [("requests", "tenant=acme", "vendor=1"), ("urllib3", "tenant=acme", caller_state)]
    assert sent == expected, sent


COPIES_ACROSS_REGIONS = """
import os
import boto3, requests

def ec2(region):
    return boto3.client("ec2", endpoint_url=os.environ["MOTO_URL"], region_name=region, aws_access_key_id="test", aws_secret_access_key="test")

def handler(event, context):
    source = ec2("us-west-2")
    volume = source.create_volume(AvailabilityZone="us-west-2a", Size=1)["VolumeId"]
    snapshot = source.create_snapshot(VolumeId=volume)["SnapshotId"]
    # botocore presigns a copy of this call's request for the source region (so does RDS's)
    ec2("us-east-1").copy_snapshot(SourceSnapshotId=snapshot, SourceRegion="us-west-2")
    requests.get(event["http"] + "/status/200?after=copy", timeout=5)
    return {"statusCode": 200}
"""


def test_a_cross_region_copy_leaves_the_calls_after_it_traced(tmp_path, moto):
    task = write_function(tmp_path / "task", COPIES_ACROSS_REGIONS)
    with recording_server() as http, instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"statusCode": 200}
        invocation = invocation_span(rx, result.request_id)
        calls = children(rx, invocation, 4)
    assert [s["name"] for s in calls] == ["EC2.CreateVolume", "EC2.CreateSnapshot", "EC2.CopySnapshot", "GET"]
    assert calls[2]["attributes"]["retry_attempts"] == 0
    assert http.requests[-1]["headers"].get("traceparent") == f"00-{invocation['trace_id']}-{calls[-1]['span_id']}-01"


AFTER_CALL_RAISES = """
import os, urllib.request
import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")


class Refused(Exception):
    pass


def refuse(**kwargs):
    raise Refused("the function's own check of the answer")


s3.meta.events.register("after-call.s3.ListBuckets", refuse)  # more specific: runs before ours


def handler(event, context):
    try:
        s3.list_buckets()
    except Refused:
        pass
    return {"status": urllib.request.urlopen(event["http"] + "/status/200?after=refused", timeout=5).status}
"""


def test_a_call_whose_after_call_handler_raises_leaves_the_calls_after_it_traced(tmp_path, moto):
    # GIVEN a function whose own after-call handler raises (botocore then calls no handler after
    # it, ours included, nor any after-call-error)
    task = write_function(tmp_path / "task", AFTER_CALL_RAISES)
    with recording_server() as http, instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        for _ in range(2):
            result = emu.invoke({"http": http.url})
            assert result.json() == {"status": 200}
            invocation = invocation_span(rx, result.request_id)
            # THEN the HTTP call after it is traced and carries the context, in this invocation
            # and the next
            calls = children(rx, invocation, 2)
            (call,) = [s for s in calls if s["name"] == "GET"]
            assert http.requests[-1]["headers"].get("traceparent") == f"00-{invocation['trace_id']}-{call['span_id']}-01"
            # AND the AWS call itself is a span, as answered, ended before the call after it
            (aws,) = [s for s in calls if s["name"] == "S3.ListBuckets"]
            assert aws["attributes"]["http.response.status_code"] == 200 and aws["status_code"] != 2
            assert "error.type" not in aws["attributes"] and aws["end_time_unix_nano"] <= call["start_time_unix_nano"]


AFTER_CALL_ERROR_RAISES = """
import botocore.config, boto3

# Nothing listens there: the call fails (EndpointConnectionError), once, without retries.
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test",
                  config=botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=5))


class Refused(Exception):
    pass


def refuse(**kwargs):
    raise Refused("the function's own check of the failure")


s3.meta.events.register("after-call-error.s3.ListBuckets", refuse)


def handler(event, context):
    try:
        s3.list_buckets()
    except Refused:
        return "refused"
"""


def test_a_failed_call_whose_after_call_error_handler_raises_is_a_failed_span(tmp_path):
    # GIVEN a function whose own after-call-error handler raises, cutting ours out
    task = write_function(tmp_path / "task", AFTER_CALL_ERROR_RAISES)
    with instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        assert result.json() == "refused"
        # THEN the call is a span all the same, failed with the connection's error
        (aws,) = children(rx, invocation_span(rx, result.request_id), 1)
        assert aws["name"] == "S3.ListBuckets" and aws["attributes"]["error.type"] == "EndpointConnectionError"
        assert aws["status_code"] == 2 and aws["attributes"]["retry_attempts"] == 0


INSTRUMENTED_BY_THE_FUNCTION = """
import requests
from opentelemetry.instrumentation.requests import RequestsInstrumentor

RequestsInstrumentor().instrument()  # OpenTelemetry's own, which wraps its call in suppress_http_instrumentation()

def handler(event, context):
    return {"status": requests.get(event["http"] + "/status/200?via=contrib", timeout=5).status_code}
"""


def test_a_request_traced_by_opentelemetrys_own_instrumentation_is_one_span(tmp_path):
    # GIVEN a function that enabled OpenTelemetry's requests instrumentation (lambdawrap's
    # requests hook steps aside; the urllib3 call under it is suppressed by OpenTelemetry's key)
    task = write_function(tmp_path / "task", INSTRUMENTED_BY_THE_FUNCTION)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"status": 200}
        invocation = invocation_span(rx, result.request_id)
        (theirs,) = children(rx, invocation, 1)
        assert emu.wait_idle(30)
        # THEN the request is their one span: lambdawrap's urllib3 hook added none below it
        clients = [s for s in rx.spans() if s["kind"] in OUTGOING]
        assert [s["span_id"] for s in clients] == [theirs["span_id"]], clients
        assert http.requests[0]["headers"]["traceparent"] == f"00-{invocation['trace_id']}-{theirs['span_id']}-01"


OWN_TRACEPARENT = """
import urllib.request
import httpx, requests

OWN = "00-11111111111111111111111111111111-2222222222222222-01"

def handler(event, context):
    base = event["headers"]["x-target"]
    requests.get(base + "/status/200?via=requests", headers={"traceparent": OWN}, timeout=5)
    urllib.request.urlopen(urllib.request.Request(base + "/status/200?via=urllib", headers={"traceparent": OWN}), timeout=5).read()
    httpx.get(base + "/status/200?via=httpx", headers={"traceparent": OWN, "tracestate": "own=1"})
    requests.get(base + "/status/200?via=plain", timeout=5)
    return {"statusCode": 200}
"""


@pytest.mark.parametrize("propagators", ["tracecontext,baggage", "tracecontext,xray"])
def test_the_functions_own_traceparent_goes_without_the_callers_tracestate(tmp_path, propagators):
    # GIVEN an invocation whose caller sent a tracestate, and a function that sets its own
    # traceparent on some requests (kept: docs/outgoing-calls.md)
    task = write_function(tmp_path / "task", OWN_TRACEPARENT)
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    with recording_server() as http, instrumented(task, env={"OTEL_PROPAGATORS": propagators}, timeout_s=30) as (emu, rx):
        headers = dict(event["headers"], traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate="congo=t61", **{"x-target": http.url})
        assert emu.invoke(dict(event, headers=headers)).json() == {"statusCode": 200}
    sent = {r["path"].partition("via=")[2]: (r["headers"].get("traceparent"), r["headers"].get("tracestate")) for r in http.requests}
    own = "00-11111111111111111111111111111111-2222222222222222-01"
    # THEN a request with the function's own traceparent carries no tracestate of another trace
    # (its own, when it set one), and the others carry the caller's with the invocation's trace
    assert sent["requests"] == sent["urllib"] == (own, None), sent
    assert sent["httpx"] == (own, "own=1"), sent
    assert sent["plain"][0].split("-")[1] == "0af7651916cd43dd8448eb211c80319c" and sent["plain"][1] == "congo=t61", sent
    # ...and, with the X-Ray propagator, no X-Ray header naming the invocation's trace beside the
    # function's own traceparent (before: one, so the next service saw two traces)
    xray = {r["path"].partition("via=")[2]: r["headers"].get("x-amzn-trace-id") for r in http.requests}
    if "xray" in propagators:
        assert xray["requests"] is xray["urllib"] is xray["httpx"] is None, xray
        assert xray["plain"].startswith("Root=1-0af76519-16cd43dd8448eb211c80319c;"), xray
    else:
        assert set(xray.values()) == {None}, xray


OWN_XRAY_HEADER = """
import http.client, os, urllib.parse, urllib.request
import httpx, requests

OTHER = "Root=1-66666666-777777777777777777777777;Parent=8888888888888888;Sampled=1"

def handler(event, context):
    base = event["http"]
    requests.get(base + "/status/200?via=requests", headers={"X-Amzn-Trace-Id": OTHER}, timeout=5)
    urllib.request.urlopen(urllib.request.Request(base + "/status/200?via=urllib", headers={"X-Amzn-Trace-Id": OTHER}), timeout=5).read()
    httpx.get(base + "/status/200?via=httpx", headers={"x-amzn-trace-id": OTHER})
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=5)
    conn.request("GET", "/status/200?via=http.client", headers={"X-Amzn-Trace-Id": OTHER})
    conn.getresponse().read()
    conn.close()
    requests.get(base + "/status/200?via=forwarded", headers={"X-Amzn-Trace-Id": os.environ["_X_AMZN_TRACE_ID"]}, timeout=5)
    return {"statusCode": 200}
"""


def test_with_xray_propagation_the_functions_own_xray_header_of_another_trace_goes_without_a_traceparent(tmp_path):
    # GIVEN X-Ray propagation, an invocation under an X-Ray trace, and a function that sets an
    # X-Amzn-Trace-Id of another trace on some requests, and forwards its own _X_AMZN_TRACE_ID on one
    task = write_function(tmp_path / "task", OWN_XRAY_HEADER)
    invocation_trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    with recording_server() as http, instrumented(task, env={"OTEL_PROPAGATORS": "tracecontext,baggage,xray"}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url}, trace_header=invocation_trace)
        assert result.json() == {"statusCode": 200}
        invocation = invocation_span(rx, result.request_id)
        clients = {s["attributes"]["url.full"].partition("via=")[2]: s for s in children(rx, invocation, 5)}
    sent = {r["path"].partition("via=")[2]: r["headers"] for r in http.requests}
    other = "Root=1-66666666-777777777777777777777777;Parent=8888888888888888;Sampled=1"
    # THEN a request carrying another trace's X-Ray header goes with it alone, as without the
    # layer (before: a traceparent of the invocation's trace beside it, so the next service
    # followed one trace or the other by the header it reads), and each is still a client span
    for via in ("requests", "urllib", "httpx", "http.client"):
        assert sent[via].get("x-amzn-trace-id") == other and "traceparent" not in sent[via], (via, sent[via])
        assert clients[via]["trace_id"] == invocation["trace_id"] == "5759e988bd862e3fe1be46a994272793"
    # ...and one forwarding the invocation's own X-Ray header (the same trace) also names the
    # client span in a traceparent
    forwarded = sent["forwarded"]
    assert forwarded["x-amzn-trace-id"].startswith("Root=1-5759e988-bd862e3fe1be46a994272793;")
    assert forwarded["traceparent"] == f"00-{invocation['trace_id']}-{clients['forwarded']['span_id']}-01", forwarded


@pytest.mark.parametrize("propagators", ["tracecontext,baggage", "tracecontext,baggage,xray"])
def test_an_xray_header_the_function_sends_goes_with_a_traceparent_unless_xray_is_propagated(tmp_path, propagators):
    # GIVEN an invocation X-Ray did not sample (Lambda's header says Sampled=0: its trace is not
    # the invocation's), and a function that sends X-Ray headers of its own: Lambda's forwarded,
    # and (without X-Ray propagation) another one, as the X-Ray SDK under Powertools' Tracer
    # adds to every requests call
    task = write_function(tmp_path / "task", OWN_XRAY_HEADER)
    unsampled = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
    with recording_server() as http, instrumented(task, env={"OTEL_PROPAGATORS": propagators}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url}, trace_header=unsampled)
        assert result.json() == {"statusCode": 200}
        invocation = invocation_span(rx, result.request_id)
        clients = {s["attributes"]["url.full"].partition("via=")[2]: s for s in children(rx, invocation, 5)}
    assert invocation["trace_id"] != "5759e988bd862e3fe1be46a994272793"
    sent = {r["path"].partition("via=")[2]: r["headers"] for r in http.requests}
    # THEN without X-Ray propagation each X-Ray header goes as the function wrote it, with our
    # traceparent beside it, as beside OpenTelemetry's instrumentations (before: no traceparent,
    # and the next service started a trace of its own); with it, a header naming another trace
    # than the invocation's goes alone (a request naming two traces)
    other = "Root=1-66666666-777777777777777777777777;Parent=8888888888888888;Sampled=1"
    assert sent["forwarded"]["x-amzn-trace-id"] == unsampled
    for via in ("requests", "urllib", "httpx", "http.client", "forwarded"):
        assert sent[via].get("x-amzn-trace-id") == (unsampled if via == "forwarded" else other), (via, sent[via])
        expected = None if "xray" in propagators.split(",") else f"00-{invocation['trace_id']}-{clients[via]['span_id']}-01"
        assert sent[via].get("traceparent") == expected, (via, sent[via])


OWN_XRAY_HEADER_ON_AWS = """
import os
import boto3

OTHER = "Root=1-66666666-777777777777777777777777;Parent=8888888888888888;Sampled=1"

def set_own(params, **kwargs):
    params["headers"]["X-Amzn-Trace-Id"] = OTHER

def handler(event, context):
    options = dict(endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    boto3.client("dynamodb", **options).list_tables(Limit=1)
    own = boto3.client("dynamodb", **options)
    own.meta.events.register("before-call.dynamodb.ListTables", set_own)
    own.list_tables(Limit=2)
    return {}
"""


def test_with_xray_propagation_an_aws_call_s_own_xray_header_is_sent_as_the_function_wrote_it(tmp_path, moto):
    # GIVEN X-Ray propagation, an invocation under an X-Ray trace, and a function that sets an
    # X-Amzn-Trace-Id of another trace on one AWS call (a before-call handler of its own)
    task = write_function(tmp_path / "task", OWN_XRAY_HEADER_ON_AWS)
    invocation_trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    before = len(moto.requests())
    with instrumented(task, env={"MOTO_URL": moto.endpoint, "OTEL_PROPAGATORS": "tracecontext,baggage,xray"}, timeout_s=30) as (emu, rx):
        result = emu.invoke({}, trace_header=invocation_trace)
        assert result.json() == {}
        calls = children(rx, invocation_span(rx, result.request_id), 2)
    sent = {json.loads(r["body"])["Limit"]: r["xray"] for r in moto.requests()[before:] if r["target"].endswith("ListTables")}
    # THEN that call goes with the function's header (before: re-pointed at our span, another
    # trace's context lost), and the other names its client span, with botocore's fields kept
    assert sent[2] == "Root=1-66666666-777777777777777777777777;Parent=8888888888888888;Sampled=1"
    ours = calls[0]
    assert sent[1].startswith(f"Root=1-{ours['trace_id'][:8]}-{ours['trace_id'][8:]};Parent={ours['span_id']};Sampled=1"), sent[1]


PARAMETERS_OF_A_DICT_SUBCLASS = """
import os
from collections import OrderedDict
import boto3

def handler(event, context):
    sqs = boto3.client("sqs", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    queue = sqs.create_queue(QueueName="dict-subclass")["QueueUrl"]
    params = OrderedDict(QueueUrl=queue, MessageBody="order")  # as a library passes them on
    sqs._make_api_call("SendMessage", params)
    sqs._make_api_call("SendMessage", params)
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get("Messages", [])
    return {"left": sorted(params), "traceparents": sorted(m.get("MessageAttributes", {}).get("traceparent", {}).get("StringValue", "") for m in messages)}
"""


def test_parameters_in_a_dict_subclass_are_not_written_into(tmp_path, moto):
    # GIVEN a function (a library) that sends twice with one OrderedDict of parameters
    task = write_function(tmp_path / "task", PARAMETERS_OF_A_DICT_SUBCLASS)
    with instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        sends = [s for s in children(rx, invocation_span(rx, result.request_id), 4) if s["name"] == "SQS.SendMessage"]
    body = result.json()
    # THEN its dict holds what it put there (before: our traceparent, which the second send took
    # for the function's own, so both messages named the first send's span), and each message
    # names its own send
    assert body["left"] == ["MessageBody", "QueueUrl"]
    assert body["traceparents"] == sorted(f"00-{s['trace_id']}-{s['span_id']}-01" for s in sends), (body, sends)


URLLIB_DATA_AND_REDIRECTS = """
import urllib.error, urllib.request

def handler(event, context):
    base = event["http"]
    urllib.request.urlopen(urllib.request.Request(base + "/status/200?via=data"), b"order=1", timeout=5).read()
    raised = []
    for path in ("/status/304?via=not-modified", "/status/307?via=unfollowed"):
        try:
            urllib.request.urlopen(base + path, timeout=5)
        except urllib.error.HTTPError as e:
            raised.append(e.code)
    return {"raised": raised}
"""


def test_urllib_spans_name_the_method_sent_and_fail_on_a_redirect_not_followed(tmp_path):
    # GIVEN a function that hands urlopen() its body apart from the Request, and asks for an
    # answer that redirects nowhere (urllib raises it as an HTTPError)
    task = write_function(tmp_path / "task", URLLIB_DATA_AND_REDIRECTS)
    without, result, rx, _ = without_and_with_the_layer(task)
    assert result.json() == without == {"raised": [304, 307]}
    spans = {s["attributes"]["url.full"].partition("via=")[2]: s for s in children(rx, invocation_span(rx, result.request_id), 3)}
    # THEN the first is the POST it went as (before: GET, read before urllib set the body) ...
    assert (spans["data"]["name"], spans["data"]["attributes"]["http.request.method"]) == ("POST", "POST")
    # ... and the second failed, as the function saw it (before: a success with a 307)
    unfollowed = spans["unfollowed"]
    assert unfollowed["attributes"]["http.response.status_code"] == 307 and unfollowed["attributes"]["error.type"] == "HTTPError"
    assert unfollowed["status_code"] == 2 and [e["name"] for e in unfollowed["events"]] == ["exception"]
    # ... while a 304 urllib raises is an answer, as it was
    not_modified = spans["not-modified"]
    assert not_modified["attributes"]["http.response.status_code"] == 304 and "error.type" not in not_modified["attributes"] and not_modified["status_code"] != 2


INVOKES_WITH_A_RESPONSE_STREAM = """
import base64, json
import boto3

class Sent(Exception):
    pass

def handler(event, context):
    lam = boto3.client("lambda", endpoint_url="http://127.0.0.1:9", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    seen = {}

    def capture(request, **kwargs):  # what botocore would send, stopped before it goes
        seen["client_context"] = request.headers.get("X-Amz-Client-Context")
        raise Sent()

    lam.meta.events.register("before-send.lambda.InvokeWithResponseStream", capture)
    try:
        lam.invoke_with_response_stream(FunctionName="orders", Payload=b"{}")
    except Sent:
        pass
    sent = seen["client_context"]
    return json.loads(base64.b64decode(sent)) if sent else None
"""


def test_an_invoke_with_a_response_stream_carries_the_context_in_its_client_context(tmp_path):
    # GIVEN a function that invokes another with a response stream (the request stopped as
    # botocore would send it)
    task = write_function(tmp_path / "task", INVOKES_WITH_A_RESPONSE_STREAM)
    with instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        (call,) = children(rx, invocation_span(rx, result.request_id), 1)
    # THEN its client context names the call's span, as a synchronous Invoke's does (before:
    # none, and the trace stopped there)
    assert call["name"] == "Lambda.InvokeWithResponseStream"
    assert result.json() == {"custom": {"traceparent": f"00-{call['trace_id']}-{call['span_id']}-01"}}, result.json()


ASKS_FOR_AN_ANSWER_TOO_EARLY = """
import http.client, urllib.parse

def handler(event, context):
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(event["http"]).netloc, timeout=5)
    conn.request("GET", "/status/200?via=first")
    first = conn.getresponse()
    conn.request("GET", "/status/201?via=second")
    try:
        conn.getresponse()  # the first answer is not read yet
    except http.client.ResponseNotReady:
        pass
    first.read()
    status = conn.getresponse().status
    conn.close()
    return {"status": status}
"""


def test_a_response_asked_for_too_early_leaves_the_request_to_the_answer_that_comes(tmp_path):
    # GIVEN a function that asks http.client for the second answer before it read the first
    # (ResponseNotReady), then reads the first and asks again
    task = write_function(tmp_path / "task", ASKS_FOR_AN_ANSWER_TOO_EARLY)
    # Each answer in one write: http.client reads the first one's body from what it buffered
    # with its head, not from the socket, where the second answer would be taken in with it
    # (which http.client does not support, with or without the layer)
    answers = [b"HTTP/1.1 %d OK\r\nContent-Length: 2\r\n\r\nok" % status for status in (200, 201)]
    server = ScriptedServer([answers])
    try:
        with instrumented(task, timeout_s=30) as (emu, rx):
            result = emu.invoke({"http": f"http://127.0.0.1:{server.port}"})
            assert result.json() == {"status": 201}
            calls = children(rx, invocation_span(rx, result.request_id), 2)
    finally:
        server.stop()
    # THEN the second request's span has its answer, 201 (before: it ended failed, at the
    # early ask, with ResponseNotReady)
    assert [(s["attributes"]["url.full"].rpartition("via=")[2], s["attributes"].get("http.response.status_code"), s["attributes"].get("error.type")) for s in calls] == [("first", 200, None), ("second", 201, None)], calls


SENDS_A_HEADER_TWICE = """
import email.message, http.client, urllib.parse

def handler(event, context):
    headers = email.message.Message()
    headers["X-Forwarded-For"] = "10.0.0.1"
    headers["X-Forwarded-For"] = "10.0.0.2"
    headers["Accept"] = "application/json"
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(event["http"]).netloc, timeout=5)
    conn.request("GET", "/status/200?via=message", headers=headers)
    status = conn.getresponse().status
    conn.close()
    return {"status": status, "kept": headers.get_all("X-Forwarded-For")}
"""


def test_http_client_sends_every_line_of_a_headers_mapping_that_holds_a_name_twice(tmp_path):
    # GIVEN a function whose http.client request names a header twice (an email.message.Message,
    # whose items() http.client sends line by line)
    task = write_function(tmp_path / "task", SENDS_A_HEADER_TWICE)
    sent = {}
    for layer in (False, True):
        with recording_server() as http:
            if layer:
                with instrumented(task, timeout_s=30) as (emu, rx):
                    result = emu.invoke({"http": http.url})
                    assert len(children(rx, invocation_span(rx, result.request_id), 1)) == 1
            else:
                with Emulator(str(task), "app.handler", invoke_port=None) as bare:
                    result = bare.invoke({"http": http.url})
            sent[layer] = ([(k, v) for k, v in http.requests[0]["lines"] if k.lower() not in ("host", "traceparent", "tracestate", "baggage")], result.json())
    # THEN the server gets both lines with the layer too (before: one, the first's value, as a
    # copy of the mapping into a dict kept), and the function's own mapping is unchanged
    assert sent[True] == sent[False], sent
    assert [v for k, v in sent[True][0] if k == "X-Forwarded-For"] == ["10.0.0.1", "10.0.0.2"]
    assert sent[True][1] == {"status": 200, "kept": ["10.0.0.1", "10.0.0.2"]}


SETS_HEADERS_BY_BYTES_NAMES = """
import http.client, urllib.parse, urllib.request
import urllib3

OWN = {b"traceparent": b"00-11111111111111111111111111111111-2222222222222222-01", b"X-Amzn-Trace-Id": b"Root=1-33333333-444444444444444444444444"}

def handler(event, context):
    base = event["http"]
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=5)
    conn.request("GET", "/status/200?via=http.client", headers=OWN)
    statuses = [conn.getresponse().status]
    conn.close()
    statuses.append(urllib3.PoolManager().request("GET", base + "/status/200?via=urllib3", headers=OWN).status)
    statuses.append(urllib.request.urlopen(urllib.request.Request(base + "/status/200?via=urllib", headers=OWN), timeout=5).status)
    return {"statuses": statuses}
"""


def test_trace_headers_the_function_names_in_bytes_are_its_own(tmp_path):
    # GIVEN a function that sets its traceparent and X-Ray header with bytes names, which
    # http.client, urllib3 and urllib.request send as they are
    task = write_function(tmp_path / "task", SETS_HEADERS_BY_BYTES_NAMES)
    sent = {}
    for layer in (False, True):
        with recording_server() as http:
            if layer:
                with instrumented(task, timeout_s=30, env={"OTEL_PROPAGATORS": "tracecontext,baggage,xray"}) as (emu, rx):
                    result = emu.invoke({"http": http.url})
                    assert len(children(rx, invocation_span(rx, result.request_id), 3)) == 3
            else:
                with Emulator(str(task), "app.handler", invoke_port=None, timeout_s=30) as bare:
                    result = bare.invoke({"http": http.url})
            assert result.json() == {"statuses": [200, 200, 200]}
            sent[layer] = {r["path"].partition("via=")[2]: [(k.lower(), v) for k, v in r["lines"] if k.lower() in ("traceparent", "tracestate", "x-amzn-trace-id")] for r in http.requests}
    # THEN each request carries the function's own headers alone, as without the layer (before:
    # a second traceparent and X-Ray header of ours beside them)
    assert sent[True] == sent[False], sent
    assert sent[False]["urllib3"] == [("traceparent", "00-11111111111111111111111111111111-2222222222222222-01"), ("x-amzn-trace-id", "Root=1-33333333-444444444444444444444444")]


SENDS_THROUGH_AN_OPENER_WITH_ITS_OWN_HEADERS = """
import urllib.request

def handler(event, context):
    opener = urllib.request.build_opener()
    opener.addheaders = [("User-agent", "orders/1.0"), ("traceparent", "00-11111111111111111111111111111111-2222222222222222-01"), ("tracestate", "own=1")]
    with opener.open(event["http"] + "/status/200?via=opener", timeout=5) as response:
        return {"status": response.status}
"""


def test_trace_headers_an_opener_adds_are_the_functions_own(tmp_path):
    # GIVEN a function whose urllib opener adds its own traceparent and tracestate to every
    # request (opener.addheaders: urllib adds each where the request has none of that name)
    task = write_function(tmp_path / "task", SENDS_THROUGH_AN_OPENER_WITH_ITS_OWN_HEADERS)
    with recording_server() as http:
        with Emulator(str(task), "app.handler", invoke_port=None, timeout_s=30) as bare:
            assert bare.invoke({"http": http.url}).json() == {"status": 200}
        with instrumented(task, timeout_s=30) as (emu, rx):
            result = emu.invoke({"http": http.url})
            assert result.json() == {"status": 200}
            assert len(children(rx, invocation_span(rx, result.request_id), 1)) == 1
    without, with_layer = ([(k.lower(), v) for k, v in r["lines"] if k.lower() in ("traceparent", "tracestate")] for r in http.requests)
    # THEN the server gets them as without the layer (before: our traceparent on the request
    # took the opener's place, beside the opener's tracestate), and the request is a client span
    assert with_layer == without == [("traceparent", "00-11111111111111111111111111111111-2222222222222222-01"), ("tracestate", "own=1")], with_layer


SENDS_HEADERS_HTTP_CLIENT_CANNOT_READ = """
import http.client, urllib.parse

def handler(event, context):
    outcomes = []
    for headers in (None, [], [("Accept", "application/json")], {}):
        conn = http.client.HTTPConnection(urllib.parse.urlsplit(event["http"]).netloc, timeout=5)
        try:
            conn.request("GET", "/status/200?via=http.client", None, headers)
            outcomes.append(conn.getresponse().status)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
        finally:
            conn.close()
    return outcomes
"""


def test_http_client_headers_it_cannot_read_fail_as_without_the_layer(tmp_path):
    # GIVEN a function passing http.client's request() headers it cannot read (None, a list)
    task = write_function(tmp_path / "task", SENDS_HEADERS_HTTP_CLIENT_CANNOT_READ)
    without, result, rx, _ = without_and_with_the_layer(task)
    # THEN each fails with http.client's own error, as without the layer (before: None and an
    # empty list were copied into a dict, and the request went), and the one that goes is traced
    assert without == ["TypeError", "AttributeError", "AttributeError", 200]
    assert result.json() == without
    assert len(children(rx, invocation_span(rx, result.request_id), 1)) == 1


INSTRUMENTS_MIDWAY = """
import httpx

def handler(event, context):
    # OpenTelemetry first imported inside the handler, its httpx instrumentation enabled there
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    HTTPXClientInstrumentor().instrument()
    return {"status": httpx.get(event["http"] + "/status/200?via=midway").status_code}
"""


def test_an_instrumentation_the_function_enables_midway_nests_under_the_invocation(tmp_path):
    task = write_function(tmp_path / "task", INSTRUMENTS_MIDWAY)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        results = [emu.invoke({"http": http.url}) for _ in range(2)]
        assert [r.json() for r in results] == [{"status": 200}] * 2
        for number, result in enumerate(results):
            # THEN in the invocation that enabled it, as in the next, the request is one span
            # (theirs) under the invocation span, and the server was told so
            invocation = invocation_span(rx, result.request_id)
            (call,) = children(rx, invocation, 1)
            assert http.requests[number]["headers"]["traceparent"] == f"00-{invocation['trace_id']}-{call['span_id']}-01"
        assert emu.wait_idle(30)
        assert len([s for s in rx.spans() if s["kind"] in OUTGOING]) == 2


INSTRUMENTS_ONE_CLIENT = """
import asyncio, os, sys
sys.path.insert(0, os.environ["CONTRIB"])  # aiohttp's instrumentation, as the function ships it
import aiohttp, httpx
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

CLIENT = httpx.Client()
HTTPXClientInstrumentor.instrument_client(CLIENT)  # this client only

async def aiohttp_get(url, configs):
    async with aiohttp.ClientSession(trace_configs=configs) as session:
        async with session.get(url) as response:
            return response.status

def handler(event, context):
    base = event["http"]
    return {"statuses": [
        CLIENT.get(base + "/status/200?via=httpx-theirs").status_code,
        httpx.get(base + "/status/200?via=httpx-ours").status_code,
        asyncio.run(aiohttp_get(base + "/status/200?via=aiohttp-theirs", [create_trace_config()])),
        asyncio.run(aiohttp_get(base + "/status/200?via=aiohttp-ours", None)),
    ]}
"""


@pytest.fixture(scope="module")
def contrib_path() -> str:
    return installed("contrib-requirements.txt", "lambdawrap-contrib-0.66b1")


def test_a_client_instrumented_by_opentelemetry_alone_is_traced_once(tmp_path, contrib_path):
    # GIVEN a function that enabled OpenTelemetry's instrumentation for one httpx client and one
    # aiohttp session only (not the library: lambdawrap still traces the others)
    task = write_function(tmp_path / "task", INSTRUMENTS_ONE_CLIENT)
    with recording_server() as http, instrumented(task, env={"CONTRIB": contrib_path}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"statuses": [200] * 4}
        invocation = invocation_span(rx, result.request_id)
        calls = children(rx, invocation, 4)
        assert emu.wait_idle(30)
        # THEN each request is one span under the invocation (theirs or ours), and the server
        # was told that span
        assert len([s for s in rx.spans() if s["kind"] in OUTGOING]) == 4
        by_id = {s["span_id"]: s for s in calls}
        for request in http.requests:
            span_id = request["headers"]["traceparent"].split("-")[2]
            assert span_id in by_id, request
            assert (by_id[span_id]["attributes"].get("url.full") or by_id[span_id]["attributes"].get("http.url")).endswith(request["path"])


KEPT_AMONG_MANY = """
import os, urllib.error, urllib.request
import requests

KEPT = urllib.request.Request(os.environ["HTTP_URL"] + "/status/200?via=kept")
SESSION = requests.Session()
PREPARED = SESSION.prepare_request(requests.Request("GET", os.environ["HTTP_URL"] + "/status/200?via=prepared"))

def handler(event, context):
    # More requests of their own (each send gets a context) than lambdawrap keeps the values
    # it wrote of, refused: quick
    for _ in range(1100):
        try:
            urllib.request.urlopen(os.environ["REFUSED_URL"], timeout=5)
        except urllib.error.URLError:
            pass
    urllib.request.urlopen(KEPT, timeout=5).read()
    SESSION.send(PREPARED, timeout=5).close()
    return {"statusCode": 200}
"""


def test_a_request_kept_across_invocations_among_many_others_names_each_invocations_span(tmp_path):
    # GIVEN request objects kept across invocations (a urllib Request, a requests
    # PreparedRequest), each invocation sending more other requests than lambdawrap keeps the
    # values it wrote of
    task = write_function(tmp_path / "task", KEPT_AMONG_MANY)
    with recording_server() as http, instrumented(task, env={"HTTP_URL": http.url, "REFUSED_URL": f"http://127.0.0.1:{closed_port()}/"}, timeout_s=60) as (emu, rx):
        results = [emu.invoke({}) for _ in range(3)]
        assert [r.json() for r in results] == [{"statusCode": 200}] * 3
        invocations = [invocation_span(rx, r.request_id) for r in results]
    # THEN each send of each carries its own invocation's trace, never an earlier one's (before:
    # past the cap, the first invocation's, taken for the function's own, for ever)
    for via in ("kept", "prepared"):
        sent = [r["headers"]["traceparent"].split("-")[1] for r in http.requests if r["path"].endswith(f"via={via}")]
        assert sent == [i["trace_id"] for i in invocations], (via, sent)


WRITES_REQUESTS_LINE_BY_LINE = """
import http.client, urllib.parse, xmlrpc.client

OWN = "00-11111111111111111111111111111111-2222222222222222-01"

class Logged(http.client.HTTPConnection):
    # a subclass that does something of its own as the headers go
    def endheaders(self, *args, **kwargs):
        self.sent_at = 1
        return super().endheaders(*args, **kwargs)

def handler(event, context):
    url = urllib.parse.urlsplit(event["http"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    statuses = []
    for path, headers in (("/status/200?via=lines", {"X-Order": "9"}), ("/status/200?via=own", {"traceparent": OWN})):
        conn.putrequest("GET", path)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    conn.request("GET", "/status/200?via=request")
    statuses.append(conn.getresponse().status)
    conn.close()
    logged = Logged(url.hostname, url.port, timeout=5)
    logged.request("GET", "/status/200?via=subclass")
    statuses.append(logged.getresponse().status)
    logged.close()
    # xmlrpc.client writes its calls line by line; the server answers JSON, which it refuses
    try:
        xmlrpc.client.ServerProxy(event["http"] + "/status/200?via=xmlrpc").add(2, 3)
    except Exception as exc:
        statuses.append(type(exc).__name__)
    return {"statuses": statuses}
"""


def test_a_request_written_line_by_line_is_traced_once_and_carries_the_context(tmp_path):
    # GIVEN a function that writes requests with http.client's putrequest(), putheader() and
    # endheaders() (one with a traceparent of its own), sends one with request() (and one with a
    # subclass's, whose endheaders() calls its parent's), and calls an XML-RPC method
    # (xmlrpc.client writes its calls so)
    task = write_function(tmp_path / "task", WRITES_REQUESTS_LINE_BY_LINE)
    with recording_server() as http:
        without = answer_without_layer(task, {"http": http.url})
        with instrumented(task, timeout_s=30) as (emu, rx):
            result = emu.invoke({"http": http.url})
            invocation = invocation_span(rx, result.request_id)
            calls = children(rx, invocation, 5)
            assert emu.wait_idle(30)
        sent = {r["path"].rpartition("via=")[2]: r for r in http.requests[len(http.requests) // 2 :]}
    # THEN it gets what it gets without the layer, each request is one client span of the
    # invocation (before: the three written line by line had none), and each carries its span,
    # once, the function's own traceparent kept
    assert result.json() == without == {"statuses": [200, 200, 200, 200, "ExpatError"]}, (result.json(), without)
    assert sorted(s["attributes"]["url.full"].rpartition("via=")[2] for s in calls) == ["lines", "own", "request", "subclass", "xmlrpc"]
    assert len([s for s in rx.spans() if s["kind"] in OUTGOING]) == 5
    by_id = {s["span_id"]: s for s in calls}
    for via in ("lines", "request", "subclass", "xmlrpc"):
        parents = [value for name, value in sent[via]["lines"] if name.lower() == "traceparent"]
        assert len(parents) == 1 and parents[0].split("-")[2] in by_id, (via, parents)
    sent = {via: request["headers"] for via, request in sent.items()}
    assert sent["own"]["traceparent"] == "00-11111111111111111111111111111111-2222222222222222-01" and sent["lines"]["x-order"] == "9"


URLLIB3_AS_ITS_1X_SENDS = """
import http.client, urllib.parse
import urllib3.connection

def handler(event, context):
    url = urllib.parse.urlsplit(event["http"])
    # urllib3 1.x's connection sends a request with http.client's request() (boto3 on it too)
    pooled = urllib3.connection.HTTPConnection(url.hostname, url.port, timeout=5)
    http.client.HTTPConnection.request(pooled, "GET", "/status/200?via=urllib3")
    status = http.client.HTTPConnection.getresponse(pooled).status
    pooled.close()
    plain = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    plain.request("GET", "/status/200?via=plain")
    return [status, plain.getresponse().status]
"""


def test_urllib3_left_out_is_left_alone_where_its_connection_sends_with_http_client_s_request(tmp_path):
    # GIVEN a function that leaves urllib3 out of what is traced, and whose urllib3 sends as
    # 1.x does (its connection's request() is http.client's)
    task = write_function(tmp_path / "task", URLLIB3_AS_ITS_1X_SENDS)
    with recording_server() as http:
        with instrumented(task, env={"LAMBDAWRAP_INSTRUMENT": "urllib"}) as (emu, rx):
            result = emu.invoke({"http": http.url})
            invocation = invocation_span(rx, result.request_id)
            (call,) = children(rx, invocation, 1)
            assert emu.wait_idle(30)
        sent = {r["path"].rpartition("via=")[2]: r["headers"] for r in http.requests}
    # THEN its request goes as without the layer, untraced (before: a span and a traceparent,
    # added to boto3's requests after they were signed), and http.client's own is traced
    assert result.json() == [200, 200]
    assert "traceparent" not in sent["urllib3"] and "traceparent" in sent["plain"]
    assert call["attributes"]["url.full"].endswith("via=plain")
    assert len([s for s in rx.spans() if s["kind"] in OUTGOING]) == 1


CLOSES_UNREAD = """
import http.client, urllib.parse

def handler(event, context):
    url = urllib.parse.urlsplit(event["http"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", "/status/200?via=unread")
    conn.close()  # the response is never read
    conn.request("GET", "/status/200?via=read")
    status = conn.getresponse().status
    conn.close()
    return {"statusCode": status}
"""


def test_a_request_whose_response_is_never_read_ends_its_span_at_close(tmp_path):
    # GIVEN a function that sends a request with http.client and closes the connection without
    # reading the response, then sends another on it and reads that one
    task = write_function(tmp_path / "task", CLOSES_UNREAD)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"statusCode": 200}
        invocation = invocation_span(rx, result.request_id)
        # THEN both are client spans of the invocation
        calls = children(rx, invocation, 2)
    assert [s["attributes"]["url.full"].rsplit("?", 1)[1] for s in calls] == ["via=unread", "via=read"], calls
    unread, read = calls
    # ... the unread one ended at the close, with no status: what came back is unknown
    assert "http.response.status_code" not in unread["attributes"] and unread["status_code"] == 0, unread
    assert unread["start_time_unix_nano"] <= unread["end_time_unix_nano"] <= read["start_time_unix_nano"]
    assert read["attributes"]["http.response.status_code"] == 200



LEAVES_UNREAD = """
import http.client, urllib.parse

KEPT = []

def handler(event, context):
    url = urllib.parse.urlsplit(event["http"])
    if event["do"] == "read the kept one":
        return {"statusCode": KEPT.pop().getresponse().status}
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", "/status/200?via=" + event["do"].replace(" ", "-"))
    if event["do"] == "keep":
        KEPT.append(conn)  # read in the next invocation
    return {"statusCode": 202}  # left unread, neither read nor closed
"""


def test_a_request_left_unread_ends_at_its_invocations_end(tmp_path):
    # GIVEN a function that sends a request with http.client and returns without reading the
    # response or closing the connection (left for the garbage collector), and one that keeps
    # the connection and reads the response in its next invocation
    task = write_function(tmp_path / "task", LEAVES_UNREAD)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        left = emu.invoke({"http": http.url, "do": "leave"})
        kept = emu.invoke({"http": http.url, "do": "keep"})
        read = emu.invoke({"http": http.url, "do": "read the kept one"})
        assert [r.json()["statusCode"] for r in (left, kept, read)] == [202, 202, 200]
        # THEN each request is a client span of the invocation that sent it, ended as unread
        # by its end (no status: what came back is unknown to it) ...
        for result, via in ((left, "via=leave"), (kept, "via=keep")):
            invocation = invocation_span(rx, result.request_id)
            (call,) = children(rx, invocation, 1)
            assert call["attributes"]["url.full"].endswith(via) and "http.response.status_code" not in call["attributes"], call
            assert call["status_code"] == 0 and call["end_time_unix_nano"] <= invocation["end_time_unix_nano"], (call, invocation)
        # ... once: the response read later is no span of its own
        invocation_span(rx, read.request_id)
        emu.wait_idle()
        assert len([s for s in rx.spans() if s["kind"] == 3]) == 2
        lines = emu.log_lines("function")
    assert not [line for line in lines if "lambdawrap" in line], lines


RAISES_FOR_STATUS = """
import asyncio
import aiohttp, requests

def raise_for_status(response, *args, **kwargs):
    response.raise_for_status()

async def aiohttp_get(url):
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        async with session.get(url) as response:
            return response.status

def handler(event, context):
    base, raised = event["http"], []
    session = requests.Session()
    session.hooks["response"].append(raise_for_status)  # a common idiom
    try:
        session.get(base + "/status/404?via=requests", timeout=5)
    except requests.HTTPError as exc:
        raised.append([type(exc).__name__, exc.response.status_code])
    try:
        asyncio.run(aiohttp_get(base + "/status/503?via=aiohttp"))
    except aiohttp.ClientResponseError as exc:
        raised.append([type(exc).__name__, exc.status])
    # a hook that answers a 401 by sending again through the adapter, as HTTPDigestAuth does,
    # then one that raises for the answer it got in its place
    def send_again(response, **kwargs):
        if response.status_code != 401:
            return response
        again = response.request.copy()
        again.url = base + "/status/500?via=resent"
        return response.connection.send(again, **kwargs)

    try:
        requests.get(base + "/status/401?via=resent", hooks={"response": [send_again, raise_for_status]}, timeout=5)
    except requests.HTTPError as exc:
        raised.append([type(exc).__name__, exc.response.status_code])
    # a hook that checks another request, which raises for its own answer
    try:
        requests.get(base + "/status/200?via=checked", hooks={"response": lambda r, **k: requests.get(base + "/status/503?via=check", timeout=5).raise_for_status()}, timeout=5)
    except requests.HTTPError as exc:
        raised.append([type(exc).__name__, exc.response.status_code])
    return raised
"""


def test_an_answer_the_library_raises_for_is_recorded_as_an_answer(tmp_path):
    # GIVEN a function whose libraries raise for a 4xx/5xx answer inside the traced call: a
    # requests response hook calling raise_for_status(), an aiohttp session made with
    # raise_for_status=True
    task = write_function(tmp_path / "task", RAISES_FOR_STATUS)
    without, result, rx, _ = without_and_with_the_layer(task)
    calls = children(rx, invocation_span(rx, result.request_id), 5)
    checked, check = sorted((span for span in calls if "via=check" in span["attributes"]["url.full"]), key=lambda span: span["attributes"]["url.full"])
    (resent,) = [span for span in calls if "via=resent" in span["attributes"]["url.full"]]
    calls = [span for span in calls if "via=check" not in span["attributes"]["url.full"] and "via=resent" not in span["attributes"]["url.full"]]
    # THEN the function saw what it sees without the layer
    assert without == [["HTTPError", 404], ["ClientResponseError", 503], ["HTTPError", 500], ["HTTPError", 503]]
    assert result.json() == without
    # ...and each span is the answer's, as for an answer the library returns: its status code,
    # error.type the code, no exception event (before: error.type HTTPError/ClientResponseError,
    # no status code, an exception event, as if no answer had come)
    for span, status in zip(calls, (404, 503)):
        assert span["attributes"]["http.response.status_code"] == status, span
        assert span["attributes"]["error.type"] == str(status) and span["status_code"] == 2, span
        assert [e["name"] for e in span["events"]] == [], span
    # ... the answer a hook put in place of the request's is the request's (as before 0570357,
    # which took it for another request's: failed, with the 401)
    assert resent["attributes"]["http.response.status_code"] == 500 and resent["attributes"]["error.type"] == "500" and resent["events"] == [], resent
    # ... and a request whose hook raised for another's answer keeps its own: answered 200, then
    # failed with the hook's error (before: recorded as answered 503, the other's status)
    assert check["attributes"]["http.response.status_code"] == 503 and check["attributes"]["error.type"] == "503", check
    assert checked["attributes"]["http.response.status_code"] == 200 and checked["attributes"]["error.type"] == "HTTPError", checked
    assert [e["name"] for e in checked["events"]] == ["exception"], checked


CALLS_FROM_A_RESPONSE_HOOK = """
import http.client, traceback, urllib.parse, urllib.request
import requests, urllib3

session = requests.Session()

class TokenAuth(requests.auth.AuthBase):
    # as HTTPDigestAuth, requests-ntlm and requests-kerberos do: a hook answering a 401 re-sends
    # the request through its adapter
    def __call__(self, request):
        request.register_hook("response", self.answer_401)
        return request

    def answer_401(self, response, **kwargs):
        if response.status_code != 401 or "Authorization" in response.request.headers:
            return response
        response.content
        again = response.request.copy()
        again.headers["Authorization"] = "Token t"
        answer = response.connection.send(again, **kwargs)
        answer.history.append(response)
        return answer

def audit(response, *args, **kwargs):
    # a hook reporting each answer to another service: the function's own calls
    base = response.url.split("/status/")[0]
    requests.post(base + "/status/202?via=hook-requests", json={"status": response.status_code}, timeout=5)
    urllib.request.urlopen(base + "/status/200?via=hook-urllib", timeout=5).read()
    urllib3.PoolManager().request("GET", base + "/status/200?via=hook-urllib3", timeout=5)
    where = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=5)
    conn.request("GET", "/status/200?via=hook-httpclient")
    conn.getresponse().read()
    conn.close()
    if response.status_code >= 400:
        raise RuntimeError("refused")

session.hooks["response"].append(audit)

def handler(event, context):
    status = session.get(event["http"] + "/status/200?via=main", timeout=5).status_code
    requests.get(event["http"] + "/status/401?via=auth", auth=TokenAuth(), timeout=5)
    try:
        session.get(event["http"] + "/status/403?via=main", timeout=5)
    except RuntimeError as exc:
        return {"status": status, "raised": [frame.name for frame in traceback.extract_tb(exc.__traceback__)]}
"""


def test_calls_a_requests_response_hook_makes_are_traced(tmp_path):
    # GIVEN a function whose requests response hook makes HTTP calls of its own (and raises),
    # and a request whose auth handler re-sends it from a response hook
    task = write_function(tmp_path / "task", CALLS_FROM_A_RESPONSE_HOOK)
    with recording_server() as http:
        without = answer_without_layer(task, {"http": http.url})
        http.requests.clear()
        with instrumented(task, timeout_s=30) as (emu, rx):
            result = emu.invoke({"http": http.url})
            invocation = invocation_span(rx, result.request_id)
            calls = children(rx, invocation, 11)
    # THEN the function saw what it sees without the layer (the hook's exception, its frames)
    assert without == {"status": 200, "raised": ["handler", "get", "request", "send", "dispatch_hook", "audit"]}
    assert result.json() == without
    # ...and the hook's calls are spans of their own, each named downstream by its own span
    # (before: they ran inside the request's span, marked as under it: no span, no traceparent;
    # those made with urllib3 or http.client directly, taken for the request's re-send, were so
    # still)
    urls = [s["attributes"]["url.full"].rsplit("?", 1)[1] for s in calls]
    assert sorted(urls) == sorted(["via=main", "via=hook-requests", "via=hook-urllib", "via=hook-urllib3", "via=hook-httpclient"] * 2 + ["via=auth"]), urls
    assert len([s for s in rx.spans() if s["kind"] in OUTGOING]) == 11
    spans = {s["span_id"] for s in calls}
    assert all(r["headers"].get("traceparent", "-").split("-")[2] in spans for r in http.requests), http.requests
    assert len(http.requests) == 12
    # ...while the auth handler's re-send stays inside its request's one span, which it names
    auth = next(s for s in calls if s["attributes"]["url.full"].endswith("via=auth"))
    assert [r["headers"]["traceparent"].split("-")[2] for r in http.requests if r["path"].endswith("via=auth")] == [auth["span_id"]] * 2


FORWARDS_THE_CALLERS_HEADERS = """
import http.client, urllib.parse, urllib.request
import httpx, requests

def handler(event, context):
    base = event["headers"]["x-target"]
    requests.get(base + "/status/200?via=traced", timeout=5)  # carries the caller's tracestate on
    # a proxy forwarding the caller's W3C headers as it received them
    forwarded = {name: event["headers"][name] for name in ("traceparent", "tracestate")}
    requests.get(base + "/status/200?via=requests", headers=forwarded, timeout=5)
    httpx.get(base + "/status/200?via=httpx", headers=forwarded)
    urllib.request.urlopen(urllib.request.Request(base + "/status/200?via=urllib", headers=forwarded), timeout=5).read()
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=5)
    conn.request("GET", "/status/200?via=http.client", headers=forwarded)
    conn.getresponse().read()
    conn.close()
    return {"statusCode": 200}
"""


def test_a_tracestate_the_function_sends_with_its_own_traceparent_is_kept(tmp_path):
    # GIVEN a function that forwards its caller's traceparent and tracestate on requests, after
    # a request that lambdawrap traced (whose tracestate, the caller's, has the same value)
    task = write_function(tmp_path / "task", FORWARDS_THE_CALLERS_HEADERS)
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    caller = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "congo=t61"}
    sent = []
    with recording_server() as http:
        event = dict(event, headers=dict(event["headers"], **caller, **{"x-target": http.url}))
        with Emulator(str(task), "app.handler", invoke_port=None, timeout_s=30) as bare:
            assert bare.invoke(event).json() == {"statusCode": 200}
        with instrumented(task, timeout_s=30) as (emu, rx):
            sent.append(list(http.requests))
            assert emu.invoke(event).json() == {"statusCode": 200}
        sent.append(http.requests[len(sent[0]):])
    without, with_layer = ({r["path"].partition("via=")[2]: (r["headers"].get("traceparent"), r["headers"].get("tracestate")) for r in run} for run in sent)
    # THEN each forwarded request carries exactly the headers the function set, as without the
    # layer (before: the tracestate was removed, taken for one lambdawrap had written by its value)
    for library in ("requests", "httpx", "urllib", "http.client"):
        assert with_layer[library] == without[library] == (caller["traceparent"], caller["tracestate"]), (library, with_layer)
    assert with_layer["traced"][1] == caller["tracestate"] and with_layer["traced"][0] != caller["traceparent"]


PICKLES_AND_COPIES_LIBRARY_METHODS = """
import copy, http.client, pickle, types, urllib.request
import aiohttp, httpx, requests, urllib3

def observe(value):
    kind = "method" if isinstance(value, types.MethodType) else "function" if isinstance(value, types.FunctionType) else "?"
    return [kind, getattr(value, "__qualname__", None), type(getattr(value, "__self__", None)).__name__]

def handler(event, context):
    session = requests.Session()
    methods = {
        "Session.send": requests.Session.send,
        "session.send": session.send,
        "dispatch_hook": requests.sessions.dispatch_hook,
        "urlopen": urllib3.PoolManager().connection_from_url(event["http"]).urlopen,
        "HTTPConnection.request": http.client.HTTPConnection.request,
        "connection.getresponse": http.client.HTTPConnection("localhost").getresponse,
        "OpenerDirector.open": urllib.request.OpenerDirector.open,
        "handle_request": httpx.HTTPTransport().handle_request,
        "ClientSession.__init__": aiohttp.ClientSession.__init__,
    }
    seen = {}
    for name, method in methods.items():
        for how, make in (("pickled", lambda m: pickle.loads(pickle.dumps(m))), ("copied", copy.copy), ("deep-copied", copy.deepcopy)):
            try:
                seen[f"{name} {how}"] = observe(make(method))
            except Exception as exc:
                seen[f"{name} {how}"] = f"{type(exc).__name__}: {exc}"
    # a deep copy of a bound send is bound to a copy of the session, which still sends
    send = copy.deepcopy({"send": session.send})["send"]
    seen["copy sends"] = send(requests.Request("GET", event["http"] + "/status/200?via=copy").prepare(), timeout=5).status_code
    seen["own session"] = send.__self__ is not session
    return seen
"""


def test_the_library_methods_lambdawrap_wraps_pickle_and_copy_as_without_it(tmp_path):
    # GIVEN a function that pickles, copies and deep-copies the library methods lambdawrap wraps
    # (requests' Session.send, reached through the class and bound to a session, urllib3's
    # urlopen, http.client's, urllib's, httpx's, aiohttp's), as a cache, a process pool or a
    # deep-copied configuration holding one of them does
    task = write_function(tmp_path / "task", PICKLES_AND_COPIES_LIBRARY_METHODS)
    without, result, rx, _ = without_and_with_the_layer(task)
    # THEN the function sees what it sees without the layer (before: every one of them raised
    # NotImplementedError, "object proxy must define __reduce_ex__()", from wrapt's proxy)
    assert without["copy sends"] == 200 and without["own session"] is True
    assert without["session.send pickled"] == ["method", "Session.send", "Session"], without
    assert without["Session.send deep-copied"] == ["function", "Session.send", "NoneType"], without
    assert result.function_error is None, result.body
    assert result.json() == without


SAVES_AND_PUTS_BACK_LIBRARY_METHODS = """
import http.client, urllib.request
import aiohttp, httpx, requests, urllib3

PLACES = [(requests.Session, "send"), (urllib3.connectionpool.HTTPConnectionPool, "urlopen"), (http.client.HTTPConnection, "request"),
          (http.client.HTTPSConnection, "request"), (urllib3.connectionpool.HTTPSConnectionPool, "urlopen"),
          (http.client.HTTPConnection, "getresponse"), (urllib.request.OpenerDirector, "open"), (httpx.HTTPTransport, "handle_request"),
          (aiohttp.ClientSession, "__init__")]

def stub(self, request):
    raise RuntimeError("the stub answered")

def handler(event, context):
    seen = {f"{owner.__name__}.{name} is itself": getattr(owner, name) is getattr(owner, name) for owner, name in PLACES}
    # As vcrpy resets a method while it sends for real, then puts its stub back only where the
    # method it saved is no longer there
    saved = httpx.HTTPTransport.handle_request
    httpx.HTTPTransport.handle_request = stub
    reset_to = httpx.HTTPTransport.handle_request
    httpx.HTTPTransport.handle_request = saved
    seen["sent meanwhile"] = httpx.get(event["http"] + "/status/200?via=meanwhile").status_code
    if httpx.HTTPTransport.handle_request is not saved:
        seen["taken for another's patch"] = True
    httpx.HTTPTransport.handle_request = reset_to
    try:
        httpx.get(event["http"] + "/status/200?via=stubbed")
    except RuntimeError as exc:
        seen["stubbed"] = str(exc)
    httpx.HTTPTransport.handle_request = saved
    seen["sent after"] = httpx.get(event["http"] + "/status/200?via=after").status_code
    return seen
"""


def test_a_library_method_read_through_its_class_is_itself_as_without_the_layer(tmp_path):
    # GIVEN a function (a mocking library: vcrpy's reset) that saves a method of a class
    # lambdawrap wraps, stubs it, puts it back, and checks whether it is still there
    task = write_function(tmp_path / "task", SAVES_AND_PUTS_BACK_LIBRARY_METHODS)
    without, result, rx, _ = without_and_with_the_layer(task)
    # THEN it sees what it sees without the layer (before: each read through the class was a new
    # object, never the one saved, so the library took ours for another's patch), and the calls
    # that went are traced
    assert all(v is True for k, v in without.items() if k.endswith("is itself")) and without["stubbed"] == "the stub answered", without
    assert result.function_error is None and result.json() == without, (result.body, without)
    spans = children(rx, invocation_span(rx, result.request_id), 2)
    assert sorted(s["attributes"]["url.full"].partition("via=")[2] for s in spans) == ["after", "meanwhile"]


INSTRUMENTS_URLLIB3 = """
import os, sys
sys.path.insert(0, os.environ["CONTRIB"])  # urllib3's instrumentation, as the function ships it
import boto3, requests
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

URLLib3Instrumentor().instrument()  # urllib3's alone: requests and boto3 send through it

def handler(event, context):
    s3 = boto3.client("s3", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="bucket-under-urllib3")
    return {"status": requests.get(event["http"] + "/status/200?via=requests", timeout=5).status_code}
"""


def test_a_layer_below_instrumented_by_opentelemetry_adds_no_span_under_ours(tmp_path, moto, contrib_path):
    # GIVEN a function that enabled OpenTelemetry's urllib3 instrumentation, and sends through
    # urllib3 with requests and boto3 (calls lambdawrap traces)
    task = write_function(tmp_path / "task", INSTRUMENTS_URLLIB3)
    with recording_server() as http, instrumented(task, env={"CONTRIB": contrib_path, "MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"status": 200}
        invocation = invocation_span(rx, result.request_id)
        children(rx, invocation, 2)
        assert emu.wait_idle(30)
        # THEN each call is one span, lambdawrap's, as under OpenTelemetry's requests and botocore
        # instrumentations (theirs tell the one below to add none)
        clients = sorted((s for s in rx.spans() if s["kind"] in OUTGOING), key=lambda s: s["start_time_unix_nano"])
    assert [(s["name"], s["scope"]) for s in clients] == [("S3.CreateBucket", "lambdawrap.botocore"), ("GET", "lambdawrap.requests")], clients
    # ... and the server was told that span
    assert http.requests[0]["headers"]["traceparent"] == f"00-{invocation['trace_id']}-{clients[1]['span_id']}-01"


OWN_CONTEXT_INSIDE_CALLS = """
import os, sys, urllib.request
import requests
if os.environ.get("CONTRIB"):
    # urllib3's OpenTelemetry instrumentation imported (as a distribution's set-up does), not enabled
    sys.path.insert(0, os.environ["CONTRIB"])
    import opentelemetry.instrumentation.urllib3
from requests.adapters import HTTPAdapter
from opentelemetry import baggage, context

TOKENS = []


class TenantAdapter(HTTPAdapter):
    def send(self, request, **kwargs):
        # the function's own context for the request under way, detached once it is done
        TOKENS.append(context.attach(baggage.set_baggage("tenant", "acme")))
        return super().send(request, **kwargs)


def kept_by_a_response_hook(response, *args, **kwargs):
    context.attach(baggage.set_baggage("hooked", "yes"))  # kept on purpose, never detached


def handler(event, lambda_context):
    seen = {}
    requests.get(event["http"] + "/status/200?via=hook", hooks={"response": kept_by_a_response_hook}, timeout=5)
    seen["after the hook"] = baggage.get_baggage("hooked")
    session = requests.Session()
    session.mount("http://", TenantAdapter())
    session.get(event["http"] + "/status/200?via=adapter", timeout=5)
    seen["after the adapter"] = baggage.get_baggage("tenant")
    context.detach(TOKENS.pop())
    seen["after its detach"] = baggage.get_baggage("tenant")
    urllib.request.urlopen(event["http"] + "/status/200?via=after", timeout=5).read()
    return seen
"""


@pytest.mark.parametrize("contrib_imported", [False, True], ids=["api", "api and an instrumentation imported"])
def test_the_function_s_own_opentelemetry_context_inside_a_call_is_its_own(tmp_path, contrib_imported, request):
    # GIVEN a function using OpenTelemetry's context API inside the calls it makes: a response
    # hook attaching a context it keeps, an adapter attaching one it detaches after the call
    task = write_function(tmp_path / "task", OWN_CONTEXT_INSIDE_CALLS)
    env = {"CONTRIB": request.getfixturevalue("contrib_path")} if contrib_imported else {}
    with recording_server() as http:
        without = answer_without_layer(task, {"http": http.url}, env=env)
        http.requests.clear()
        with instrumented(task, env=env, timeout_s=30) as (emu, rx):
            result = emu.invoke({"http": http.url})
            calls = children(rx, invocation_span(rx, result.request_id), 3)
    # THEN it sees its context as without the layer (before: the hook's was gone after the call,
    # and the adapter's, once detached, left the context on lambdawrap's own, which told
    # OpenTelemetry's instrumentations to trace nothing more)
    assert without == {"after the hook": "yes", "after the adapter": "acme", "after its detach": None}
    assert result.json() == without
    # ... and the call after it is traced, its server told its span
    after = next(s for s in calls if s["attributes"]["url.full"].endswith("via=after"))
    told = next(r for r in http.requests if r["path"].endswith("via=after"))
    assert told["headers"]["traceparent"].split("-")[2] == after["span_id"]


KEEPS_A_CONTEXT_ACROSS_INVOCATIONS = """
import urllib.request
{module_import}

def handler(event, lambda_context):
    from opentelemetry import baggage, context, trace  # the first import, where the module made none
    if event.get("keep"):
        context.attach(context.set_value("request.scoped", event["keep"]))  # kept, never detached
    if event.get("tenant"):
        context.attach(baggage.set_baggage("tenant", event["tenant"]))  # kept too
    urllib.request.urlopen(event["target"] + "/status/200?n=" + event["n"], timeout=5).read()
    return {{"baggage": dict(baggage.get_all()), "kept": context.get_value("request.scoped")}}
"""


@pytest.mark.parametrize("module_import", ["", "from opentelemetry import trace"], ids=["api imported by the handler", "api imported by the module"])
def test_a_context_the_function_keeps_across_invocations_keeps_no_caller_s_baggage(tmp_path, module_import):
    # GIVEN a function behind an HTTP API that attaches contexts it never detaches (a value, then
    # baggage of its own), the first invocation's caller sending baggage, the later ones none
    task = write_function(tmp_path / "task", KEEPS_A_CONTEXT_ACROSS_INVOCATIONS.format(module_import=module_import))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def http_api(headers: dict, **fields: str) -> dict:
        context = {"http": {"method": "GET", "path": "/x", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "curl"}, "domainName": "a.execute-api.us-east-1.amazonaws.com", "apiId": "a", "stage": "$default", "routeKey": "GET /x", "requestId": "r", "timeEpoch": 1}
        return {"version": "2.0", "routeKey": "GET /x", "rawPath": "/x", "rawQueryString": "", "headers": headers, "requestContext": context, **fields}

    def events(url: str) -> list:
        return [http_api({"traceparent": traceparent, "baggage": "user.id=alice"}, n="1", keep="one", target=url), http_api({}, n="2", tenant="acme", target=url), http_api({}, n="3", target=url)]

    with recording_server() as http:
        with Emulator(str(task), "app.handler", invoke_port=None, timeout_s=30) as bare:
            without = [bare.invoke(event).json() for event in events(http.url)]
        http.requests.clear()
        with instrumented(task, timeout_s=30) as (emu, rx):
            results = [emu.invoke(event).json() for event in events(http.url)]
        sent = [r["headers"].get("baggage") for r in http.requests]
    # THEN after the first invocation the function sees its own context as without the layer:
    # its value kept, its baggage alone (before: the first caller's baggage stayed in it for
    # good, or the function's context was dropped at each invocation's end) ...
    assert without == [{"baggage": {}, "kept": "one"}, {"baggage": {"tenant": "acme"}, "kept": "one"}, {"baggage": {"tenant": "acme"}, "kept": "one"}]
    assert results[0] == {"baggage": {"user.id": "alice"}, "kept": "one"}, (results, sent)
    assert results[1:] == without[1:], results
    # ... and the later requests carry the function's baggage, not the first caller's
    assert sent == ["user.id=alice", "tenant=acme", "tenant=acme"], sent


KEEPS_BAGGAGE_FROM_ITS_INIT = """
from opentelemetry import baggage, context, trace

context.attach(baggage.set_baggage("tenant", "init-tenant"))  # kept for the environment's life


def handler(event, lambda_context):
    seen = dict(baggage.get_all())
    if event.get("drop"):
        context.attach(baggage.remove_baggage("tenant"))  # kept too
    return {"seen": seen, "after": dict(baggage.get_all())}
"""


def test_baggage_the_function_keeps_from_its_init_is_removed_as_it_removes_it(tmp_path):
    # GIVEN a function that keeps baggage attached at init, and removes it in its first
    # invocation, whose caller sends baggage of its own (the second's none)
    task = write_function(tmp_path / "task", KEEPS_BAGGAGE_FROM_ITS_INIT)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    first = {"version": "2.0", "routeKey": "GET /x", "rawPath": "/x", "rawQueryString": "", "headers": {"traceparent": traceparent, "baggage": "user.id=alice"}, "requestContext": {"http": {"method": "GET", "path": "/x", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "curl"}, "requestId": "r", "timeEpoch": 1}, "drop": True}
    with Emulator(str(task), "app.handler", invoke_port=None, timeout_s=30) as bare:
        without = [bare.invoke(first).json(), bare.invoke({}).json()]
    with instrumented(task, timeout_s=30) as (emu, rx):
        results = [emu.invoke(first).json(), emu.invoke({}).json()]
    # THEN during the invocation it sees its own baggage beside the caller's, and after it, its
    # removal holds, as without the layer (before: the init's entry came back)
    assert without == [{"seen": {"tenant": "init-tenant"}, "after": {}}, {"seen": {}, "after": {}}]
    assert results[0] == {"seen": {"tenant": "init-tenant", "user.id": "alice"}, "after": {"user.id": "alice"}}, results
    assert results[1] == without[1], results


KEEPS_A_CONTEXT_UNDER_URLLIB3_S_INSTRUMENTATION = """
import os, sys
sys.path.insert(0, os.environ["CONTRIB"])
import requests
from opentelemetry import baggage, context
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

URLLib3Instrumentor().instrument()


def kept_by_a_response_hook(response, *args, **kwargs):
    context.attach(baggage.set_baggage("hooked", "yes"))  # kept on purpose, never detached


def handler(event, lambda_context):
    requests.get(event["http"] + "/status/200?via=hook", hooks={"response": kept_by_a_response_hook}, timeout=5)
    kept = baggage.get_baggage("hooked")
    requests.get(event["http"] + "/status/200?via=after", timeout=5)
    return {"after the hook": kept}
"""


def test_a_context_the_function_keeps_inside_a_call_stays_under_a_layer_below_instrumented(tmp_path, contrib_path):
    # GIVEN a function that enabled OpenTelemetry's urllib3 instrumentation (lambdawrap then
    # tells it, through the function's context, to add nothing under its requests spans), whose
    # response hook attaches a context it keeps
    task = write_function(tmp_path / "task", KEEPS_A_CONTEXT_UNDER_URLLIB3_S_INSTRUMENTATION)
    with recording_server() as http, instrumented(task, env={"CONTRIB": contrib_path}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        calls = children(rx, invocation_span(rx, result.request_id), 2)
        assert emu.wait_idle(30)
        clients = [s for s in rx.spans() if s["kind"] in OUTGOING]
    # THEN the function keeps it (before: lambdawrap's end of the call put back the context from
    # before it), and each call is still one span, lambdawrap's
    assert result.json() == {"after the hook": "yes"}
    assert sorted(s["scope"] for s in clients) == ["lambdawrap.requests"] * 2 and len(calls) == 2


FAILS_ONCE_ANSWERED = """
import requests


def refuse(response, *args, **kwargs):
    if response.status_code == 302:
        raise LookupError("the function's hook refuses a redirect")


def handler(event, context):
    def ask_another(response, *args, **kwargs):
        requests.get(event["http"] + "/status/201", timeout=5)  # a request of the hook's own

    outcomes = {}
    for name, path, hooks in (("garbled", "/garbled", {}), ("loop", "/loop", {}), ("hook", "/redirect", {"response": refuse}), ("garbled, a hook asking another", "/garbled", {"response": ask_another})):
        try:
            requests.get(event["http"] + path, hooks=hooks, timeout=5)
            outcomes[name] = "answered"
        except Exception as exc:
            outcomes[name] = type(exc).__name__
    return outcomes
"""


def test_a_request_that_fails_once_answered_keeps_the_status_it_was_answered(tmp_path):
    # GIVEN a function whose requests fail after their answer came: a body its encoding does not
    # hold, a redirect loop, a response hook of its own that raises
    task = write_function(tmp_path / "task", FAILS_ONCE_ANSWERED)
    without, result, rx, _ = without_and_with_the_layer(task)
    assert without == {"garbled": "ContentDecodingError", "loop": "TooManyRedirects", "hook": "LookupError", "garbled, a hook asking another": "ContentDecodingError"}
    assert result.json() == without
    calls = children(rx, invocation_span(rx, result.request_id), 5)
    # THEN each span says the status it was answered with beside the error (the conventions ask
    # for it whenever one was received; before: none, as for a call nobody answered), not the
    # status of a request its hook made
    seen = sorted((s["attributes"].get("error.type", ""), s["attributes"].get("http.response.status_code"), s["status_code"]) for s in calls)
    assert seen == [("", 201, 0), ("ContentDecodingError", 200, 2), ("ContentDecodingError", 200, 2), ("LookupError", 302, 2), ("TooManyRedirects", 302, 2)], seen


RELATIVE_URL_QUOTING_ONE = """
import http.client, urllib.parse

def handler(event, context):
    url = urllib.parse.urlsplit(event["http"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", "/?r=http://example.com/")  # a path whose query holds a URL
    status = conn.getresponse().status
    conn.close()
    return {"statusCode": status}
"""


def test_a_relative_url_whose_query_holds_a_url_is_a_call_to_the_connections_host(tmp_path):
    # GIVEN a function sending a request with http.client whose path's query is an absolute URL
    task = write_function(tmp_path / "task", RELATIVE_URL_QUOTING_ONE)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({"http": http.url})
        assert result.json() == {"statusCode": 200}
        (call,) = children(rx, invocation_span(rx, result.request_id), 1)
    # THEN its span names the host the request went to, and the URL it asked for there
    attributes = call["attributes"]
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", http.port), attributes
    assert attributes["url.full"] == f"{http.url}/?r=http://example.com/"


OPENS_A_URL_WITHOUT_SCHEME = """
import urllib.request

def handler(event, context):
    try:
        urllib.request.urlopen("localhost/status/200", timeout=5)  # the scheme forgotten
    except ValueError as exc:
        refused = str(exc)
    return {"refused": refused, "status": urllib.request.urlopen(event["http"] + "/status/200", timeout=5).status}
"""


def test_a_url_urllib_cannot_open_is_the_functions_error_not_lambdawraps(tmp_path):
    # GIVEN a function that passes urlopen() a URL without a scheme (urllib raises ValueError)
    task = write_function(tmp_path / "task", OPENS_A_URL_WITHOUT_SCHEME)
    without, result, rx, lines = without_and_with_the_layer(task)
    # THEN it gets the same error as without the layer, the next request is traced ...
    assert result.json() == without and without["status"] == 200, (result.json(), without)
    (call,) = children(rx, invocation_span(rx, result.request_id), 1)
    assert call["attributes"]["http.response.status_code"] == 200
    # ... and lambdawrap neither logs nor counts a failure of its own
    assert not [line for line in lines if "lambdawrap" in line], lines
    assert metric_total(rx, "lambdawrap.internal_errors") == 0


URLLIB3_HEADERS_IT_CANNOT_READ = """
import urllib.parse
import urllib3

def handler(event, context):
    url = urllib.parse.urlsplit(event["http"])
    pool = urllib3.HTTPConnectionPool(url.hostname, url.port)
    failures = []
    for headers in ((("X-A", "1"),), (), [("X-A", "1")]):  # pairs, not a mapping
        try:
            pool.urlopen("GET", "/status/200?via=pairs", headers=headers)
        except Exception as exc:
            failures.append([type(exc).__name__, str(exc)])
    return {"failures": failures, "status": pool.urlopen("GET", "/status/200?via=mapping", headers={"X-A": "1"}).status}
"""


def test_urllib3_headers_it_cannot_read_fail_as_without_the_layer(tmp_path):
    # GIVEN a function that gives urllib3's urlopen() its headers as pairs (urllib3 raises)
    task = write_function(tmp_path / "task", URLLIB3_HEADERS_IT_CANNOT_READ)
    without, result, rx, lines = without_and_with_the_layer(task)
    # THEN each fails as without the layer, and the request after them is traced
    assert result.json() == without and len(without["failures"]) == 3, (result.json(), without)
    (call,) = children(rx, invocation_span(rx, result.request_id), 1)
    assert call["attributes"]["url.full"].endswith("via=mapping")
    # ... with no failure of lambdawrap's logged
    assert not [line for line in lines if "lambdawrap" in line], lines



SENDS_AN_UNPREPARED_REQUEST = """
import requests

def handler(event, context):
    session = requests.Session()
    request = requests.Request("GET", event["http"] + "/status/200?via=unprepared", headers={"X-A": "1"})
    try:
        session.send(request)
        failure = None
    except ValueError as exc:
        failure = [type(exc).__name__, str(exc)]
    prepared = session.send(request.prepare(), timeout=5)
    return {"failure": failure, "headers": sorted(request.headers), "status": prepared.status_code}
"""


def test_an_unprepared_request_sent_fails_as_without_the_layer_and_is_left_as_it_was(tmp_path):
    # GIVEN a function that gives Session.send() a Request, not a PreparedRequest (requests
    # raises ValueError), then sends it prepared
    task = write_function(tmp_path / "task", SENDS_AN_UNPREPARED_REQUEST)
    without, result, rx, lines = without_and_with_the_layer(task)
    # THEN the same error, the Request's headers as the function made them (no trace context
    # added to them), and only the request that was sent is a span
    assert result.json() == without and without["failure"][0] == "ValueError", (result.json(), without)
    (call,) = children(rx, invocation_span(rx, result.request_id), 1)
    assert call["attributes"]["http.response.status_code"] == 200 and "error.type" not in call["attributes"]
    assert not [line for line in lines if "lambdawrap" in line], lines


CALLS_LOOPBACK = """
import os, urllib.request
import requests

def handler(event, context):
    port = event["port"]
    statuses = [requests.get(f"http://localhost:{port}/status/200?via=localhost", timeout=5).status_code]
    statuses.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/status/200?via=address", timeout=5).status)
    try:
        requests.get(f"http://[::1]:{os.environ['REFUSED_PORT']}/refused", timeout=5)
    except requests.ConnectionError:
        statuses.append("refused")
    return {"statuses": statuses}
"""


def test_a_loopback_host_excluded_with_its_port_is_not_traced(tmp_path):
    # GIVEN a local service the function calls (a sidecar extension on localhost, say) excluded
    # as host:port, by name, and an IPv6 loopback one excluded with its address in brackets
    task = write_function(tmp_path / "task", CALLS_LOOPBACK)
    refused = closed_port()
    with recording_server() as http:
        env = {"LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS": f"localhost:{http.port},[::1]:{refused}", "REFUSED_PORT": str(refused)}
        with instrumented(task, env=env, timeout_s=30) as (emu, rx):
            result = emu.invoke({"port": http.port})
            assert result.json() == {"statuses": [200, 200, "refused"]}
            invocation_span(rx, result.request_id)
            assert emu.wait_idle(30)
            clients = [s for s in rx.spans() if s["kind"] in OUTGOING]
    # THEN none of those calls is traced, nor carries a context (127.0.0.1 is localhost)
    assert clients == [], clients
    assert [r["headers"].get("traceparent") for r in http.requests] == [None, None], http.requests


RAISES_A_REFUSED_CALL = """
import http.client, os, urllib.request

def handler(event, context):
    port = int(os.environ["REFUSED_PORT"])
    if event["library"] == "http.client":
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/refused")
        return connection.getresponse().status
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/refused", timeout=5).status
"""


@pytest.mark.timeout(600)
@every_python
def test_a_failed_call_raised_to_the_caller_has_the_stack_trace_it_has_without_the_layer(tmp_path, runtime_python, python_version):
    # GIVEN a function whose HTTP call is refused and which lets the error reach the caller
    # (standard library clients: the runtimes of every version have them)
    task = write_function(tmp_path / "task", RAISES_A_REFUSED_CALL)
    env = {"REFUSED_PORT": str(closed_port())}
    libraries = ("urllib", "http.client")
    with Emulator(str(task), "app.handler", invoke_port=None, timeout_s=30, env=env, python=runtime_python) as bare:
        without = [bare.invoke({"library": library}).json() for library in libraries]
    with instrumented(task, env=env, timeout_s=30, python=runtime_python) as (emu, rx):
        results = [emu.invoke({"library": library}) for library in libraries]
        # THEN the caller gets the same error payload, stack trace included (on 3.10 the
        # client wrapper's line was in it: a bare raise there keeps the re-raising frame) ...
        for library, result, bare_answer in zip(libraries, results, without):
            answer = result.json()
            assert {**answer, "requestId": None} == {**bare_answer, "requestId": None}, (python_version, answer["stackTrace"], bare_answer["stackTrace"])
            assert not [line for line in answer["stackTrace"] if "lambdawrap" in line]
            # ... and the call is still a failed client span under the invocation
            (call,) = children(rx, invocation_span(rx, result.request_id), 1)
            assert call["attributes"]["error.type"] == {"urllib": "URLError", "http.client": "ConnectionRefusedError"}[library]
        lines = emu.log_lines("function")
    # ... and the error the runtime logs shows no line of lambdawrap's either
    assert [line for line in lines if "Connection refused" in line] and not [line for line in lines if "lambdawrap" in line], lines


MAKES_A_SESSION_AIOHTTP_REFUSES = """
import asyncio
import aiohttp

async def session():
    async with aiohttp.ClientSession(ARGUMENTS):
        pass

def handler(event, context):
    asyncio.run(session())
"""


@pytest.mark.parametrize("arguments, error", [("timeout=5", "ValueError"), ("trace_configs=5", "TypeError")], ids=["a number for a timeout", "a number for trace configs"])
def test_a_session_aiohttp_refuses_to_make_has_the_stack_trace_it_has_without_the_layer(tmp_path, arguments, error):
    # GIVEN a function that makes an aiohttp session with arguments aiohttp refuses (a plain
    # number for its timeout, which wants a ClientTimeout; for its trace configs, which want a
    # list), and lets the error reach the caller
    task = write_function(tmp_path / "task", MAKES_A_SESSION_AIOHTTP_REFUSES.replace("ARGUMENTS", arguments))
    without = answer_without_layer(task, {})
    with instrumented(task, timeout_s=30) as (emu, rx):
        answer = emu.invoke({}).json()
        lines = emu.log_lines("function")
    # THEN the caller gets the same error payload, with no line of the session wrapper's
    # (before, for the trace configs: another message, raised in the wrapper)
    assert without["errorType"] == error
    assert {**answer, "requestId": None} == {**without, "requestId": None}, (answer["stackTrace"], without["stackTrace"])
    assert not [line for line in lines if "lambdawrap" in line], lines


READS_ITS_TRACE_CONFIGS = """
import asyncio
import aiohttp

async def configs(given):
    async with aiohttp.ClientSession(trace_configs=given) as session:
        return type(session.trace_configs).__name__, bool(given) and session.trace_configs[0] is given[0]

def handler(event, context):
    return [asyncio.run(configs(kind(given))) for given in ([aiohttp.TraceConfig()], []) for kind in (tuple, list)]
"""


def test_a_session_s_trace_configs_keep_the_type_the_function_gave(tmp_path):
    # GIVEN a function that gives its sessions their trace configs as a tuple, then as a list,
    # then none in each, and reads them back
    task = write_function(tmp_path / "task", READS_ITS_TRACE_CONFIGS)
    without = answer_without_layer(task, {})
    with instrumented(task, timeout_s=30) as (emu, rx):
        answer = emu.invoke({}).json()
    # THEN each is of the type aiohttp keeps, its own first (before: the tuple became a list,
    # and then the empty tuple, which aiohttp makes a list, stayed a tuple)
    assert without == answer == [["tuple", True], ["list", True], ["list", False], ["list", False]]


SQS_ANSWERS = """
import os
import boto3

def handler(event, context):
    sqs = boto3.client("sqs", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    queue = sqs.create_queue(QueueName=event["queue"])["QueueUrl"]
    own = {"kind": {"DataType": "String", "StringValue": "order"}, "count": {"DataType": "Number", "StringValue": "7"}, "blob": {"DataType": "Binary", "BinaryValue": b"\\x00\\xff"}, "order.tag": {"DataType": "String.custom", "StringValue": "ünï"}}
    answers = [
        sqs.send_message(QueueUrl=queue, MessageBody="plain"),
        sqs.send_message(QueueUrl=queue, MessageBody="with its own", MessageAttributes=own),
        sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": "a", "MessageBody": "plain"}, {"Id": "b", "MessageBody": "own", "MessageAttributes": own}]),
    ]
    for answer in answers:
        answer.pop("ResponseMetadata")
        answer.pop("MessageId", None)
        for entry in answer.get("Successful", ()):
            entry.pop("MessageId")
    return answers
"""


def test_an_sqs_send_answers_the_function_as_without_the_layer_though_the_message_carries_the_context(tmp_path, moto):
    # GIVEN a function that sends SQS messages with and without attributes of its own, alone
    # and in a batch: SQS answers with MD5OfMessageAttributes, the digest of the attributes it
    # received, which a function may check against its own (as SQS documents)
    task = write_function(tmp_path / "task", SQS_ANSWERS)
    with Emulator(str(task), "app.handler", invoke_port=None, timeout_s=30, env={"MOTO_URL": moto.endpoint}) as bare:
        without = bare.invoke({"queue": "answers-bare"}).json()
    with instrumented(task, env={"MOTO_URL": moto.endpoint}, timeout_s=30) as (emu, rx):
        result = emu.invoke({"queue": "answers-layer"})
        invocation_span(rx, result.request_id)
    # THEN each answer is the one it got without the layer (before: a message sent without
    # attributes was answered with a digest, and one with attributes with another digest than
    # its own attributes have, the context's included in it)
    assert isinstance(without, list), without
    assert result.json() == without
    assert "MD5OfMessageAttributes" not in without[0] and "MD5OfMessageAttributes" in without[1]
    # ... while every message carried the context
    received = drained(moto, "answers-layer")
    assert len(received) == 4 and all("traceparent" in m["MessageAttributes"] for m in received)


A_SMALL_QUEUE = """
import os
import boto3
from botocore.config import Config

LIMIT = 1024  # the queue's MaximumMessageSize

def handler(event, context):
    config = Config(retries={"mode": "standard", "max_attempts": 2})
    sqs = boto3.client("sqs", endpoint_url=os.environ["SQS_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test", config=config)
    seen = []  # what the function's own after-call handler reads of each send's answer
    sqs.meta.events.register("after-call.sqs.*", lambda parsed, **kwargs: seen.append([parsed.get("MD5OfMessageAttributes"), parsed["ResponseMetadata"]["RetryAttempts"]]) if "MD5OfMessageBody" in parsed or "Error" in parsed else None)
    queue = sqs.create_queue(QueueName=event["queue"], Attributes={"MaximumMessageSize": str(LIMIT)})["QueueUrl"]
    own = {"kind": {"DataType": "String", "StringValue": "order"}}  # 4 + 6 + 5 bytes
    answers = []
    for body in ("f" * (LIMIT - 15), "o" * (LIMIT - 14), "s"):  # fits, one byte over, small
        try:
            answer = sqs.send_message(QueueUrl=queue, MessageBody=body, MessageAttributes=own)
            answers.append({key: answer[key] for key in ("MD5OfMessageBody", "MD5OfMessageAttributes")} | {"retries": answer["ResponseMetadata"]["RetryAttempts"]})
        except sqs.exceptions.ClientError as exc:
            metadata = exc.response["ResponseMetadata"]
            answers.append({"error": str(exc), "retries": metadata["RetryAttempts"], "most": metadata.get("MaxAttemptsReached", False)})
    return {"answers": answers, "seen": seen}
"""


def test_a_message_its_queue_refuses_with_the_context_is_sent_as_the_function_wrote_it(tmp_path, moto):
    # GIVEN a queue whose MaximumMessageSize (1 KiB here; 1 KiB to 1 MiB) the layer cannot know,
    # and a function that sends it a message that fits as written, one that does not, and a
    # small one: SQS counts the attributes in the size, the context's among them
    from support.aws_front import SEND_MESSAGE, AwsFront

    task = write_function(tmp_path / "task", A_SMALL_QUEUE)
    with AwsFront(moto.endpoint, {}, sqs_message_limit=1024) as front:
        with Emulator(str(task), "app.handler", invoke_port=None, timeout_s=30, env={"SQS_URL": front.endpoint}) as bare:
            without = bare.invoke({"queue": "small-bare"}).json()
        with instrumented(task, env={"SQS_URL": front.endpoint}, timeout_s=30) as (emu, rx):
            result = emu.invoke({"queue": "small-layer"})
            invocation_span(rx, result.request_id)
            assert emu.wait_idle(30)
        sends = [turn for _, turn in front.made(SEND_MESSAGE)]
    # THEN the function gets what it gets without the layer: the message that fits is queued
    # (before: refused, the context's attributes making it too long), the one too long is
    # refused alike, and no answer, nor what its own after-call handler reads, counts an
    # attempt the function did not make
    assert isinstance(without, dict) and "error" not in without["answers"][0] and "shorter than 1024" in without["answers"][1]["error"], without
    assert without["answers"][1]["most"] is False and len(without["seen"]) == 3
    assert result.json() == without
    # ... each message refused with the context was sent again as written, once, and counted
    assert sends == ["pass", "too long", "pass", "too long", "pass", "too long", "too long", "pass"], sends
    received = {m["Body"][:1]: sorted(m["MessageAttributes"]) for m in drained(moto, "small-layer")}
    assert received == {"f": ["kind"], "s": ["kind", "traceparent"]}, received
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "context_not_injected"}) == 2
    spans = children(rx, invocation_span(rx, result.request_id), 4)
    sent = [span for span in spans if span["attributes"].get("rpc.method") == "SendMessage"]
    assert [(span["status_code"], span["attributes"].get("error.type")) for span in sent] == [(0, None), (2, "InvalidParameterValue"), (0, None)], sent


STUBBED_SEND = """
import boto3
from botocore.stub import Stubber

def handler(event, context):
    sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    canned = {"MessageId": "m-1", "MD5OfMessageBody": "5d41402abc4b2a76b9719d911017c592", "MD5OfMessageAttributes": "canned-digest"}
    with Stubber(sqs) as stubber:
        stubber.add_response("send_message", canned, {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q", "MessageBody": "hello"})
        answer = sqs.send_message(QueueUrl="https://sqs.us-east-1.amazonaws.com/1/q", MessageBody="hello")
    answer.pop("ResponseMetadata", None)
    return {"answer": answer, "canned": canned}
"""


REPLAYED_SEND = """
import boto3
from botocore.awsrequest import AWSResponse

ANSWER = b'{"MessageId": "m-1", "MD5OfMessageBody": "5d41402abc4b2a76b9719d911017c592", "MD5OfMessageAttributes": "canned-digest"}'


class Replayed:  # a body as a response cache or a before-send double replays it
    def stream(self, **kwargs):
        yield ANSWER


def handler(event, context):
    sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test", endpoint_url="http://127.0.0.1:9")
    sqs.meta.events.register("before-send", lambda request, **kwargs: AWSResponse(request.url, 200, {"x-amzn-RequestId": "r"}, Replayed()))
    queue = "http://127.0.0.1:9/1/q"
    own = sqs.send_message(QueueUrl=queue, MessageBody="hello", MessageAttributes={"kind": {"DataType": "String", "StringValue": "order"}})
    plain = sqs.send_message(QueueUrl=queue, MessageBody="hello")
    return [own.get("MD5OfMessageAttributes"), plain.get("MD5OfMessageAttributes")]
"""


@pytest.mark.parametrize("function, digests", [(STUBBED_SEND, lambda answer: [answer["answer"]["MD5OfMessageAttributes"]]), (REPLAYED_SEND, lambda answer: answer)], ids=["Stubber", "before-send"])
def test_an_sqs_answer_a_handler_of_the_function_s_made_is_the_function_s_as_it_made_it(tmp_path, function, digests):
    # GIVEN a function whose test double answers SQS sends with an answer of its own: botocore's
    # Stubber (its expected parameters those the function wrote), or a before-send handler
    # replaying a body (a response cache), for a send with attributes of the function's and one
    # without
    task = write_function(tmp_path / "task", function)
    without = answer_without_layer(task, {})
    with instrumented(task, timeout_s=30) as (emu, rx):
        result = emu.invoke({})
        invocation_span(rx, result.request_id)
    # THEN the function gets the answer its double made, unchanged, as without the layer (before,
    # for the replayed one: the digest of its own attributes in place of it, and for the send
    # without any, none; the answer SQS did not send is not given the function's digest)
    assert set(digests(without)) == {"canned-digest"}, without
    assert result.json() == without


GIVES_UP_ON_503 = """
import requests, urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

def raised(call):
    try:
        call()
    except Exception as exc:
        return type(exc).__name__

def handler(event, context):
    url = event["http"] + "/status/503"
    retry = Retry(total=1, status_forcelist=[503], backoff_factor=0)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return [raised(lambda: session.get(url, timeout=5)), raised(lambda: urllib3.PoolManager(retries=retry).request("GET", url))]
"""


def test_a_call_whose_retries_give_up_on_an_answer_s_status_records_that_status(tmp_path):
    # GIVEN a function whose requests and urllib3 calls retry a 503 (urllib3's Retry with a
    # status_forcelist), then give up, raising
    task = write_function(tmp_path / "task", GIVES_UP_ON_503)
    with recording_server() as http, instrumented(task, timeout_s=30) as (emu, rx):
        # WHEN it is invoked
        result = emu.invoke({"http": http.url})
        assert result.json() == ["RetryError", "MaxRetryError"]
        calls = children(rx, invocation_span(rx, result.request_id), 2)
    # THEN each call's span records the status it gave up on, as the conventions name a failed
    # status (before: no status code, and the exception's class as error.type)
    assert [(c["attributes"].get("http.response.status_code"), c["attributes"]["error.type"], c["status_code"]) for c in calls] == [(503, "503", 2)] * 2, calls


# A function whose folder holds a module named like the standard `contextvars`, which neither the
# runtime nor its own imports load: what a traced call leaves in the function's process and
# context is what it leaves without the layer.
CONTEXT_LEFT_AS_IT_WAS = """
import os, sys
import http.client, requests, urllib.request

def handler(event, context):
    requests.get(event["http"] + "/status/200", timeout=10)
    with urllib.request.urlopen(event["http"] + "/status/200", timeout=10):
        pass
    import _contextvars
    return {
        "own_contextvars_ran": "own_contextvars_ran" in os.environ,
        "contextvars_imported": "contextvars" in sys.modules,
        "context": sorted(var.name for var in _contextvars.copy_context()),
    }
"""


def test_traced_calls_leave_the_function_s_modules_and_context_as_they_were(tmp_path):
    # GIVEN a function with a module of its own named `contextvars`
    task = write_function(tmp_path / "task", CONTEXT_LEFT_AS_IT_WAS)
    (task / "contextvars.py").write_text("import os\nos.environ['own_contextvars_ran'] = '1'\n")
    # WHEN it runs without the layer and with it
    without, result, rx, _ = without_and_with_the_layer(task)
    clients = children(rx, invocation_span(rx, result.request_id), 2)
    # THEN its module named `contextvars` never ran, the standard one was not imported, and the
    # calls left nothing in its context (before: the hooks' `import contextvars` ran the
    # function's file, and each requests call left a variable of lambdawrap's set), while both
    # calls were traced
    assert result.json() == without == {"own_contextvars_ran": False, "contextvars_imported": False, "context": []}, (result.json(), without)
    assert len(clients) == 2


# Weak references to a client's methods, as an event dispatcher (blinker's weak connect) holds
# its receivers: the methods they give back are the methods, and what they send is traced.
CALLS_THROUGH_WEAK_METHODS = """
import os, weakref
import http.client, requests
from urllib.parse import urlsplit

def handler(event, context):
    base = urlsplit(event["http"])
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=10)
    weakref.WeakMethod(connection.request)()("GET", "/status/200")
    status = weakref.WeakMethod(connection.getresponse)()().status
    weakref.WeakMethod(connection.close)()()
    session = requests.Session()
    send = weakref.WeakMethod(session.send)()
    answered = send(requests.Request("GET", event["http"] + "/status/204").prepare(), timeout=10).status_code
    return {"statuses": [status, answered], "bound": [send.__self__ is session, send == session.send]}
"""


def test_a_weakly_referenced_client_method_is_the_method_and_its_calls_are_traced(tmp_path):
    # GIVEN a function calling through weak references to its clients' methods
    task = write_function(tmp_path / "task", CALLS_THROUGH_WEAK_METHODS)
    # WHEN it runs without the layer and with it
    without, result, rx, _ = without_and_with_the_layer(task)
    clients = children(rx, invocation_span(rx, result.request_id), 2)
    # THEN it answers as without (before: WeakMethod raised TypeError rebuilding each method:
    # "FunctionWrapperBase() missing required argument 'wrapper'"), and both calls are spans
    assert result.json() == without == {"statuses": [200, 204], "bound": [True, True]}, (result.json(), without)
    assert sorted(span["attributes"]["http.response.status_code"] for span in clients) == [200, 204]


LAZILY_LOADED = LAZY_LOADER_RECIPE + """

httpx = lazy("httpx")


def handler(event, context):
    return httpx.get(event["target"] + "/status/200?via=lazy", timeout=5).status_code
"""


def test_a_library_loaded_lazily_is_traced_from_the_invocation_after_its_first_use(tmp_path):
    # GIVEN a function that loads httpx lazily, first using it inside its first invocation
    task = write_function(tmp_path / "task", LAZILY_LOADED)
    with recording_server() as target, instrumented(task, timeout_s=30) as (emu, rx):
        # WHEN it is invoked three times
        results = [emu.invoke({"target": target.url}) for _ in range(3)]
        assert [r.json() for r in results] == [200] * 3
        spans = [invocation_span(rx, r.request_id) for r in results[1:]]
        calls = [children(rx, span, 1) for span in spans]
    # THEN the calls of the invocations after that one are client spans under their invocation,
    # their context sent downstream (before: none was ever traced); the first one's went before
    # httpx had loaded, and is not
    assert [[call["attributes"]["url.full"].rpartition("via=")[2] for call in made] for made in calls] == [["lazy"], ["lazy"]]
    sent = [r["headers"].get("traceparent") for r in target.requests]
    assert sent[0] is None and [header.split("-")[1:3] for header in sent[1:]] == [[span["trace_id"], call[0]["span_id"]] for span, call in zip(spans, calls)], sent
