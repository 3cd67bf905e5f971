"""Declared secrets: the LAMBDAWRAP_SECRETS syntax, the AWS request that fetches each (whose key
is also the companion's cache key), and fetching one value with boto3.

    LAMBDAWRAP_SECRETS=DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key

Each entry is `ENV_NAME=secretsmanager:<name or ARN>[#json-key][@version-stage]` or
`ENV_NAME=ssm:<parameter name>` (SecureString values are decrypted). Parsing is stdlib-only;
boto3 is imported only by the code that fetches, and only when there is something to fetch.
"""

from __future__ import annotations

from collections import namedtuple

from lambdawrap.shared.otlp_variables import HEADER_VARIABLES

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable

SECRETS_MANAGER = "secretsmanager"
SSM = "ssm"
USER_AGENT_EXTRA = "lambdawrap/{component}"
# The variables Lambda reserves (a function's configuration cannot set them; TZ no longer is one,
# so a secret may set it as configuration may): the runtime reads
# some after the boot (_HANDLER, AWS_LAMBDA_RUNTIME_API), the SDKs and the secrets API's token
# others. A secret injected over one of them would break the runtime, not configure the function.
RESERVED_NAMES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_MAX_CONCURRENCY",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)


class SecretsError(Exception):
    """A declared secret could not be loaded. The message names the secret, never a value."""


class OutOfTime(Exception):
    """A call was not made: the deadline its client was made for leaves no time for it."""


class SecretSource(namedtuple("SecretSource", ("env_name", "service", "identifier", "json_key", "version_stage"), defaults=(None, None))):
    """One declared secret: the variable it goes to, the service (secretsmanager | ssm), the
    secret's name or ARN (or the parameter's name), and for Secrets Manager an optional JSON
    key and version stage."""

    __slots__ = ()

    def describe(self) -> str:
        text = f"{self.env_name}={self.service}:{self.identifier}"
        if self.json_key:
            text += f"#{self.json_key}"
        if self.version_stage:
            text += f"@{self.version_stage}"
        return text


def parse_sources(spec: str, refused: list | None = None) -> tuple:
    """(sources, problems): every well-formed entry, and one message per malformed or repeated
    one. Each entry left out (malformed, a name Lambda reserves, a second declaration of a
    variable unlike its first) is also named in `refused`, if given: with
    LAMBDAWRAP_SECRETS_REQUIRED it is a secret the function will not get."""
    sources: list = []
    problems: list = []
    seen: dict = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            source = _parse_entry(entry)
        except ValueError as exc:
            problems.append(f"ignoring LAMBDAWRAP_SECRETS entry {entry!r} ({exc})")
            if refused is not None:
                refused.append(f"LAMBDAWRAP_SECRETS entry {entry!r} was left out ({exc})")
            continue
        if source.env_name in seen:
            problems.append(f"LAMBDAWRAP_SECRETS declares {source.env_name} twice; the first one is used")
            if refused is not None and source != seen[source.env_name]:
                # Where secrets are required, one the function may have meant and will not get.
                refused.append(f"LAMBDAWRAP_SECRETS entry {entry!r} was left out ({source.env_name} is declared before it)")
            continue
        seen[source.env_name] = source
        sources.append(source)
        if source.env_name.startswith(("OTEL_", "LAMBDAWRAP_")) and source.env_name not in HEADER_VARIABLES:
            # Read by lambdawrap's own processes as they start, from their environment, not from
            # a secret: a collector's endpoint declared so would be exported to localhost.
            problems.append(f"LAMBDAWRAP_SECRETS declares {source.env_name}: the function gets it, lambdawrap does not read its own configuration from a secret (the collector's OTEL_EXPORTER_OTLP_[signal_]HEADERS aside)")
    return sources, problems


def _parse_entry(entry: str) -> SecretSource:
    env_name, sep, reference = entry.partition("=")
    env_name = env_name.strip()
    if not sep or not env_name.replace("_", "a").isalnum() or env_name[0].isdigit():
        raise ValueError("expected ENV_NAME=secretsmanager:<name>[#key][@stage] or ENV_NAME=ssm:<name>")
    if env_name in RESERVED_NAMES:
        raise ValueError(f"{env_name} is reserved by Lambda: the runtime reads it, a secret cannot replace it")
    service, sep, identifier = reference.strip().partition(":")
    if not sep or not identifier:
        raise ValueError("expected a source like secretsmanager:<name> or ssm:<name>")
    if service == SSM:
        if "#" in identifier:
            # Said apart from a wrong character: the entry is well formed for secretsmanager:.
            raise ValueError("a JSON key after '#' is for secretsmanager: sources; an ssm: parameter's value is injected whole")
        _check_name(identifier)
        return SecretSource(env_name, SSM, identifier)
    if service != SECRETS_MANAGER:
        raise ValueError(f"unknown source {service!r} (use secretsmanager or ssm)")
    stage = None
    # A version stage is the text after the last '@' (stages hold no '#', '/' or ':').
    at = identifier.rfind("@")
    if at > 0 and not any(c in identifier[at + 1 :] for c in "#/:"):
        identifier, stage = identifier[:at], identifier[at + 1 :]
        if not stage:
            # As for an empty JSON key: the '@' asks for a stage the entry does not name.
            raise ValueError("the version stage after '@' is empty; without an '@' the AWSCURRENT version is fetched")
    identifier, hash_mark, json_key = identifier.partition("#")
    if not identifier:
        raise ValueError("the secret name is empty")
    if hash_mark and not json_key:
        # Injecting the whole secret would put every key of it (often a whole set of
        # credentials) where the function expects one value.
        raise ValueError("the JSON key after '#' is empty; without a '#' the whole secret is injected")
    _check_name(identifier)
    _check_free_text("JSON key", json_key)
    _check_free_text("version stage", stage, never="\n\r\t ;")  # no label holds a blank or a ';'
    return SecretSource(env_name, SECRETS_MANAGER, identifier, json_key or None, stage)


# What a Secrets Manager name (letters, digits, /_+=.@-; "!" in the names of secrets AWS services
# make and manage: RDS's rds!db-..., EventBridge's events!connection/...) or ARN (":" too), and a
# parameter's name (letters, digits, _.-/), ARN or :version / :label may hold. Anything else, a blank above all,
# is a mistake in the list (entries separated by ";" or line breaks instead of commas): AWS would
# refuse the name, and the fetch's warning would not say why.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_+=.@-:!")


def _check_name(identifier: str) -> None:
    wrong = next((c for c in identifier if c not in _NAME_CHARS), None)
    if wrong is not None:
        raise ValueError(f"{wrong!r} cannot be in a secret's or parameter's name; entries are separated by commas")


# A JSON key may hold a blank or a ';' (a key "db password"), so the check above does not apply
# to it (nor to a stage); but a key or stage that holds a line break or another entry's start is
# entries not separated by commas: taken as the key, the next entry would never be loaded,
# unannounced.
_ENTRY_STARTS = (f"={SECRETS_MANAGER}:", f"={SSM}:")


def _check_free_text(what: str, text: str | None, never: str = "\n\r") -> None:
    if not text:
        return
    wrong = next((c for c in text if c in never), None)
    if wrong is not None:
        raise ValueError(f"{wrong!r} cannot be in a {what}; entries are separated by commas")
    if any(start in text for start in _ENTRY_STARTS):
        raise ValueError(f"the {what} holds what looks like another entry (NAME=secretsmanager: or NAME=ssm:); entries are separated by commas")


# The waits of one call that must end by a deadline are rebuilt in steps of this much: a client
# costs ~5 ms to make, and each call would otherwise need its own.
_DEADLINE_STEP_S = 0.25


def make_clients(component: str, region: str | None = None, deadline: float | None = None) -> Callable[..., Any]:
    """A cached factory of boto3 clients ('secretsmanager', 'ssm') with bounded timeouts, in
    `region` or in the region a call's ARN names (`client(service, arn_region)`). With a
    `deadline` (time.monotonic()), each call is one attempt whose connect and read waits add up
    to no more than what is left: a Secrets Manager that answers one call slowly and takes the
    next without answering must not hold the caller past it. Past it, or under one step before
    it, the factory raises OutOfTime."""
    import time

    import boto3  # heavy: imported only when there are secrets to fetch
    from botocore.config import Config

    session = boto3.session.Session(region_name=region or None)
    clients: dict = {}

    def make(service: str, where: str | None, connect_s: float, read_s: float, attempts: int) -> Any:
        config = Config(
            user_agent_extra=USER_AGENT_EXTRA.format(component=component),
            connect_timeout=connect_s,
            read_timeout=read_s,
            # total_max_attempts counts the first try; max_attempts would count retries only
            # (1 = two tries, each given all the time left).
            retries={"total_max_attempts": attempts, "mode": "standard"},
        )
        return session.client(service, region_name=where, config=config)

    def client(service: str, where: str | None = None) -> Any:
        # Secrets Manager and Parameter Store are regional: an ARN of another region is found
        # only by that region's endpoint.
        if where == region:
            where = None
        if deadline is None:
            if (service, where) not in clients:
                clients[service, where] = make(service, where, 2.0, 5.0, 3)
            return clients[service, where]
        left = (deadline - time.monotonic()) // _DEADLINE_STEP_S * _DEADLINE_STEP_S
        if left <= 0:
            raise OutOfTime(f"no time left for a call to {service}")
        made = clients.get((service, where))
        if made is None or made[0] > left:
            connect_s = min(2.0, left / 4)  # a reachable endpoint connects in milliseconds
            made = clients[service, where] = (left, make(service, where, connect_s, min(5.0, left - connect_s), 1))
        return made[1]

    return client


def secret_key(secret_id: str, version_id: str | None = None, version_stage: str | None = None) -> tuple:
    """The cache key of one GetSecretValue request."""
    if version_id is None and version_stage == "AWSCURRENT":
        # What GetSecretValue returns when no version is named: one entry for both spellings.
        version_stage = None
    return (SECRETS_MANAGER, secret_id, version_id, version_stage)


def parameter_key(name: str, decrypt: bool = True) -> tuple:
    """The cache key of one GetParameter request (`name` may carry a :version or :label)."""
    return (SSM, name, decrypt)


def source_key(source: SecretSource) -> tuple:
    """The request a declared secret is fetched with: secrets that name the same secret (with
    different JSON keys, or asked for through the HTTP API) share one request, and one entry."""
    if source.service == SSM:
        return parameter_key(source.identifier)
    return secret_key(source.identifier, None, source.version_stage)


def arn_region(identifier: str) -> str | None:
    """The region an ARN names (arn:partition:service:region:...), None for a plain name."""
    parts = identifier.split(":", 4)
    if len(parts) == 5 and parts[0] == "arn" and parts[3]:
        return parts[3]
    return None


def _client_for(client: Callable[..., Any], service: str, identifier: str) -> Any:
    region = arn_region(identifier)
    return client(service, region) if region else client(service)


def call(key: tuple, client: Callable[..., Any]) -> dict:
    """The AWS answer to the request `key` names (botocore's exceptions pass through), asked of
    the region its ARN names, if it is one."""
    if key[0] == SSM:
        return _client_for(client, SSM, key[1]).get_parameter(Name=key[1], WithDecryption=key[2])
    _, secret_id, version_id, version_stage = key
    kwargs = {"SecretId": secret_id}
    if version_id:
        kwargs["VersionId"] = version_id
    if version_stage:
        kwargs["VersionStage"] = version_stage
    return _client_for(client, SECRETS_MANAGER, secret_id).get_secret_value(**kwargs)


def fetch_failed(source: SecretSource, exc: BaseException) -> SecretsError:
    """The error of a failed fetch: names the secret and the AWS error code, never a value."""
    return SecretsError(f"secret {source.describe()} could not be fetched: {error_code(exc)}")


def fetch(source: SecretSource, client: Callable[[str], Any]) -> str:
    """The value of one declared secret; raises SecretsError naming it (never its value)."""
    try:
        answer = call(source_key(source), client)
    except OutOfTime:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore's errors are many; each becomes one message
        raise fetch_failed(source, exc) from None
    return value_of(source, answer)


def value_of(source: SecretSource, answer: dict) -> str:
    """A secret's string from a GetSecretValue or GetParameter answer, with its JSON key picked
    out if it has one; raises SecretsError naming the secret (never its value)."""
    if source.service == SSM:
        return str(answer["Parameter"]["Value"])
    value = answer.get("SecretString")
    if value is None:
        raise SecretsError(f"secret {source.describe()} is binary; only string secrets can be read as text")
    if source.json_key is None:
        return str(value)
    import json  # deferred: parsing the declarations (at boot) needs no json

    try:
        document = json.loads(value)
    except ValueError:
        raise SecretsError(f"secret {source.describe()} is not JSON, so it has no key {source.json_key!r}") from None
    except RecursionError:
        raise SecretsError(f"secret {source.describe()} is JSON nested too deep to read its key {source.json_key!r}") from None
    try:
        picked = document[source.json_key]
        return picked if isinstance(picked, str) else json.dumps(picked)
    except (KeyError, TypeError):
        raise SecretsError(f"secret {source.describe()} has no JSON key {source.json_key!r}") from None
    except RecursionError:  # json's decoder and encoder give up on deep nesting this way
        raise SecretsError(f"secret {source.describe()} is JSON nested too deep to read its key {source.json_key!r}") from None


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore error (e.g. ResourceNotFoundException), else its type."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__
