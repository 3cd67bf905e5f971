"""What a bare name means in the `/secrets/<name>` and `/?name=<name>` shapes of the secrets
API, and the value it stands for.

A name is, in this order: the environment name of a declared secret (its value, with its JSON
key picked out), the Secrets Manager id or the parameter name of a declared secret (the whole
secret string, or the parameter's value), or, with LAMBDAWRAP_SECRETS_ALLOW_UNDECLARED, any
secret or parameter the function's role can read: an ARN says which service; any other name is
looked up in Secrets Manager, then in Parameter Store (Parameter Store first for a name starting
with "/", its hierarchy's mark). Values come from the store's one cache.
"""

from __future__ import annotations

from lambdawrap.shared.secret_sources import SECRETS_MANAGER, SSM, SecretsError, SecretSource, error_code, secret_key, source_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable

    from lambdawrap.companion.secret_store import SecretStore

# Codes that mean "no such secret here" rather than "you may not" or "AWS failed": the next
# service is tried, and if none has it the name is unknown.
NOT_FOUND_CODES = frozenset({"ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound", "ValidationException"})
# A name one service refuses this way may still be the other's (a role that may read Parameter
# Store only). Any other failure (throttled, AWS failing, a KMS key) ends the lookup: which
# service's value a name gives must not depend on a passing error.
_LOOK_FURTHER_CODES = NOT_FOUND_CODES | {"AccessDeniedException"}
MAX_NAME_IN_MESSAGE = 200


class UnknownName(Exception):
    """Not declared (and undeclared names are not served), or no service has it."""


class ReadFailed(Exception):
    """The secret exists but could not be read; `code` is the AWS error code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def shown(name: str) -> str:
    """A requested name as error messages quote it (bounded: the caller chose its length)."""
    return repr(name if len(name) <= MAX_NAME_IN_MESSAGE else name[:MAX_NAME_IN_MESSAGE] + "...")


class SecretNames:
    def __init__(self, sources: Iterable[SecretSource], allow_undeclared: bool) -> None:
        self.allow_undeclared = allow_undeclared
        self._by_env_name: dict[str, SecretSource] = {}
        self._by_id: dict[str, SecretSource] = {}
        # A declaration of the current version goes first: by its id a secret means its whole
        # string (every key) at the version stage a declaration names, never a stage none does.
        # (The current version's stage, named or not, as the cache keys it: secret_key.)
        for source in sorted(sources, key=lambda s: secret_key(s.identifier, version_stage=s.version_stage)[3] is not None):
            self._by_env_name.setdefault(source.env_name, source)
            self._by_id.setdefault(source.identifier, SecretSource(source.env_name, source.service, source.identifier, None, source.version_stage))

    def candidates(self, name: str) -> list:
        """The sources `name` may stand for, in the order they are tried."""
        declared = self._by_env_name.get(name) or self._by_id.get(name)
        if declared is not None:
            return [declared]
        if not self.allow_undeclared or not name:
            return []
        in_secrets_manager = SecretSource(name, SECRETS_MANAGER, name)
        in_parameter_store = SecretSource(name, SSM, name)
        if name.startswith("arn:"):
            service = name.split(":")[2] if name.count(":") >= 2 else ""
            return [in_parameter_store] if service == SSM else [in_secrets_manager]
        if name.startswith("/"):
            return [in_parameter_store, in_secrets_manager]
        return [in_secrets_manager, in_parameter_store]

    def value(self, store: SecretStore, name: str) -> str:
        """The string `name` stands for; raises UnknownName or ReadFailed (never with a value)."""
        candidates = self.candidates(name)
        if not candidates:
            hint = "" if self.allow_undeclared else " (LAMBDAWRAP_SECRETS_ALLOW_UNDECLARED=true serves any name the function's role can read)"
            raise UnknownName(f"{shown(name)} is not declared in LAMBDAWRAP_SECRETS{hint}")
        failure: ReadFailed | None = None
        for source in candidates:
            try:
                answer = store.answer(source_key(source))
            except Exception as exc:  # noqa: BLE001 - botocore's errors; the next service may have it
                code = error_code(exc)
                if code not in NOT_FOUND_CODES and failure is None:
                    failure = ReadFailed(f"{shown(name)} could not be read from {source.service}: {code}", code)
                if code not in _LOOK_FURTHER_CODES:
                    raise failure from None
                continue
            try:
                value = store.value(source, answer)
            except SecretsError:
                raise ReadFailed(f"{shown(name)} has no text value (a binary secret, or no such JSON key)", "InvalidSecretValue") from None
            store.served(source_key(source), answer, value)
            return value
        if failure is not None:
            raise failure
        raise UnknownName(f"{shown(name)} was not found")
