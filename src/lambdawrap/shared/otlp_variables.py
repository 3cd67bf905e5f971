"""The OTLP exporters' own variables (OTEL_EXPORTER_OTLP_[signal_]ENDPOINT, _TIMEOUT,
_COMPRESSION, _HEADERS, _CERTIFICATE, _CLIENT_KEY, _CLIENT_CERTIFICATE, _INSECURE), checked as
lambdawrap's are: the exporters read them themselves, and take values that fail every export
without naming the variable (a timeout of 0, an endpoint without its scheme, a header with a line
break, a certificate file that is not there, an _INSECURE of 1) or warn about each in words of
their own. A bad one gets one warning naming it and the default used, and a correction the
companion makes to its own environment before it makes its exporters (the function's is left as
it is); one of blanks only is unset there, without a warning: the specification's empty value.

No import here that the function's process would not otherwise make: it builds its settings on
its cold-start path (`urllib.parse` only for a header written percent-encoded)."""

from __future__ import annotations

from lambdawrap.shared.own_stdlib import standard

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Mapping

PREFIXES = ("", "TRACES_", "METRICS_", "LOGS_")  # the general variable, then each signal's
# The only variables of lambdawrap's own configuration a declared secret sets for the companion
# too (companion/exporter_secrets.py): the collector's credentials.
HEADER_VARIABLES = frozenset(f"OTEL_EXPORTER_OTLP_{prefix}HEADERS" for prefix in PREFIXES)
COMPRESSIONS = ("gzip", "deflate", "none")
GRPC_COMPRESSIONS = ("gzip", "none")
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_TIMEOUT_S = 10
# Lambda's longest timeout. The Python exporters read the variable in seconds where the
# specification (and the other languages' SDKs) have milliseconds: 10000 meant as 10 s is 2.8
# hours, a request to a collector that hangs held for longer than any invocation (and from
# about 300 years on the exporters' deadlines overflow the clocks, failing every export).
MAX_TIMEOUT_S = 900.0
SIGNAL_PATHS = ("/v1/traces", "/v1/metrics", "/v1/logs")  # what OTLP/HTTP appends to the general endpoint


# The exporters' variables a value of blanks only stands for unset, as the specification has an
# empty value: the exporters take it as a value. Over gRPC an empty _COMPRESSION or _TIMEOUT
# fails the exporter as it is made (no telemetry, nothing counted), an empty _INSECURE makes the
# channel TLS, an empty general _ENDPOINT is an address of its own; over OTLP/HTTP a blank
# signal's _HEADERS leaves out the general ones (credentials), a blank _ENDPOINT is a URL.
BLANK_AS_UNSET = ("ENDPOINT", "HEADERS", "TIMEOUT", "COMPRESSION", "INSECURE", "CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE")


def corrections(env: Mapping[str, str], protocols: tuple, warn: Callable[..., None]) -> tuple:
    """((variable, value, or None to unset it), ...) for each bad value, warned about once, and
    (silently) for each one of blanks only. A signal's own variable unset falls back to the
    general one, as the exporters read them."""
    blank = [f"OTEL_EXPORTER_OTLP_{prefix}{name}" for prefix in PREFIXES for name in BLANK_AS_UNSET]
    found: list = [(variable, None) for variable in blank if variable in env and not env[variable].strip()]
    # Which signals read the general endpoint (those without their own, or whose own is refused
    # below), by protocol: it is checked as an http(s) URL only where OTLP/HTTP alone reads it
    # (gRPC takes host:port).
    falls_back = {protocol for signal, protocol in protocols if not _endpoint_kept(env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", ""), protocol)}
    http = {signal.upper() + "_" for signal, protocol in protocols if protocol != "grpc"}
    for prefix in PREFIXES:
        endpoint_refused = False
        compression = _grpc_compression if read_over_grpc(env, protocols, prefix, "COMPRESSION") else _compression
        checks = [("TIMEOUT", _timeout, str(DEFAULT_TIMEOUT_S)), ("COMPRESSION", compression, "none")]
        if prefix in http or (not prefix and falls_back and "grpc" not in falls_back):
            checks.insert(0, ("ENDPOINT", _http_url if prefix else _base_url, DEFAULT_HTTP_ENDPOINT))
        elif "grpc" in falls_back if not prefix else read_over_grpc(env, protocols, prefix, "ENDPOINT"):
            checks.insert(0, ("ENDPOINT", _grpc_target, DEFAULT_GRPC_ENDPOINT))
        for name, check, default in checks:
            variable = f"OTEL_EXPORTER_OTLP_{prefix}{name}"
            raw = env.get(variable, "")
            if not raw.strip():
                continue
            try:
                check(raw.strip())
            except ValueError as exc:
                shown = f"from OTEL_EXPORTER_OTLP_{name}" if prefix else default
                warn("lambdawrap: ignoring %s=%r (%s); using the default %s", variable, shown_url(raw), exc, shown)
                found.append((variable, None))
                endpoint_refused = endpoint_refused or name == "ENDPOINT"
                continue
            if name == "ENDPOINT" and raw != raw.strip():
                # The exporters would send to the URL blanks and all.
                warn("lambdawrap: %s=%r has blanks around it; using %r", variable, shown_url(raw), shown_url(raw.strip()))
                found.append((variable, raw.strip()))
        found.extend(_tls_file_corrections(env, protocols, prefix, warn))
        if read_over_grpc(env, protocols, prefix, "INSECURE"):
            found.extend(_insecure(env, f"OTEL_EXPORTER_OTLP_{prefix}INSECURE", warn))
        headers = f"OTEL_EXPORTER_OTLP_{prefix}HEADERS"
        if endpoint_refused and prefix and env.get(headers, "").strip():
            # The signal goes to the general endpoint now: its own headers (credentials for the
            # endpoint it named) must not go with it. The general ones, meant for that endpoint, do.
            warn("lambdawrap: ignoring %s too (its endpoint was ignored: they are not sent to another); using the default from OTEL_EXPORTER_OTLP_HEADERS", headers)
            found.append((headers, None))
        elif env.get(headers, "").strip():
            # gRPC carries printable ASCII only.
            kept, refused = header_entries(env[headers], grpc=read_over_grpc(env, protocols, prefix, "HEADERS"))
            # None left of a signal's own: "," (no entry) rather than unset, which would send the
            # general headers, credentials for another endpoint maybe, to this signal's.
            none_left = "," if prefix else None
            if refused:
                # Names only: the values are often credentials.
                warn("lambdawrap: ignoring %s entries %s (%s); %s", headers, ", ".join(refused), HEADER_RULE, "the others are sent" if kept else "none is sent")
                found.append((headers, kept or none_left))
            elif kept != env[headers]:
                # Only entries of blanks left out, without a word: the exporters warn of one
                # holding a line break (an empty one they skip, as here).
                found.append((headers, kept or none_left))
    if http:
        found.extend(_ca_bundle_corrections(env, warn))
    return tuple(found)


# requests' own CA variables, which the companion's OTLP/HTTP transport reads as requests does
# where no OTEL_EXPORTER_OTLP_[signal_]CERTIFICATE is set (companion/otlp_transport.py).
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _ca_bundle_corrections(env: Mapping[str, str], warn: Callable[..., None]) -> list:
    """The CA variable the transport would read (the first set), unset where it names neither a
    PEM file of certificates nor a folder (a CA path): it failed every export over https, as it
    does with requests, naming no variable."""
    import os  # the settings' import already

    for variable in CA_BUNDLE_VARIABLES:
        path = env.get(variable, "")
        if not path:
            continue
        problem = _ca_folder_problem(path) if _readable_folder(path) else _pem_problem(path, "CERTIFICATE")
        if problem is None:
            return []
        warn("lambdawrap: ignoring %s=%r (%s); using the default (certifi's bundle)", variable, path, problem)
        # Unset with the other: requests reads CURL_CA_BUNDLE where REQUESTS_CA_BUNDLE is unset.
        return [(name, None) for name in CA_BUNDLE_VARIABLES if name in env]
    return []


def headers_of_ignored_endpoints(found: tuple, env: Mapping[str, str]) -> frozenset:
    """The signals' header variables whose own endpoint `corrections` (`found`) ignored as bad
    (not one of blanks, which is unset): as corrections() leaves out the variables' headers,
    whoever sets them otherwise (a secret) must leave them out too."""
    return frozenset(
        variable[: -len("ENDPOINT")] + "HEADERS"
        for variable, value in found
        if value is None and variable.endswith("_ENDPOINT") and variable != "OTEL_EXPORTER_OTLP_ENDPOINT" and env.get(variable, "").strip()
    )


def _insecure(env: Mapping[str, str], variable: str, warn: Callable[..., None]) -> tuple:
    """The correction of an _INSECURE the gRPC exporters read: they take "true" (any case) as
    true and any other value as false without a word, so that 1 or yes meant as a plaintext
    connection is TLS to a collector that has none, and every export fails. Read as the
    specification has its booleans, as the settings read OTEL_SDK_DISABLED: another value warned
    of and false."""
    # Imported here: the settings import this module.
    from lambdawrap.shared.settings import _otel_bool

    raw = env.get(variable, "")
    if not raw.strip():
        return ()
    try:
        insecure = _otel_bool(raw)
    except ValueError as exc:
        warn("lambdawrap: ignoring %s=%r (%s); using the default false", variable, raw, exc)
        return ((variable, "false"),)
    # " true" is true here, false to the exporters, which compare the value as written.
    written = "true" if insecure else "false"
    return () if raw.lower() == written else ((variable, written),)


def _endpoint_kept(raw: str, protocol: str) -> bool:
    """Whether a signal's own endpoint `raw` is set and passes the check its protocol has."""
    if not raw.strip():
        return False
    try:
        (_grpc_target if protocol == "grpc" else _http_url)(raw.strip())
    except ValueError:
        return False
    return True


def read_over_grpc(env: Mapping[str, str], protocols: tuple, prefix: str, name: str) -> bool:
    """Whether a signal over gRPC reads the variable `name` of `prefix`: its own, or the general
    one where it has none; such a variable is held to what gRPC can take."""
    return any(protocol == "grpc" and (signal.upper() + "_" == prefix or (not prefix and not env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}", "").strip())) for signal, protocol in protocols)


def compression(env: Mapping[str, str], signal: str) -> str:
    """The compression of `signal`'s exporter ("gzip", "deflate" or "none"), read as the
    OTLP/HTTP exporter reads it: the signal's own variable, else the general one."""
    own = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_COMPRESSION", "").strip()
    return (own or env.get("OTEL_EXPORTER_OTLP_COMPRESSION", "").strip() or "none").lower()


def shown_url(value: str) -> str:
    """A URL as a log line may show it: what precedes the last "@" after its scheme (credentials,
    https://user:key@host, or user:key@host written without the scheme) left out, and its query
    and fragment (an endpoint's ?api-key=, a redirect's signed Location). A password written with
    a "/", "?" or "#" in it (https://user:p/w@host) ends no authority here: an "@" in a path or
    query hides more than the credentials, never less."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    _, at, after = rest.rpartition("@")
    shown = after.partition("?")[0].partition("#")[0]
    return f"{scheme}{sep}{'***@' if at else ''}{shown}"


def _readable_file(path: str) -> bool:
    import os  # the settings' import already

    return os.path.isfile(path) and os.access(path, os.R_OK)


def _readable_folder(path: str) -> bool:
    import os

    return os.path.isdir(path) and os.access(path, os.R_OK | os.X_OK)


# A PEM file's first block is found well within this (a CA bundle's comments come first).
_PEM_SEARCH_BYTES = 1024 * 1024


# The PEM blocks each file must hold: a key given for a CA (or the other way round) failed every
# export over https with "[SSL] PEM lib", retried as a failed connection.
_CERTIFICATE_BLOCKS = (b"-----BEGIN CERTIFICATE-----", b"-----BEGIN TRUSTED CERTIFICATE-----", b"-----BEGIN X509 CERTIFICATE-----")
_KEY_BLOCK = b" PRIVATE KEY-----"  # PKCS#8's, and RSA's and EC's of old
# An encrypted key: the exporters pass no password (OpenSSL then asks for one on the terminal).
_ENCRYPTED = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")
_TLS_DEFAULTS = (("CERTIFICATE", "(the system's CA certificates)"), ("CLIENT_KEY", "(none)"), ("CLIENT_CERTIFICATE", "(none)"))


def _tls_file_corrections(env: Mapping[str, str], protocols: tuple, prefix: str, warn: Callable[..., None]) -> list:
    """The certificate and key files of `prefix` the exporters cannot use, each named once and
    unset. A file missing failed every export over https with "No such file or directory", one
    not PEM (a certificate in DER, as a .crt often comes) with "[X509:
    NO_CERTIFICATE_OR_CRL_FOUND]", each retried as a failed connection, naming neither the
    file nor the variable. Over gRPC half a client pair (one of the two missing or refused)
    aborted the companion: a gRPC signal reading one is given none, or, where the certificate's
    file holds its key, that file as both, in variables of its own."""
    found: list = []
    kept: dict = {}
    grpc_reads_kept = True  # whether the gRPC signals read the CERTIFICATE kept
    for name, default in _TLS_DEFAULTS:
        variable = f"OTEL_EXPORTER_OTLP_{prefix}{name}"
        path = env.get(variable, "")
        if not path.strip():
            continue
        # The gRPC signals that read this prefix's certificate, were it kept.
        grpc_readers = _grpc_pair_readers(env, protocols, prefix, True) if name == "CERTIFICATE" else []
        if name == "CERTIFICATE" and _readable_folder(path):
            problem = _ca_folder_problem(path)
            if problem is None and grpc_readers and prefix:
                problem = _GRPC_FOLDER
            elif problem is None and grpc_readers:
                # The OTLP/HTTP signals keep the folder; each gRPC one reading it is given a
                # certificate of its own, set and empty, which its exporter reads as "the
                # default" (not as "unset, read the general one").
                signals = ", ".join(reader.rstrip("_").lower() for reader in grpc_readers)
                warn("lambdawrap: not using %s=%r over gRPC (%s; %s); using the default %s there, and no client certificate", variable, path, _GRPC_FOLDER, signals, default)
                found.extend((f"OTEL_EXPORTER_OTLP_{reader}CERTIFICATE", "") for reader in grpc_readers)
                grpc_reads_kept = False
        else:
            problem = _pem_problem(path, name)
        if problem is None:
            kept[name] = path
            continue
        if prefix and grpc_readers and _readable_folder(env.get(f"OTEL_EXPORTER_OTLP_{name}", "")):
            # Unset, a gRPC signal's would fall back to the general one, a folder: set and empty.
            warn("lambdawrap: ignoring %s=%r (%s); using the default %s, and no client certificate", variable, path, problem, default)
            found.append((variable, ""))
            continue
        warn("lambdawrap: ignoring %s=%r (%s); using the default %s", variable, path, problem, f"from OTEL_EXPORTER_OTLP_{name}" if prefix else default)
        found.append((variable, None))
    certificate, key = kept.get("CLIENT_CERTIFICATE"), kept.get("CLIENT_KEY")
    readers = _grpc_pair_readers(env, protocols, prefix, "CERTIFICATE" in kept and grpc_reads_kept)
    if readers and (certificate is None) != (key is None):
        # gRPC reads the pair of one prefix together, the key from CLIENT_KEY alone, and aborts
        # on half a pair. The general variables are left to the OTLP/HTTP signals: a gRPC
        # signal reading them is given its own.
        whole = key is None and _holds(certificate, (_KEY_BLOCK,)) and _pem_problem(certificate, "CLIENT_KEY") is None
        if whole:  # the certificate's file holds its key, as OTLP/HTTP reads it
            pair = {"CERTIFICATE": kept["CERTIFICATE"], "CLIENT_CERTIFICATE": certificate, "CLIENT_KEY": certificate}
        else:
            name, missing = ("CLIENT_CERTIFICATE", "CLIENT_KEY") if key is None else ("CLIENT_KEY", "CLIENT_CERTIFICATE")
            warn("lambdawrap: not using %s=%r over gRPC (it goes with OTEL_EXPORTER_OTLP_%s%s, which is not set or was ignored); using the default (none) there", f"OTEL_EXPORTER_OTLP_{prefix}{name}", kept[name], prefix, missing)
            pair = {"CERTIFICATE": kept["CERTIFICATE"], "CLIENT_CERTIFICATE": None, "CLIENT_KEY": None}
        for reader in readers:
            found.extend((f"OTEL_EXPORTER_OTLP_{reader}{name}", value) for name, value in pair.items())
        return found
    over_http = any(protocol != "grpc" and (not prefix or prefix == signal.upper() + "_") for signal, protocol in protocols)
    if over_http and certificate is not None and key is None and not _client_key_set(env, prefix) and not _holds(certificate, (_KEY_BLOCK,)):
        # The key comes from the certificate's file when none is configured.
        variable = f"OTEL_EXPORTER_OTLP_{prefix}CLIENT_CERTIFICATE"
        warn("lambdawrap: ignoring %s=%r (no client key is set, and the file holds none); using the default %s", variable, certificate, "from OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" if prefix else "(none)")
        found.append((variable, None))
    return found


# A folder of CA certificates is a CA path to the OTLP/HTTP exporter (as requests takes it); the
# gRPC exporter reads one file, and a folder made it fail to start.
_GRPC_FOLDER = "a folder: the gRPC exporter reads one PEM file"


def _ca_folder_problem(path: str) -> str | None:
    """What is wrong with a folder given as CA certificates: OpenSSL looks a CA up in it by the
    hash of its name only (`openssl rehash` makes the links), so one without such names
    verifies nothing, and every export over https failed naming no variable."""
    import os

    try:
        names = os.listdir(path)
    except OSError as exc:
        return f"a folder this process cannot list ({exc.strerror or exc})"
    if any(_hashed_name(name) for name in names):
        return None
    return "a folder without hashed certificate names, which `openssl rehash` makes"


def _hashed_name(name: str) -> bool:
    """A CA path's certificate name: eight hex digits of the subject's hash, "." and a number."""
    from lambdawrap.shared.hex_digits import is_hex

    digits, dot, number = name[:8], name[8:9], name[9:]
    return dot == "." and number.isdigit() and number.isascii() and len(digits) == 8 and is_hex(digits)


def _grpc_pair_readers(env: Mapping[str, str], protocols: tuple, prefix: str, certificate_kept: bool) -> list:
    """The prefixes of the signals over gRPC that read the client certificate and key of
    `prefix` (their exporters read a pair only where that prefix's CERTIFICATE is set, a
    signal's own before the general one), as the variables they read them from."""
    if not certificate_kept:
        return []
    over_grpc = [signal.upper() + "_" for signal, protocol in protocols if protocol == "grpc"]
    if prefix:
        return [prefix] if prefix in over_grpc else []
    return [own for own in over_grpc if not _certificate_kept(env, own)]


def _certificate_kept(env: Mapping[str, str], prefix: str) -> bool:
    path = env.get(f"OTEL_EXPORTER_OTLP_{prefix}CERTIFICATE", "")
    return bool(path.strip()) and _pem_problem(path, "CERTIFICATE") is None


def _pem_problem(path: str, name: str) -> str | None:
    """What is wrong with the certificate or key file for the variable `name` (PEM, the only
    form the exporters load; the block it must hold); None: nothing found."""
    if not _readable_file(path):
        return "no file this process can read"
    head = _head(path)
    if b"-----BEGIN " not in head:
        return "not PEM: the exporters read no other form"
    if name == "CLIENT_KEY":
        if any(mark in head for mark in _ENCRYPTED):
            return "an encrypted key: the exporters pass no password"
        return None if _KEY_BLOCK in head else "holds no PEM private key"
    return None if any(block in head for block in _CERTIFICATE_BLOCKS) else "holds no PEM certificate"


def _holds(path: str, blocks: tuple) -> bool:
    head = _head(path)
    return any(block in head for block in blocks)


def _head(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(_PEM_SEARCH_BYTES)
    except OSError:
        return b""


def _client_key_set(env: Mapping[str, str], prefix: str) -> bool:
    """Whether a client key is configured where the certificate of `prefix` is read over
    OTLP/HTTP: a signal's own or the general one (for the general certificate, any signal's too)."""
    prefixes = (prefix, "") if prefix else PREFIXES
    return any(env.get(f"OTEL_EXPORTER_OTLP_{each}CLIENT_KEY", "").strip() for each in prefixes)


def _http_url(raw: str) -> None:
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or not name:
            raise ValueError("an IPv6 address goes between [ and ]")
        port = port[1:] if port.startswith(":") else port
    else:
        name, _, port = host.partition(":")
    if not name:
        raise ValueError(f"expected a host after {scheme}://")
    if any(c == " " or c < " " and c not in "\t\r\n" or c == "\x7f" or c > "\x7f" and c.isspace() for c in name):
        # "localhost :4318": no name resolves so, and every export failed unnamed (IDNA makes a
        # no-break space one). A tab or a line break the URL parser drops, as the URL standard
        # does; other characters that are not ASCII the IDNA codec reads as it reads them.
        raise ValueError("a blank or control character in the host")
    if not host.startswith("[") and "" in name.rstrip(".").split("."):
        # "collector..internal": no name resolves so; the lookup refused it at every export.
        raise ValueError("a host name with an empty label")
    # ASCII digits: int() reads "٤٣١٨" too, the URL parser of every export does not.
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("the port must be a number from 1 to 65535")


def _base_url(raw: str) -> None:
    """The general endpoint over OTLP/HTTP: a URL the signals' paths (/v1/traces, ...) are
    appended to, as written, so that one with a query or a fragment sent every export to a
    path no collector serves, a query's key (`?api-key=`) mangled."""
    _http_url(raw)
    if "?" in raw or "#" in raw:
        raise ValueError("a query or fragment: /v1/<signal> is appended after it; put credentials in OTEL_EXPORTER_OTLP_HEADERS, or the query in each signal's own endpoint")
    path = raw.partition("://")[2].partition("/")[2].rstrip("/")
    if ("/" + path).endswith(SIGNAL_PATHS):
        # A signal's own URL given as the general one (a vendor's page shows it so): every
        # export went to .../v1/traces/v1/<signal>, a 404 each time, named nowhere.
        raise ValueError("a signal's path: /v1/<signal> is appended to it; give the collector's base URL, or set each signal's own endpoint")


def _grpc_target(raw: str) -> None:
    # The gRPC exporters take host:port or a URL, read with urlparse: a value it refuses
    # (http://[::1) fails the exporter as it is made, and with it the whole pipeline.
    standard("urllib.parse").urlsplit(raw)  # deferred: over gRPC only


def _timeout(raw: str) -> None:
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 < seconds <= MAX_TIMEOUT_S:  # NaN too
        raise ValueError("expected a number of seconds above 0, at most 900 (Lambda's longest timeout; the Python exporters read seconds, where the specification has milliseconds)")


def _compression(raw: str) -> None:
    if raw.lower() not in COMPRESSIONS:
        raise ValueError("expected one of " + ", ".join(COMPRESSIONS))


def _grpc_compression(raw: str) -> None:
    # The specification's two values: the gRPC exporters have no deflate (their own reading of
    # the variable fails on it, and on none, as they are made: see exporting._exporter).
    if raw.lower() not in GRPC_COMPRESSIONS:
        raise ValueError("expected one of " + ", ".join(GRPC_COMPRESSIONS) + " over gRPC")


# What the exporters read of a `name=value` entry (opentelemetry.util.re's parse_env_headers,
# liberal, as both exporters call it): blanks of any kind around the entry; inside it, a name of
# token characters and a value of printable ASCII but for the quote, comma, semicolon and
# backslash (a space allowed, but then not percent-decoded), with spaces and tabs only around
# either: a line break, form feed or no-break space there fails their pattern. An entry outside
# it they leave out with a warning that quotes it whole, value and all (often a credential).
_AROUND = " \t"
_NAME_CHARACTERS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_VALUE_CHARACTERS = frozenset(chr(c) for c in range(0x20, 0x7F)) - frozenset('",;\\')
HEADER_RULE = "a header needs a name and a value the exporters read and can send: printable ASCII, only spaces and tabs around either, percent-encoded to a value without line breaks or NUL, and within Latin-1 (over gRPC: printable ASCII)"


def header_entries(raw: str, grpc: bool = False) -> tuple:
    """(the entries kept, as written; the names of those refused) of a `name=value,...` list,
    read as the exporters read it (_read_entry). Refused: an entry the exporters would not read,
    and one whose value they could not send (OTLP/HTTP: a line break or NUL, or a character
    beyond Latin-1, which fails every request; `grpc`: any character but printable ASCII, which
    fails every call). Left out without a word: an entry of blanks only."""
    kept, refused = [], []
    for number, entry in enumerate(raw.split(","), 1):
        if not entry.strip():
            continue
        read = _read_entry(entry)
        if read and _good_name(read[0]) and _sendable(read[1], grpc):
            kept.append(entry)
        else:
            refused.append(_shown_name(entry, read, number))
    return ",".join(kept), refused


def _read_entry(entry: str) -> tuple | None:
    """(name, value) of an entry as the exporters decode it, or None for one they refuse."""
    name, sep, value = entry.strip().partition("=")
    bare_name, bare_value = name.strip(_AROUND), value.strip(_AROUND)
    if not sep or not bare_name or not _NAME_CHARACTERS.issuperset(bare_name) or not _VALUE_CHARACTERS.issuperset(bare_value):
        return None
    if "%" in entry and " " not in bare_value:
        unquote = standard("urllib.parse").unquote
        name, value = unquote(name), unquote(value)
    return name.strip(), value.strip()


def _good_name(name: str) -> bool:
    return bool(name) and not any(c in name for c in " \t\r\n\x00:")


def _shown_name(entry: str, read: tuple | None, number: int) -> str:
    """An entry refused as a warning may show it: by its name where it has one, else by its
    place (without "=", the entry may be "name: value", its value a credential)."""
    if read:
        name, named = read[0], _good_name(read[0])
    else:
        # One the exporters cannot read: named where what precedes "=" is a name all the same.
        name, sep, _ = entry.partition("=")
        name = name.strip()
        named = bool(sep and name) and _NAME_CHARACTERS.issuperset(name)
    return repr(name) if named else f"#{number} (no name=value)"


def _sendable(value: str, grpc: bool) -> bool:
    if grpc:
        return all(" " <= c <= "~" for c in value)
    return not any(c in value for c in "\r\n\x00") and all(c <= "\xff" for c in value)
