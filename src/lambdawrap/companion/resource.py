"""The OpenTelemetry resource every signal of this environment carries."""

from __future__ import annotations

import uuid  # the SDK's import of it came first
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource

from lambdawrap import __version__
from lambdawrap.companion.encodable_text import encodable
from lambdawrap.shared.semconv import SCHEMA_URL
from lambdawrap.shared.settings import Settings

_MIB = 1024 * 1024


class EnvironmentResource(Resource):
    """The environment's resource, hashed once: it changes only where a process restored from
    a snapshot takes an instance id of its own, and the SDK's Resource serializes its
    attributes to JSON for every hash, which the OTLP encoders take once per span and log
    record."""

    own_instance_id = False  # service.instance.id is ours, not OTEL_RESOURCE_ATTRIBUTES'

    def __hash__(self) -> int:
        # Kept with the attributes it was made from: an exporter's thread hashing while they
        # are renewed keeps its hash for the old ones, never for the new.
        attributes = self._attributes
        cached = self.__dict__.get("_lambdawrap_hash")
        if cached is not None and cached[0] is attributes:
            return cached[1]
        value = super().__hash__()
        self._lambdawrap_hash = (attributes, value)
        return value

    def renew_instance_id(self) -> None:
        """A new service.instance.id, where it is ours. In place: the meter provider, the
        span builder and the log exporter hold this object."""
        if not self.own_instance_id:
            return
        attributes = dict(self._attributes)
        attributes["service.instance.id"] = str(uuid.uuid4())
        self._attributes = BoundedAttributes(attributes=attributes, immutable=True)


# The resource built in this process (the environment's): renewed in a restored copy.
_built: list = []


def renew_instance_ids() -> None:
    """Give this process's resource an instance id of its own: a copy restored from a
    snapshot (Lambda SnapStart), one of many restored at once maybe, would otherwise export
    every series under the snapshot's id, and theirs would be one series, written by all."""
    for resource in _built:
        resource.renew_instance_id()


def build_resource(settings: Settings, account_id: str | None) -> Resource:
    """The SDK's own attributes, then cloud.* and faas.* from the platform, then
    OTEL_RESOURCE_ATTRIBUTES, then the service name (OTEL_SERVICE_NAME, or the function's)."""
    from opentelemetry.sdk.version import __version__ as sdk_version

    ours: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        # What instrumented the function, as the conventions name a distribution's agent
        "telemetry.distro.name": "lambdawrap",
        "telemetry.distro.version": __version__,
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "faas.name": settings.function_name,
        "faas.version": settings.function_version,
        "cloud.region": settings.region,
        "faas.max_memory": settings.memory_mb * _MIB,
        "cloud.account.id": account_id,
    }
    ours = {k: v for k, v in ours.items() if v}
    # Environments of one function run side by side with the same attributes: without an id of
    # its own, each one's metric series would be another's (with cumulative temporality, their
    # totals would overwrite each other). A random UUID, as the conventions advise where there is
    # no natural id: the log stream name (faas.instance) is not given to extensions.
    ours["service.instance.id"] = str(uuid.uuid4())
    configured = dict(settings.resource_attributes)
    ours.update(configured)
    ours["service.name"] = settings.service_name or "lambda"
    # The environment's bytes that are not UTF-8 come as lone surrogates (surrogateescape): the
    # resource goes with every batch, and one such value would have every batch refused.
    # The schema of the conventions its cloud.* and faas.* follow, as the scopes' is (a collector
    # translates each by its own).
    resource = EnvironmentResource({encodable(k): encodable(v) if isinstance(v, str) else v for k, v in ours.items()}, SCHEMA_URL)
    resource.own_instance_id = "service.instance.id" not in configured
    _built[:] = [resource]
    return resource
