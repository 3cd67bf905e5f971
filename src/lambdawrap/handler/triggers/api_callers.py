"""Services that call the function on behalf of an API's client, without the function answering
an HTTP request itself (faas.trigger "other"): API Gateway WebSocket routes and Lambda
authorizers, AppSync resolvers and authorizers, Cognito user-pool triggers, and IoT (custom
authorizers and devices).

The request headers these events carry (a WebSocket $connect, a REQUEST authorizer, an AppSync
request) hold the client's trace context: the trigger keeps them for the invocation wrapper.
"""

from __future__ import annotations

from lambdawrap.handler.triggers.http_request import request_headers
from lambdawrap.handler.triggers.trigger import (
    APIGW_AUTHORIZER,
    APIGW_WEBSOCKET,
    APPSYNC,
    APPSYNC_AUTHORIZER,
    COGNITO,
    IOT,
    Trigger,
    mapping,
    put,
    text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Optional

# GraphQL's root types, as the graphql.operation.type values name them.
_OPERATION_TYPES = {"Query": "query", "Mutation": "mutation", "Subscription": "subscription"}


def _other(kind: str, headers: object = None, multi_headers: object = None) -> Trigger:
    return Trigger(kind, {"faas.trigger": "other"}, request_headers(headers, multi_headers) or None)


def websocket(event: dict, context: dict) -> Trigger:
    """A WebSocket API route: $connect (with the handshake's headers), a message, $disconnect."""
    trigger = _other(APIGW_WEBSOCKET, event.get("headers"), event.get("multiValueHeaders"))
    put(trigger.attributes, "lambdawrap.apigateway.websocket.event_type", context.get("eventType"))
    put(trigger.attributes, "lambdawrap.apigateway.websocket.route_key", context.get("routeKey"))
    return trigger


def apigw_authorizer(event: dict) -> Optional[Trigger]:
    """A Lambda authorizer of a REST, HTTP or WebSocket API (TOKEN or REQUEST): it answers with a
    policy, not with the response to the request it authorizes."""
    if "methodArn" not in event and "routeArn" not in event:
        return None
    trigger = _other(APIGW_AUTHORIZER, event.get("headers"), event.get("multiValueHeaders"))
    put(trigger.attributes, "lambdawrap.apigateway.authorizer.type", event.get("type"))
    return trigger


def appsync(event: dict) -> Optional[Trigger]:
    """An AppSync direct resolver: ``{"arguments", "info": {"parentTypeName", "fieldName"}, ...}``,
    or the flatter shape Amplify's resolvers hand over (``typeName``, ``fieldName``); or an
    AppSync Events API's handler."""
    info = event.get("info")
    if isinstance(info, dict) and isinstance(info.get("channel"), dict) and "operation" in info:
        return _appsync_events(event, info)
    if isinstance(info, dict) and "fieldName" in info:
        parent_type, field = text(info.get("parentTypeName")), info.get("fieldName")
    elif "typeName" in event and "fieldName" in event and "arguments" in event:
        parent_type, field = text(event.get("typeName")), event.get("fieldName")
    else:
        return None
    trigger = _other(APPSYNC, mapping(event.get("request")).get("headers"))
    put(trigger.attributes, "lambdawrap.appsync.parent_type_name", parent_type)
    put(trigger.attributes, "lambdawrap.appsync.field_name", field)
    if parent_type in _OPERATION_TYPES:
        # A root field resolves the operation itself.
        trigger.attributes["graphql.operation.type"] = _OPERATION_TYPES[parent_type]
    return trigger


def _appsync_events(event: dict, info: dict) -> Trigger:
    """An AppSync Events API's handler: ``{"info": {"channel": {"path"}, "operation"}, "request":
    {"headers"}, "events"}``, published events (PUBLISH) or a subscription (SUBSCRIBE)."""
    trigger = _other(APPSYNC, mapping(event.get("request")).get("headers"))
    put(trigger.attributes, "lambdawrap.appsync.channel", info["channel"].get("path"))
    put(trigger.attributes, "lambdawrap.appsync.operation", info.get("operation"))
    return trigger


def appsync_authorizer(event: dict, context: dict) -> Optional[Trigger]:
    """An AppSync Lambda authorizer: ``{"authorizationToken", "requestContext": {"apiId", ...}}``."""
    if "authorizationToken" not in event or "apiId" not in context:
        return None
    return _other(APPSYNC_AUTHORIZER, event.get("requestHeaders"))


def cognito(event: dict) -> Optional[Trigger]:
    """A Cognito user-pool trigger (sign-up, authentication, token generation, messages...)."""
    source = text(event.get("triggerSource"))
    if source is None or "userPoolId" not in event:
        return None
    trigger = _other(COGNITO)
    trigger.attributes["lambdawrap.cognito.trigger_source"] = source
    put(trigger.attributes, "lambdawrap.cognito.user_pool_id", event.get("userPoolId"))
    return trigger


def iot_authorizer(event: dict) -> Optional[Trigger]:
    """An IoT Core custom authorizer: ``{"token", "protocolData": {"http": {"headers"}}, ...}``."""
    protocol_data = event.get("protocolData")
    if not isinstance(protocol_data, dict):
        return None
    return _iot("custom_authorizer", mapping(protocol_data.get("http")).get("headers"))


def iot_device(event: dict) -> Optional[Trigger]:
    """A message of an IoT button (``clickType``) or an IoT 1-Click device (``deviceEvent``)."""
    if "deviceEvent" in event and "deviceInfo" in event:
        return _iot("1-click")
    if "clickType" in event and "serialNumber" in event:
        return _iot("button")
    return None


def _iot(what: str, headers: object = None) -> Trigger:
    trigger = _other(IOT, headers)
    trigger.attributes["lambdawrap.iot.event"] = what
    return trigger

