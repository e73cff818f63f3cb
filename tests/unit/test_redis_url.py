"""Redis URL forms: plain, unix, TLS with redis-py's options, Sentinel, Cluster; bad ones
refused."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from shared.redisurl import parse_redis_url, ssl_context

DOCS = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_plain_url_with_acl_user_and_db() -> None:
    target = parse_redis_url("redis://herd:s%40cret@10.0.0.5:6390/3")
    assert (target.host, target.port, target.db) == ("10.0.0.5", 6390, 3)
    assert (target.username, target.password) == ("herd", "s@cret")
    assert target.tls is None and not target.is_sentinel
    assert "s@cret" not in target.redacted() and "s%40cret" not in target.redacted()


def test_password_only_and_defaults() -> None:
    target = parse_redis_url("redis://:pw@localhost")
    assert (target.host, target.port, target.db, target.username, target.password) == (
        "localhost", 6379, 0, None, "pw")


def test_unix_socket_with_db() -> None:
    target = parse_redis_url("unix:///run/redis/redis.sock?db=2")
    assert (target.path, target.db) == ("/run/redis/redis.sock", 2)


def test_tls_options_are_redis_py_s() -> None:
    target = parse_redis_url(
        "rediss://:pw@cache.example.net:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
        "&ssl_check_hostname=false"
    )
    assert target.tls == {"ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required",
                          "ssl_check_hostname": False}
    assert target.port == 6380


def test_tls_context_follows_the_options() -> None:
    unchecked = ssl_context({"ssl_cert_reqs": "none"})
    assert unchecked.verify_mode == ssl.CERT_NONE and not unchecked.check_hostname
    default = ssl_context({})
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname


def test_sentinel_url_lists_every_sentinel_and_the_master() -> None:
    target = parse_redis_url(
        "redis+sentinel://:masterpw@10.0.0.5:26379,10.0.0.6,[::1]:26380/mymaster/4"
        "?sentinel_password=sp"
    )
    assert target.sentinels == (("10.0.0.5", 26379), ("10.0.0.6", 26379), ("::1", 26380))
    assert (target.service_name, target.db) == ("mymaster", 4)
    assert (target.password, target.sentinel_password) == ("masterpw", "sp")
    assert target.tls is None and target.is_sentinel
    assert "sp" not in target.redacted().split("?")[1].replace("sentinel_password", "")


def test_tls_sentinel() -> None:
    target = parse_redis_url("rediss+sentinel://h:26379/m?ssl_cert_reqs=none")
    assert target.tls == {"ssl_cert_reqs": "none"} and target.db == 0


def test_cluster_url_lists_the_nodes_to_ask_first() -> None:
    target = parse_redis_url(
        "redis+cluster://herd:s%40cret@10.0.0.5:7000,10.0.0.6,[::1]:7002/")
    assert target.cluster_nodes == (("10.0.0.5", 7000), ("10.0.0.6", 6379), ("::1", 7002))
    assert target.is_cluster and not target.is_sentinel and target.tls is None
    assert (target.username, target.password, target.db) == ("herd", "s@cret", 0)
    assert "s@cret" not in target.redacted() and "s%40cret" not in target.redacted()
    assert parse_redis_url("redis+cluster://10.0.0.5:7000").cluster_nodes == (
        ("10.0.0.5", 7000),)
    assert parse_redis_url("redis+cluster://10.0.0.5:7000/0").db == 0


def test_tls_cluster_takes_redis_py_s_options() -> None:
    target = parse_redis_url("rediss+cluster://:pw@cfg.cache.example.net:6379/"
                             "?ssl_ca_certs=/etc/ca.pem&ssl_check_hostname=false")
    assert target.is_cluster and target.password == "pw"
    assert target.tls == {"ssl_ca_certs": "/etc/ca.pem", "ssl_check_hostname": False}


@pytest.mark.parametrize(("url", "reason"), [
    ("redis+cluster://", "at least one host"),
    ("redis+cluster://h:7000/2", "only database 0"),
    ("redis+cluster://h:7000?db=1", "only database 0"),
    ("redis+cluster://h:port/", "bad port"),
    ("rediss+cluster://h?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("http://localhost:6379", "unsupported Redis URL scheme"),
    ("localhost:6379", "unsupported Redis URL scheme"),
    ("redis://localhost:port/0", "bad port"),
    ("redis://localhost/zero", "database must be a number"),
    ("redis+sentinel://h:26379", "master's name"),
    ("redis+sentinel:///mymaster", "at least one host"),
    ("unix://", "needs a path"),
    ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("rediss://h?ssl_check_hostname=perhaps", "ssl_check_hostname"),
])
def test_bad_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_redis_url(url)


def test_every_example_in_the_docs_parses() -> None:
    text = DOCS.read_text()
    examples = re.findall(
        r"^(?:redis|rediss|unix|rediss?\+sentinel|rediss?\+cluster)://\S+$", text,
        re.MULTILINE)
    assert len(examples) >= 11
    assert any(e.startswith("redis+cluster://") for e in examples)
    assert any(e.startswith("rediss+cluster://") for e in examples)
    for url in examples:
        parse_redis_url(url)
