"""Outgoing calls that fail in every way a caller meets: what each library returned or raised is
the answer, compared with and without the layer by the differential harness."""

import asyncio
import logging
import os
import urllib.error
import urllib.request

import aiohttp
import boto3
import httpx
import requests
import urllib3
from botocore.config import Config


def _client(service, attempts=1):
    return boto3.client(service, endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=2, read_timeout=5))


async def _aiohttp_get(url, timeout):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.get(url) as response:
            return response.status


async def _httpx_async_get(url, timeout):
    async with httpx.AsyncClient(timeout=timeout) as client:
        return (await client.get(url)).status_code


def _urllib_get(url, timeout):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status


CALLS = {
    "requests": lambda url, t: requests.get(url, timeout=t).status_code,
    "urllib3": lambda url, t: urllib3.PoolManager(retries=False).request("GET", url, timeout=t).status,
    "urllib": _urllib_get,
    "httpx": lambda url, t: httpx.get(url, timeout=t).status_code,
    "httpx_async": lambda url, t: asyncio.run(_httpx_async_get(url, t)),
    "aiohttp": lambda url, t: asyncio.run(_aiohttp_get(url, t)),
}

AWS = {
    "missing_table": lambda: _client("dynamodb").get_item(TableName="missing", Key={"id": {"S": "1"}}),
    "missing_bucket": lambda: _client("s3").get_object(Bucket="missing-bucket", Key="k"),
    "missing_queue": lambda: _client("sqs").send_message(QueueUrl=os.environ["MOTO_URL"] + "/123456789012/missing", MessageBody="x"),
    "list_tables": lambda: _client("dynamodb").list_tables(),
    "refused_with_retries": lambda: boto3.client("dynamodb", endpoint_url=os.environ["REFUSED_URL"], region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t", config=Config(retries={"max_attempts": 3, "mode": "standard"})).list_tables(),
}


def _describe(result):
    if isinstance(result, dict) and "ResponseMetadata" in result:
        return {"status": result["ResponseMetadata"]["HTTPStatusCode"], "keys": sorted(k for k in result if k != "ResponseMetadata")}
    return result


def handler(event, context):
    if event.get("log_level"):
        # As AWS_LAMBDA_LOG_LEVEL=DEBUG or a function's own basicConfig(level=DEBUG) does:
        # botocore's event system logs each handler it calls.
        logging.getLogger("botocore.hooks").setLevel(event["log_level"])
        try:
            return _call(event)
        finally:
            logging.getLogger("botocore.hooks").setLevel(logging.NOTSET)
    return _call(event)


def _call(event):
    do = event["do"]
    call = (lambda: CALLS[event["library"]](event["url"], event.get("timeout", 5))) if do == "http" else AWS[event["call"]]
    if event.get("propagate"):
        return _describe(call())  # the library's exception reaches the caller as is
    try:
        return {"returned": _describe(call())}
    except Exception as exc:  # the answer is what the library raised
        return {"raised": type(exc).__module__ + "." + type(exc).__qualname__, "message": str(exc), "code": getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None}
