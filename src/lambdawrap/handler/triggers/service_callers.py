"""AWS services that call the function to do a job of theirs (faas.trigger "other", except a
periodic Config rule, which is a "timer"): Config rules, CodeCommit triggers, CodePipeline
jobs, Secrets Manager rotation, Bedrock agent action groups, CloudFormation custom resources,
CloudWatch alarm actions and S3 Batch Operations.

The conventions define no attributes for most of these: what identifies the call is reported
under lambdawrap.*, and registry attributes are used where one exists (aws.s3.*,
aws.secretsmanager.secret.arn).
"""

from __future__ import annotations

from lambdawrap.handler.triggers.data_sources import s3_key
from lambdawrap.handler.triggers.trigger import (
    BEDROCK_AGENT,
    CLOUDFORMATION,
    CLOUDWATCH_ALARM,
    CODECOMMIT,
    CODEPIPELINE,
    CONFIG,
    EVENT_SOURCE_ARN,
    S3_BATCH,
    SECRETS_MANAGER,
    Trigger,
    arn_resource,
    first,
    first_text,
    mapping,
    put,
    put_arn,
    text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Dict, Optional

# A periodic rule's invokingEvent is a short JSON text; a configuration change's can be large
# and is never parsed.
_MAX_SCHEDULED_INVOKING_EVENT = 1024


def _attributes(trigger: str = "other") -> Dict[str, object]:
    return {"faas.trigger": trigger}


def config(event: dict) -> Optional[Trigger]:
    """A Config rule evaluation: periodic (``ScheduledNotification``) or on a change."""
    invoking = event.get("invokingEvent")
    if not isinstance(invoking, str) or "configRuleName" not in event:
        return None
    attributes = _attributes()
    if len(invoking) <= _MAX_SCHEDULED_INVOKING_EVENT and '"ScheduledNotification"' in invoking:
        attributes["faas.trigger"] = "timer"
        attributes["lambdawrap.config.message_type"] = "ScheduledNotification"
        import json  # already imported by the runtime

        try:
            put(attributes, "faas.time", mapping(json.loads(invoking)).get("notificationCreationTime"))
        except (ValueError, RecursionError):  # not JSON, or nested deeper than json parses
            pass
    put(attributes, "lambdawrap.config.rule_name", event.get("configRuleName"))
    return Trigger(CONFIG, attributes)


def codecommit(first_record: dict) -> Trigger:
    """A CodeCommit repository trigger (``Records[].codecommit``)."""
    attributes = _attributes()
    put_arn(attributes, EVENT_SOURCE_ARN, first_record.get("eventSourceARN"))  # the repository
    return Trigger(CODECOMMIT, attributes)


def codepipeline(event: dict) -> Optional[Trigger]:
    """A CodePipeline Lambda action: ``{"CodePipeline.job": {"id", "data"}}``."""
    job = event.get("CodePipeline.job")
    if not isinstance(job, dict):
        return None
    attributes = _attributes()
    put(attributes, "lambdawrap.codepipeline.job.id", job.get("id"))
    return Trigger(CODEPIPELINE, attributes)


def secrets_rotation(event: dict) -> Optional[Trigger]:
    """A Secrets Manager rotation step: ``{"Step", "SecretId", "ClientRequestToken"}``."""
    step = text(event.get("Step"))
    secret = text(event.get("SecretId"))
    if step is None or secret is None:
        return None
    attributes = _attributes()
    attributes["lambdawrap.secretsmanager.rotation_step"] = step
    if secret.startswith("arn:"):
        attributes["aws.secretsmanager.secret.arn"] = secret
    return Trigger(SECRETS_MANAGER, attributes)


def bedrock_agent(event: dict) -> Optional[Trigger]:
    """A Bedrock agent's action group call: an API path (``apiPath``) or a function (``function``)."""
    agent = event.get("agent")
    if not isinstance(agent, dict) or "actionGroup" not in event:
        return None
    attributes = _attributes()
    put(attributes, "lambdawrap.bedrock.agent.id", agent.get("id"))
    put(attributes, "lambdawrap.bedrock.agent.name", agent.get("name"))
    put(attributes, "lambdawrap.bedrock.action_group", event.get("actionGroup"))
    put(attributes, "lambdawrap.bedrock.api_path", event.get("apiPath"))
    put(attributes, "lambdawrap.bedrock.function", event.get("function"))
    return Trigger(BEDROCK_AGENT, attributes)


def cloudformation(event: dict) -> Optional[Trigger]:
    """A CloudFormation custom resource request (Create, Update or Delete)."""
    request_type = text(event.get("RequestType"))
    # CDK's provider framework hands its handlers the request without the ResponseURL.
    if request_type is None or ("ResponseURL" not in event and "LogicalResourceId" not in event):
        return None
    attributes = _attributes()
    attributes["lambdawrap.cloudformation.request_type"] = request_type
    put(attributes, "lambdawrap.cloudformation.resource_type", event.get("ResourceType"))
    put_arn(attributes, EVENT_SOURCE_ARN, event.get("StackId"))
    return Trigger(CLOUDFORMATION, attributes)


def cloudwatch_alarm(event: dict) -> Optional[Trigger]:
    """A CloudWatch alarm's action invoking the function on a state change."""
    arn = text(event.get("alarmArn")) or first_text(event.get("resources"))
    if arn is None or event.get("source") != "aws.cloudwatch":
        return None
    attributes = _attributes()
    put_arn(attributes, EVENT_SOURCE_ARN, arn)
    put(attributes, "lambdawrap.cloudwatch.alarm_state", mapping(mapping(event.get("alarmData")).get("state")).get("value"))
    return Trigger(CLOUDWATCH_ALARM, attributes)


def s3_batch(event: dict) -> Optional[Trigger]:
    """An S3 Batch Operations task: schema 1.0 names the bucket by ARN, 2.0 by name."""
    tasks = event.get("tasks")
    if not isinstance(tasks, list):
        return None
    task = first(tasks)
    attributes = _attributes()
    put(attributes, "aws.s3.bucket", text(task.get("s3Bucket")) or arn_resource(task.get("s3BucketArn")))
    put(attributes, "aws.s3.key", s3_key(task.get("s3Key")))
    put(attributes, "lambdawrap.s3_batch.job.id", mapping(event.get("job")).get("id"))
    return Trigger(S3_BATCH, attributes)
