"""Where Redis is: every Redis URL form the product accepts, parsed into one typed value.

The plugin's `redis_url`, the CLI's `--redis-url`, `$KONG_CREDITS_REDIS_URL`, the forwarder,
`kong-credits alerts` and the demo all take the same string, so they all parse it here: a
form works everywhere or is refused everywhere with the same message.

    redis://[user:password@]host[:port][/db]               one node, plain TCP
    rediss://[user:password@]host[:port][/db][?ssl_...]    one node, TLS
    unix://[user:password@]/path/redis.sock[?db=N]         one node, unix socket
    redis+cluster://[user:password@]host:port[,host:port...]     Redis Cluster seed nodes
    rediss+cluster://...[?ssl_...]                               the same over TLS
    redis+sentinel://[user:password@]host:port[,host:port...]/MASTER[?db=N]   Sentinel
    rediss+sentinel://...[?ssl_...]                              the same over TLS

TLS options are named as redis-py's `from_url` names them: `ssl_ca_certs`, `ssl_cert_reqs`
(`required`, the default, or `none`), `ssl_certfile`/`ssl_keyfile` (a client certificate),
`ssl_check_hostname` (`true` unless `ssl_cert_reqs=none`). A sentinel URL's credentials are
the master's; `sentinel_password=` authenticates to the sentinels themselves.

A malformed URL is an InvalidInput naming the URL with its password masked (redact.py), never
quoting a piece of a secret a parser misread.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.cluster import ClusterNode
from redis.sentinel import Sentinel

from .errors import InvalidInput
from .redact import mask_url, redact

__all__ = ["CLIENT_CERT_HINT", "RedisLocation", "Tls", "parse_redis_url", "redis_client",
           "unavailable"]

Kind = Literal["node", "cluster", "sentinel"]

_SCHEMES: dict[str, tuple[Kind, bool]] = {  # scheme -> (kind, TLS)
    "redis": ("node", False), "rediss": ("node", True), "unix": ("node", False),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
}
_DEFAULT_PORT: dict[Kind, int] = {"node": 6379, "cluster": 6379, "sentinel": 26379}
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile",
                "ssl_check_hostname")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True, slots=True)
class Tls:
    """A `rediss` URL's TLS settings: verify the server against `ca_certs` (the system's CAs
    when None) unless `verify` is off; present `certfile`/`keyfile` when set."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """The client context for asyncio (RedisLane). OSError or ValueError if a file is
        unusable: `parse_redis_url` builds one to check them before anything connects."""
        context = ssl.create_default_context(cafile=self.ca_certs)
        context.check_hostname = self.check_hostname
        if not self.verify:
            context.verify_mode = ssl.CERT_NONE
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def redis_py(self) -> dict[str, Any]:
        """The same settings as redis-py's connection keyword arguments."""
        return {"ssl": True, "ssl_ca_certs": self.ca_certs, "ssl_certfile": self.certfile,
                "ssl_keyfile": self.keyfile, "ssl_cert_reqs": "required" if self.verify
                else "none", "ssl_check_hostname": self.check_hostname}


@dataclass(frozen=True, slots=True)
class RedisLocation:
    """A parsed Redis URL. `str()` and `repr()` show it with the password masked."""

    kind: Kind
    nodes: tuple[tuple[str, int], ...]
    """TCP (host, port) pairs: the node, the cluster's seed nodes, or the sentinels.
    Empty for a unix socket."""
    masked: str
    """The URL as messages may show it (mask_url)."""
    path: str | None = None
    """A unix socket's path."""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: Tls | None = None
    master: str | None = None
    """Sentinel: the name of the master the sentinels are asked for."""
    sentinel_password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.masked

    def as_cluster(self) -> RedisLocation:
        """The forwarder's `--cluster` flag: a `redis[s]://` node taken as a cluster seed."""
        if self.kind == "cluster":
            return self
        if self.kind != "node" or self.path or self.db:
            raise InvalidInput(f"invalid Redis URL {self.masked!r} with --cluster: use "
                               "redis[s]+cluster://host:port[,host:port...]")
        return replace(self, kind="cluster")


def _fail(url: str, reason: str) -> InvalidInput:
    return InvalidInput(f"invalid Redis URL {mask_url(url)!r}: {redact(reason, url)}")


def _address(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`; ValueError without quoting `text` (a
    password with an unescaped `/` ends up here)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("a bracketed IPv6 address needs its closing ']'")
        port = rest[1:]
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError("a host is missing")
    if not port:
        return host, default_port
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("a port must be a number 1..65535")
    return host, int(port)


def _number(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{name} must be a whole number")
    return int(value)


def _tls(options: dict[str, str]) -> Tls:
    reqs = options.get("ssl_cert_reqs", "required").lower()
    if reqs not in ("required", "none"):
        raise ValueError("ssl_cert_reqs must be required or none")
    verify = reqs == "required"
    check = options.get("ssl_check_hostname", "true" if verify else "false").lower()
    if check not in _BOOLEANS:
        raise ValueError("ssl_check_hostname must be true or false")
    if _BOOLEANS[check] and not verify:
        raise ValueError("ssl_check_hostname=true needs ssl_cert_reqs=required")
    tls = Tls(ca_certs=options.get("ssl_ca_certs"), certfile=options.get("ssl_certfile"),
              keyfile=options.get("ssl_keyfile"), verify=verify,
              check_hostname=_BOOLEANS[check])
    if tls.keyfile and not tls.certfile:
        raise ValueError("ssl_keyfile needs ssl_certfile (the certificate it belongs to)")
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options and not os.path.isfile(options[name]):
            raise ValueError(f"{name} names no file here")  # the path is in the URL shown
    try:
        tls.context()
    except (OSError, ValueError) as exc:
        raise ValueError(f"its TLS files cannot be loaded ({exc})") from None
    return tls


def _parse(url: str) -> RedisLocation:
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError("use redis://, rediss://, unix://, redis[s]+cluster:// or "
                         "redis[s]+sentinel://")
    kind, secure = _SCHEMES[parts.scheme]
    if parts.fragment or "#" in url:
        raise ValueError("'#' has no meaning here (percent-encode it in a password: %23)")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":") if at else ("", "", "")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if "@" in parts.path or any("@" in name for name, _ in pairs):
        raise ValueError("percent-encode '/', '?', '#' and '@' in a user name or password "
                         "(%2F, %3F, %23, %40)")
    options = dict(pairs)
    if len(options) < len(pairs):
        raise ValueError("an option is given twice")
    allowed = {"db"} if kind != "cluster" else set()
    allowed |= set(_TLS_OPTIONS) if secure else set()
    allowed |= {"sentinel_password"} if kind == "sentinel" else set()
    unknown = sorted(set(options) - allowed)
    if unknown:
        tls_hint = "; ssl_ options need a rediss scheme" if not secure and any(
            name.startswith("ssl_") for name in unknown) else ""
        raise ValueError(f"unknown option {unknown[0]!r} (known here: "
                         f"{', '.join(sorted(allowed)) or 'none'}){tls_hint}")
    db = _number(options["db"], "the database") if "db" in options else 0
    path, master, nodes = None, None, ()
    if parts.scheme == "unix":
        if hosts or not parts.path:
            raise ValueError("write unix:///path/to/redis.sock (three slashes)")
        path = parts.path
    else:
        default_port = _DEFAULT_PORT[kind]
        addresses = hosts.split(",") if hosts else []
        if kind == "node" and len(addresses) > 1:
            raise ValueError("one host:port only (a cluster's seed nodes: redis+cluster://)")
        nodes = tuple(_address(a, default_port) for a in addresses) or (
            (("127.0.0.1", default_port),) if kind == "node" else ())
        if not nodes:
            raise ValueError("name at least one host:port")
        segment = parts.path.strip("/")
        if kind == "node" and segment:
            db = _number(segment, "the database")
        elif kind == "cluster" and segment not in ("", "0"):
            raise ValueError("a cluster has no database number (only 0)")
        elif kind == "sentinel":
            if not segment or "/" in segment:
                raise ValueError("name the master: redis+sentinel://host:port/MASTER_NAME")
            master = unquote(segment)
    return RedisLocation(
        kind=kind, nodes=nodes, masked=mask_url(url), path=path, db=db,
        username=unquote(user) or None, password=unquote(password) if colon else None,
        tls=_tls(options) if secure else None, master=master,
        sentinel_password=options.get("sentinel_password"))


def parse_redis_url(url: str) -> RedisLocation:
    """Parse any accepted form; InvalidInput (password masked, no chained error) if not."""
    try:
        return _parse(url)
    except ValueError as exc:  # urllib may quote a piece of a misparsed password: redacted
        raise _fail(url, str(exc)) from None


def redis_client(where: str | RedisLocation, **options: Any) -> redis.Redis:
    """The one way this package builds a redis-py client: a Redis for a node, a RedisCluster
    for a cluster (it has the same command methods), or a Sentinel master client that follows
    failovers. `options` are redis-py connection keyword arguments (decode_responses,
    socket_timeout, ...). InvalidInput for a malformed URL; nothing connects yet."""
    at = where if isinstance(where, RedisLocation) else parse_redis_url(where)
    auth = {"username": at.username, "password": at.password or None}
    tls = at.tls.redis_py() if at.tls else {}
    if at.kind == "cluster":
        options.pop("health_check_interval", None)  # the cluster client checks by itself
        nodes = [ClusterNode(host, port) for host, port in at.nodes]
        return redis.RedisCluster(startup_nodes=nodes, **auth, **tls,  # type: ignore[return-value]
                                  **options)
    if at.kind == "sentinel":
        timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
        sentinels = Sentinel(list(at.nodes), sentinel_kwargs={
            **timeouts, **tls, "password": at.sentinel_password})
        return sentinels.master_for(at.master, db=at.db, **auth, **tls, **options)
    if at.path:
        return redis.Redis(unix_socket_path=at.path, db=at.db, **auth, **options)
    host, port = at.nodes[0]
    return redis.Redis(host=host, port=port, db=at.db, **auth, **tls, **options)


CLIENT_CERT_HINT = (" (a TLS server that requires client certificates drops connections that "
                    "bring none it accepts: check ssl_certfile and ssl_keyfile)")


def unavailable(exc: BaseException, url: str | None) -> str:
    """"Redis unavailable: ..." for the commands' exit-1 message. A TLS server that refuses
    the client's certificate (or its absence) drops the connection after the handshake, and
    redis-py then reports only an EOF or a reset: for a `rediss` URL, say what it may mean."""
    message = f"Redis unavailable: {exc}"
    try:
        if not url or parse_redis_url(url).tls is None:
            return message
    except InvalidInput:
        return message
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return message  # the server's certificate: the message says so
        if isinstance(cause, ssl.SSLError | ConnectionResetError):
            return message + CLIENT_CERT_HINT
        cause = cause.__cause__ or cause.__context__
    return message
