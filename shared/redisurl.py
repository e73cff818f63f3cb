"""The Redis URL forms Herd accepts, parsed once into a `RedisTarget` every client shares.

- `redis://[user:password@]host[:port][/db]` and `unix:///path/to/redis.sock[?db=N]`;
- `rediss://...` (TLS) with redis-py's query parameters: `ssl_ca_certs`, `ssl_certfile`,
  `ssl_keyfile`, `ssl_cert_reqs` (`none` | `optional` | `required`), `ssl_check_hostname`,
  `ssl_ca_path`;
- `redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/<db>]`, with
  `sentinel_password` (and `sentinel_username`) as query parameters; `rediss+sentinel://`
  speaks TLS to the Sentinels and to the master;
- `redis+cluster://[user:password@]host:port[,host:port...][/]`: a Redis Cluster, reached
  through any of the listed nodes (the others are learned from the cluster itself);
  `rediss+cluster://` speaks TLS to every node. A cluster has only database 0.

The credentials in a Sentinel URL are the master's; Sentinels often have none or their own.
In a cluster URL they are every node's.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio.connection import RedisSSLContext

__all__ = ["CLUSTER_SCHEMES", "RedisTarget", "parse_redis_url", "ssl_context"]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
_TLS_SCHEMES = ("rediss", "rediss+sentinel", "rediss+cluster")
_SSL_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                "ssl_check_hostname", "ssl_ca_path", "ssl_password")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is and how to talk to it; built by `parse_redis_url`."""

    url: str
    host: str = "localhost"
    port: int = 6379
    path: str = ""  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    # ssl_* options with redis-py's names and types; None: no TLS
    tls: dict[str, Any] | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str = ""  # the master's name in Sentinel
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    cluster_nodes: tuple[tuple[str, int], ...] = ()  # the nodes a cluster is first asked
    other: dict[str, str] = field(default_factory=dict)  # query parameters left to redis-py

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def is_cluster(self) -> bool:
        return bool(self.cluster_nodes)

    def redacted(self) -> str:
        """The URL without its passwords, for logs and error messages."""
        parts = urlsplit(self.url)
        netloc = parts.netloc
        if "@" in netloc:
            user = netloc.rpartition("@")[0].partition(":")[0]
            netloc = f"{user}:***@{netloc.rpartition('@')[2]}" if user else \
                f":***@{netloc.rpartition('@')[2]}"
        query = "&".join(
            f"{k}=***" if "password" in k else f"{k}={v}"
            for k, v in (p.partition("=")[::2] for p in parts.query.split("&") if p)
        )
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _bool(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"missing host in {text!r}")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    return host, port


def parse_redis_url(url: str) -> RedisTarget:
    """Parse one of the forms above; ValueError with a one-line reason otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(
            f"unsupported Redis URL scheme {scheme or url!r}: use redis://, rediss://, "
            "unix://, redis+sentinel:// or redis+cluster://"
        )
    location, _, query_text = rest.partition("?")
    query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
    netloc, _, path = location.partition("/")
    username: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # redis://password@host is redis-py's reading too
            username, password = None, unquote(user) or None
    username = query.pop("username", None) or username
    password = query.pop("password", None) or password

    tls: dict[str, Any] | None = None
    if scheme in _TLS_SCHEMES:
        tls = {}
        for name in _SSL_OPTIONS:
            if name in query:
                value = query.pop(name)
                tls[name] = _bool(name, value) if name == "ssl_check_hostname" else value
        reqs = tls.get("ssl_cert_reqs")
        if reqs is not None and reqs not in ("none", "optional", "required"):
            raise ValueError(f"ssl_cert_reqs must be none, optional or required, got {reqs!r}")

    db_text = query.pop("db", "")
    common: dict[str, Any] = {"url": url, "username": username, "password": password,
                              "tls": tls}
    if scheme in SENTINEL_SCHEMES:
        sentinels = tuple(_host_port(h, 26379) for h in netloc.split(",") if h)
        if not sentinels:
            raise ValueError("a redis+sentinel:// URL needs at least one host:port")
        name, _, db_part = path.partition("/")
        if not name:
            raise ValueError("a redis+sentinel:// URL needs the master's name: "
                             "redis+sentinel://host:26379/mymaster/0")
        db_text = db_part.strip("/") or db_text
        return RedisTarget(
            **common, db=_db(db_text), sentinels=sentinels, service_name=unquote(name),
            sentinel_username=query.pop("sentinel_username", None) or None,
            sentinel_password=query.pop("sentinel_password", None) or None, other=query,
        )
    if scheme in CLUSTER_SCHEMES:
        nodes = tuple(_host_port(h, 6379) for h in netloc.split(",") if h)
        if not nodes:
            raise ValueError("a redis+cluster:// URL needs at least one host:port")
        db = _db(path.strip("/") or db_text)
        if db:
            raise ValueError(f"a Redis Cluster has only database 0, not {db}")
        return RedisTarget(**common, host=nodes[0][0], port=nodes[0][1], cluster_nodes=nodes,
                           other=query)
    if scheme == "unix":
        socket_path = "/" + path if path else ""
        if not socket_path:
            raise ValueError("a unix:// URL needs a path: unix:///run/redis/redis.sock")
        return RedisTarget(**common, path=unquote(socket_path), db=_db(db_text), other=query)
    host, port = _host_port(netloc or "localhost", 6379)
    return RedisTarget(**common, host=host, port=port, db=_db(path.strip("/") or db_text),
                       other=query)


def _db(text: str) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        raise ValueError(f"the database must be a number, got {text!r}") from None


def ssl_context(tls: dict[str, Any]) -> ssl.SSLContext:
    """The same SSLContext redis-py builds from these options (one place for both clients)."""
    context: ssl.SSLContext = RedisSSLContext(
        keyfile=tls.get("ssl_keyfile"),
        certfile=tls.get("ssl_certfile"),
        cert_reqs=tls.get("ssl_cert_reqs", "required"),
        ca_certs=tls.get("ssl_ca_certs"),
        ca_path=tls.get("ssl_ca_path"),
        check_hostname=tls.get("ssl_check_hostname", True),
        password=tls.get("ssl_password"),
    ).get()
    return context
