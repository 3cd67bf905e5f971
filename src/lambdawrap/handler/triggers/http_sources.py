"""HTTP sources: API Gateway REST APIs (payload 1.0) and HTTP APIs (2.0), Lambda function URLs,
Application Load Balancers, VPC Lattice (event versions 1 and 2) and CloudFront (Lambda@Edge).

Each recogniser returns a Trigger or ``None`` when the event is not of its shape.
"""

from __future__ import annotations

from itertools import islice

from lambdawrap.handler.triggers.http_request import MAX_FIELDS, http_trigger, query_from_parameters, request_headers, status_from
from lambdawrap.handler.triggers.trigger import (
    ALB,
    APIGW_HTTP,
    APIGW_REST,
    CLOUDFRONT,
    EVENT_SOURCE_ARN,
    FUNCTION_URL,
    MAX_PARSED_CHARS,
    VPC_LATTICE,
    Trigger,
    mapping,
    put,
    put_arn,
    text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Dict, Optional

# What API Gateway answers when the function's response is not an object with a statusCode: with
# payload format 2.0 (HTTP APIs, function URLs) it infers "200 OK" and takes the response for the
# body; with an HTTP API's payload 1.0 it assumes nothing and answers 500.
_PAYLOAD_V2_WITHOUT_CODE = 200
_HTTP_API_V1_WITHOUT_CODE = 500
# Bytes the runtime posts as they are (a handler returning orjson.dumps(...)) are the JSON the
# service reads its status from. Parsing them costs the function's process ~1 ms per 100 KiB
# (after the post, billed): past this size the span has no status rather than a guessed one.
MAX_PARSED_RESPONSE_BYTES = 256 * 1024


def from_request_context(event: dict, context: dict) -> Optional[Trigger]:
    """An HTTP request delivered with a ``requestContext``: API Gateway, function URL, ALB, VPC
    Lattice v2."""
    if "elb" in context:
        return _alb(event)
    if "serviceNetworkArn" in context or "targetGroupArn" in context:
        return _lattice_v2(event, context)
    http = context.get("http")
    if event.get("version") == "2.0" and isinstance(http, dict):
        return _payload_v2(event, context, http)
    if isinstance(event.get("httpMethod"), str) or isinstance(context.get("httpMethod"), str):
        return _rest(event, context)
    return None


def _rest(event: dict, context: dict) -> Trigger:
    headers = request_headers(event.get("headers"), event.get("multiValueHeaders"))
    identity = mapping(context.get("identity"))
    route = text(event.get("resource")) or text(context.get("resourcePath"))
    if route == "$default":
        # An HTTP API's payload 1.0 for a request no route matched: "$default" is no template.
        route = None
    return http_trigger(
        APIGW_REST,
        headers,
        method=text(event.get("httpMethod")) or text(context.get("httpMethod")),
        # requestContext.path is the path as requested (with the stage or base path mapping);
        # the top-level path is relative to the API.
        path=text(context.get("path")) or text(event.get("path")),
        query=query_from_parameters(event.get("queryStringParameters"), event.get("multiValueQueryStringParameters"), encode=True),
        scheme="https",  # REST APIs only listen on HTTPS
        route=route,
        domain=text(context.get("domainName")),
        client=text(identity.get("sourceIp")),
        user_agent=text(identity.get("userAgent")),
        protocol=context.get("protocol"),
        # Only an HTTP API's payload 1.0 says its version; a REST API's (a 502 without a status
        # from a proxy integration, a 200 from others) says nothing, and is not guessed.
        status_without_code=_HTTP_API_V1_WITHOUT_CODE if event.get("version") == "1.0" else None,
    )


def _payload_v2(event: dict, context: dict, http: dict) -> Trigger:
    domain = context.get("domainName")
    # Function URL hosts are <url-id>.lambda-url.<region>.on.aws; HTTP APIs use
    # execute-api.<region>.amazonaws.com or a custom domain. Both send routeKey "$default".
    is_url = isinstance(domain, str) and ".lambda-url." in domain[:MAX_PARSED_CHARS]
    route = None
    if not is_url:
        # routeKey is "<METHOD> <path template>" ("ANY /pets/{id}"), or "$default" when no
        # route matched, which names no route at all.
        route_key = text(event.get("routeKey")) or text(context.get("routeKey"))
        if route_key and route_key != "$default":
            route = route_key[:MAX_PARSED_CHARS].partition(" ")[2] or None
    query = event.get("rawQueryString")
    if not isinstance(query, str):
        # Not a real 2.0 event, but rebuild what can be rebuilt (values are decoded).
        query = query_from_parameters(event.get("queryStringParameters"), None, encode=True)
    headers = request_headers(event.get("headers"))
    return http_trigger(
        FUNCTION_URL if is_url else APIGW_HTTP,
        headers,
        method=text(http.get("method")),
        path=text(event.get("rawPath")) or text(http.get("path")),
        query=query,
        scheme="https",  # both only listen on HTTPS
        route=route,
        domain=text(domain),
        client=text(http.get("sourceIp")),
        user_agent=text(http.get("userAgent")),
        protocol=http.get("protocol"),
        status_without_code=_PAYLOAD_V2_WITHOUT_CODE,
    )


def _forwarded_scheme(headers: Dict[str, str], header_name: str) -> Optional[str]:
    # Load balancers and Lattice listeners may be plain HTTP; the proxy says which it received.
    scheme = headers.get(header_name)
    return scheme if scheme in ("http", "https") else None


def _alb(event: dict) -> Trigger:
    headers = request_headers(event.get("headers"), event.get("multiValueHeaders"))
    trigger = http_trigger(
        ALB,
        headers,
        method=text(event.get("httpMethod")),
        path=text(event.get("path")),
        # ALB hands query values over exactly as received: used as they are.
        query=query_from_parameters(event.get("queryStringParameters"), event.get("multiValueQueryStringParameters"), encode=False),
        scheme=_forwarded_scheme(headers, "x-forwarded-proto") or "https",
    )
    put_arn(trigger.attributes, EVENT_SOURCE_ARN, mapping(mapping(event.get("requestContext")).get("elb")).get("targetGroupArn"))
    return trigger


def lattice_v1(event: dict) -> Optional[Trigger]:
    """VPC Lattice's first event version: ``raw_path`` (with the query), ``method``, headers."""
    method = text(event.get("method"))
    raw_path = text(event.get("raw_path"))
    if method is None or raw_path is None:
        return None
    path, _, query = raw_path[: MAX_PARSED_CHARS * 4].partition("?")
    headers = request_headers(event.get("headers"))
    return http_trigger(
        VPC_LATTICE,
        headers,
        method=method,
        path=path,
        query=query or query_from_parameters(event.get("query_string_parameters"), None, encode=False),
        scheme=_forwarded_scheme(headers, "x-forwarded-proto"),
        # Lattice's own samples spell the header "user_agent".
        user_agent=text(headers.get("user_agent")),
    )


def _lattice_v2(event: dict, context: dict) -> Optional[Trigger]:
    method = text(event.get("method"))
    if method is None:
        return None
    headers = request_headers(event.get("headers"))
    trigger = http_trigger(
        VPC_LATTICE,
        headers,
        method=method,
        path=text(event.get("path")),
        query=query_from_parameters(event.get("queryStringParameters"), None, encode=False),
        scheme=_forwarded_scheme(headers, "x-forwarded-proto"),
        user_agent=text(headers.get("user_agent")),
    )
    put_arn(trigger.attributes, EVENT_SOURCE_ARN, context.get("targetGroupArn"))
    return trigger


def _cloudfront_headers(raw: object) -> Dict[str, str]:
    # {"host": [{"key": "Host", "value": "d111111abcdef8.cloudfront.net"}], ...}: the first
    # MAX_FIELDS names are read, whether they hold a value or not, as other sources' headers are
    # (a forged request of a million names without values costs what a real one does).
    values = {}
    if isinstance(raw, dict):
        for name, entries in islice(raw.items(), MAX_FIELDS):
            if isinstance(name, str) and isinstance(entries, list):
                joined = ", ".join(e["value"] for e in entries[:16] if isinstance(e, dict) and isinstance(e.get("value"), str))
                if joined:
                    values[name.lower()] = joined
    return values


def cloudfront(record: dict) -> Optional[Trigger]:
    """A Lambda@Edge event: ``Records[0].cf`` with the viewer's or origin's request."""
    cf = record.get("cf")
    if not isinstance(cf, dict):
        return None
    config = mapping(cf.get("config"))
    request = mapping(cf.get("request"))
    headers = _cloudfront_headers(request.get("headers"))
    # The scheme the viewer used is only known when the distribution forwards it.
    trigger = http_trigger(
        CLOUDFRONT,
        headers,
        method=text(request.get("method")),
        path=text(request.get("uri")),
        query=text(request.get("querystring")),
        scheme=_forwarded_scheme(headers, "cloudfront-forwarded-proto"),
        domain=text(config.get("distributionDomainName")),
        client=text(request.get("clientIp")),
    )
    put(trigger.attributes, "lambdawrap.cloudfront.event_type", config.get("eventType"))
    put(trigger.attributes, "lambdawrap.cloudfront.distribution_id", config.get("distributionId"))
    return trigger


def response_status(trigger: Trigger, response: object) -> Optional[int]:
    """The status code the client gets for ``response`` from an HTTP-kind trigger.

    The ``statusCode`` of a dict response (``status`` for CloudFront), or of a named tuple,
    which the runtime writes as an object, or of the JSON object in ``bytes``, which it posts
    as they are; when the response is not an object with a ``statusCode``, what the service
    answers then (``trigger.status_without_code``): HTTP APIs and function URLs with payload 2.0
    answer 200, treating the whole response as the body, an HTTP API with payload 1.0 answers 500.
    """
    field = "status" if trigger.kind == CLOUDFRONT else "statusCode"
    if isinstance(response, bytes):  # what awslambdaric posts as it is
        try:
            # bytes' own length and bytes: a subclass's methods are the function's code, which
            # the runtime (reading the buffer) does not run, and nor may we.
            if bytes.__len__(response) > MAX_PARSED_RESPONSE_BYTES:
                return None
            import json  # the runtime's own marshaller has imported it

            response = json.loads(response if type(response) is bytes else bytes.__getitem__(response, slice(None)))
        except (ValueError, RecursionError):  # not JSON (or nested deeper than json parses): what
            # the service makes of it is not documented
            return None
    # dict's own lookups: a subclass's are the function's code, which the runtime's encoder
    # (reading items()) does not run, and nor may we.
    if isinstance(response, dict) and dict.__contains__(response, field):
        return status_from(dict.__getitem__(response, field))
    if isinstance(response, tuple) and callable(getattr(response, "_asdict", None)):
        # A named tuple: the runtime's encoder writes it as an object of its fields.
        fields = getattr(type(response), "_fields", None)
        if isinstance(fields, tuple) and field in fields and len(fields) == tuple.__len__(response):
            return status_from(tuple.__getitem__(response, fields.index(field)))
    return trigger.status_without_code
