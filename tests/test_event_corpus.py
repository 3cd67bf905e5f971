"""Hundreds of sample events nobody on this project wrote (tests/events, sources in SOURCES.md),
each checked against the table of what lambdawrap must make of it (tests/events/expected.json):
in the function's process, and through the real pipeline (emulator + awslambdaric + layer +
companion + OTLP receiver) by the differential harness (tests/support/differential.py), which
also holds the function's answer to every event byte for byte the same with and without the
layer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lambdawrap.handler.triggers import KINDS
from lambdawrap.shared.semconv import SCHEMA_URL
from support.corpus import COMPANION_ATTRIBUTES, EXPECTED, event_files, load
from support.differential import Group, Scenario, run_group
from support.recording import recorded

# Every source issue #12 names, with one corpus event of it and what it must be recognised as.
# Written from the services' documentation, not from lambdawrap's output: the table below must
# agree with it, so the table covers every source.
SOURCES = {
    "API Gateway REST API": ("aws-lambda-go/apigw-request.json", "apigw-rest", "http"),
    "API Gateway HTTP API": ("aws-lambda-go/apigw-v2-request-no-authorizer.json", "apigw-http", "http"),
    "API Gateway WebSocket API": ("datadog-lambda-python/api-gateway-websocket-default.json", "apigw-websocket", "other"),
    "REST API TOKEN authorizer": ("powertools-lambda-python/apiGatewayAuthorizerTokenEvent.json", "apigw-authorizer", "other"),
    "REST API REQUEST authorizer": ("powertools-lambda-python/apiGatewayAuthorizerRequestEvent.json", "apigw-authorizer", "other"),
    "HTTP API authorizer": ("powertools-lambda-python/apiGatewayAuthorizerV2Event.json", "apigw-authorizer", "other"),
    "WebSocket API authorizer": ("aws-lambda-rust-runtime/example-apigw-v2-custom-authorizer-websocket-request.json", "apigw-authorizer", "other"),
    "Application Load Balancer": ("aws-lambda-go/alb-lambda-target-request-headers-only.json", "alb", "http"),
    "Application Load Balancer, multi-value headers": ("powertools-lambda-python/albMultiValueHeadersEvent.json", "alb", "http"),
    "Lambda function URL": ("powertools-lambda-python/lambdaFunctionUrlEvent.json", "function-url", "http"),
    "VPC Lattice, event version 1": ("powertools-lambda-python/vpcLatticeEvent.json", "vpc-lattice", "http"),
    "VPC Lattice, event version 2": ("powertools-lambda-python/vpcLatticeV2Event.json", "vpc-lattice", "http"),
    "CloudFront Lambda@Edge": ("aws-lambda-java-libs/cloudfront_event.json", "cloudfront", "http"),
    "SQS": ("powertools-lambda-python/sqsEvent.json", "sqs", "pubsub"),
    "SNS": ("powertools-lambda-python/snsEvent.json", "sns", "pubsub"),
    "SNS to SQS": ("powertools-lambda-python/snsSqsEvent.json", "sqs", "pubsub"),
    "Kinesis Data Streams": ("powertools-lambda-python/kinesisStreamEvent.json", "kinesis", "pubsub"),
    "Data Firehose": ("powertools-lambda-python/kinesisFirehosePutEvent.json", "firehose", "pubsub"),
    "DynamoDB Streams": ("powertools-lambda-python/dynamoStreamEvent.json", "dynamodb", "datasource"),
    "Amazon MSK": ("powertools-lambda-python/kafkaEventMsk.json", "kafka", "pubsub"),
    "self-managed Kafka": ("powertools-lambda-python/kafkaEventSelfManaged.json", "kafka", "pubsub"),
    "Amazon MQ for ActiveMQ": ("powertools-lambda-python/activeMQEvent.json", "activemq", "pubsub"),
    "Amazon MQ for RabbitMQ": ("powertools-lambda-python/rabbitMQEvent.json", "rabbitmq", "pubsub"),
    "EventBridge Pipe from Kinesis": ("awsdocs-eventbridge-user-guide/pipes-kinesis.json", "kinesis", "pubsub"),
    "EventBridge Pipe from DynamoDB": ("awsdocs-eventbridge-user-guide/pipes-dynamodb.json", "dynamodb", "datasource"),
    "EventBridge Pipe from Amazon MSK": ("awsdocs-eventbridge-user-guide/pipes-msk.json", "kafka", "pubsub"),
    "EventBridge Pipe from self-managed Kafka": ("awsdocs-eventbridge-user-guide/pipes-self-managed-kafka.json", "kafka", "pubsub"),
    "EventBridge Pipe from ActiveMQ": ("awsdocs-eventbridge-user-guide/pipes-activemq.json", "activemq", "pubsub"),
    "EventBridge Pipe from RabbitMQ": ("awsdocs-eventbridge-user-guide/pipes-rabbitmq.json", "rabbitmq", "pubsub"),
    "DocumentDB change stream": ("aws-lambda-rust-runtime/example-documentdb-insert-event.json", "documentdb", "datasource"),
    "S3 notification": ("powertools-lambda-python/s3Event.json", "s3", "datasource"),
    "S3 notification through SQS": ("powertools-lambda-python/s3SqsEvent.json", "sqs", "pubsub"),
    "S3 notification through SNS": ("assembled/s3-notification-via-sns.json", "sns", "pubsub"),
    "S3 notification through EventBridge": ("powertools-lambda-python/s3EventBridgeNotificationObjectCreatedEvent.json", "s3", "datasource"),
    "S3 Batch Operations": ("powertools-lambda-python/s3BatchOperationEventSchemaV2.json", "s3-batch", "other"),
    "S3 Object Lambda": ("powertools-lambda-python/s3ObjectEventIAMUser.json", "s3-object-lambda", "datasource"),
    "EventBridge event": ("powertools-lambda-python/eventBridgeEvent.json", "eventbridge", "pubsub"),
    "EventBridge Scheduler": ("assembled/eventbridge-scheduler.json", "schedule", "timer"),
    "EventBridge scheduled rule": ("aws-lambda-rust-runtime/example-eventbridge-schedule.json", "schedule", "timer"),
    "CloudWatch Logs subscription": ("powertools-lambda-python/cloudWatchLogEvent.json", "cloudwatch-logs", "pubsub"),
    "SES email receiving": ("powertools-lambda-python/sesEvent.json", "ses", "pubsub"),
    "Cognito user-pool trigger": ("powertools-lambda-python/cognitoPreSignUpEvent.json", "cognito", "other"),
    "AppSync direct resolver": ("powertools-lambda-python/appSyncDirectResolver.json", "appsync", "other"),
    "AppSync authorizer": ("powertools-lambda-python/appSyncAuthorizerEvent.json", "appsync-authorizer", "other"),
    "IoT button": ("aws-lambda-go/iot-button-event.json", "iot", "other"),
    "IoT custom authorizer": ("aws-lambda-go/iot-custom-auth-request.json", "iot", "other"),
    "Config rule on a change": ("powertools-lambda-python/awsConfigRuleConfigurationChanged.json", "config", "other"),
    "Config rule, periodic": ("powertools-lambda-python/awsConfigRuleScheduled.json", "config", "timer"),
    "CodeCommit trigger": ("aws-lambda-go/code-commit-event.json", "codecommit", "other"),
    "CodePipeline job": ("powertools-lambda-python/codePipelineEvent.json", "codepipeline", "other"),
    "Secrets Manager rotation": ("powertools-lambda-python/secretsManagerEvent.json", "secretsmanager", "other"),
    "Bedrock agent action group": ("powertools-lambda-python/bedrockAgentEvent.json", "bedrock-agent", "other"),
    "CloudFormation custom resource": ("powertools-lambda-python/cloudformationCustomResourceCreate.json", "cloudformation", "other"),
    "CloudWatch alarm action": ("powertools-lambda-python/cloudWatchAlarmEventSingleMetric.json", "cloudwatch-alarm", "other"),
    "Step Functions task (an application payload)": ("assembled/stepfunctions-input-lambdawrap.json", "other", "other"),
}

def test_the_table_holds_every_event_of_the_corpus_and_nothing_else():
    assert sorted(EXPECTED) == event_files()
    assert len(EXPECTED) >= 500


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_the_table_covers_every_source(source):
    name, kind, faas_trigger = SOURCES[source]
    assert EXPECTED[name]["kind"] == kind
    assert EXPECTED[name]["attributes"]["faas.trigger"] == faas_trigger


def test_every_kind_is_in_the_table():
    assert {expected["kind"] for expected in EXPECTED.values()} == set(KINDS)


@pytest.mark.parametrize("name", event_files())
def test_in_the_functions_process(name):
    # GIVEN an event WHEN the handler wrapper sees it THEN the record it sends says what the
    # table says: trigger, span name and kind, attributes (exactly), links and parent.
    record = recorded(load(name))["start"]
    expected = EXPECTED[name]
    assert record["trigger"] == expected["kind"]
    assert (record["span_name"], record["span_kind"]) == (expected["span_name"], expected["span_kind"])
    assert record["attributes"] == expected["attributes"]
    assert [f"{t}-{s}" for t, s, _ in record["links"]] == expected.get("links", [])
    parent = f"{record['trace_id']}-{record['parent_span_id']}" if record["parent_span_id"] else None
    assert parent == expected.get("parent")


@pytest.fixture(scope="module")
def report():
    """The whole corpus through the differential harness: one environment without the layer and
    one with it, the function echoing each event (tests/functions/diff)."""
    names = event_files()
    group = Group(
        "sample events",
        "diff",
        scenarios=[Scenario(name, load(name), parent=EXPECTED[name].get("parent"), attributes=EXPECTED[name]["attributes"], error=EXPECTED[name].get("error")) for name in names],
    )
    return run_group(group)


def test_responses_are_byte_identical_with_and_without_the_layer(report):
    # What the caller got (status, error header, body: the event as the function saw it) and
    # what the function printed are the same with and without the layer, for every event.
    assert report.differences == []
    # The function echoes each event: the answers are the events themselves, not empty ones.
    echoed = [json.loads(result.body) for result in report.layered.results]
    assert echoed == [load(name) if isinstance(load(name), dict) else {"type": "list", "value": load(name)} for name in event_files()]


def test_through_the_real_pipeline(report):
    # Every event is accounted for by one span, with the table's parent and attributes (the
    # harness's ledger), and the span's name, kind, links and schema are the table's too;
    # nothing else is attached (the attributes are compared whole).
    assert report.ledger == []
    spans = {span["attributes"].get("faas.invocation_id"): span for span in report.receiver.spans()}
    problems = []
    for name, result in zip(event_files(), report.layered.results):
        expected = EXPECTED[name]
        span = spans[result.request_id]
        attributes = {k: list(v) if isinstance(v, tuple) else v for k, v in span["attributes"].items() if k not in COMPANION_ATTRIBUTES}
        got = {
            "kind": span["attributes"]["lambdawrap.trigger"],
            "span_name": span["name"],
            "span_kind": span["kind"] - 1,  # OTLP numbers kinds from 1 (INTERNAL), the API from 0
            "attributes": attributes,
            "links": [f"{link['trace_id']}-{link['span_id']}" for link in span["links"]],
            "parent": f"{span['trace_id']}-{span['parent_span_id']}" if span["parent_span_id"] else None,
        }
        want = dict(expected, links=expected.get("links", []), parent=expected.get("parent"))
        want.pop("error", None)  # the span's status, which the harness's ledger checks
        want["span_name"] = want["span_name"] or "function"  # named after the function
        if got != want:
            problems.append(f"{name}: {got} != {want}")
        if span["schema_url"] != SCHEMA_URL:
            problems.append(f"{name}: schema_url {span['schema_url']!r}")
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} in all)"


def test_the_recognition_benchmark_measures_every_kind(tmp_path):
    # bench/_inprocess.py recognition: a row per kind of the table, none of them empty.
    bench = Path(__file__).resolve().parent.parent / "bench" / "_inprocess.py"
    out = tmp_path / "recognition.json"
    subprocess.run([sys.executable, str(bench), "recognition", "--n", "2", "--json", str(out)], check=True, capture_output=True, timeout=300)
    rows = json.loads(out.read_text())
    assert set(rows) == {expected["kind"] for expected in EXPECTED.values()}
    assert all(row["events"] > 0 and 0 < row["detect_trigger_p50_us"] <= row["before_handler_max_us"] for row in rows.values())
