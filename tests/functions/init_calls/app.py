"""A module that calls out as it loads, as many functions do: a config server over HTTP, and
SSM for a parameter it may not find. With FAIL_AT_IMPORT set, the config server answers 503 and
the module fails to load on it."""

import os
import urllib.request

import boto3
from botocore.config import Config

_PATH = "/status/503?at=config" if os.environ.get("FAIL_AT_IMPORT") else "/status/200?at=config"
with urllib.request.urlopen(os.environ["CONFIG_URL"] + _PATH, timeout=10) as answer:
    CONFIG_STATUS = answer.status

_ssm = boto3.client("ssm", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}))
try:
    PARAMETER = _ssm.get_parameter(Name="/orders/feature-flags")["Parameter"]["Value"]
except _ssm.exceptions.ParameterNotFound as error:
    PARAMETER = type(error).__name__
print("loaded with config", CONFIG_STATUS, "and parameter", PARAMETER)


def handler(event, context):
    return {"config": CONFIG_STATUS, "parameter": PARAMETER, "do": event.get("do")}
