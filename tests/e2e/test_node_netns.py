"""Discovery across a real interface: router and agents in network namespaces on a bridge.

Everything lives inside namespaces this test creates (private 10.213.0.0/24 addresses on a
bridge in a namespace of its own), so nothing reaches any real network.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_node_fleet import Cluster
from tests.helpers import free_port, wait_until

SUBNET = "10.213.0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Namespaces:
    """A bridge namespace plus one namespace per host, each on the bridge by a veth pair."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.bridge_ns = f"herdt-{self.tag}-br"
        self.hosts: dict[str, str] = {}  # namespace -> its address
        self.created: list[str] = []

    def add_bridge(self) -> None:
        self._netns(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, index: int) -> tuple[str, str]:
        name, address = f"herdt-{self.tag}-h{index}", f"{SUBNET}.{index + 1}"
        self._netns(name)
        inside, outside = f"hv{self.tag}{index}a", f"hv{self.tag}{index}b"
        _ip("link", "add", inside, "netns", name, "type", "veth", "peer", "name", outside,
            "netns", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", outside, "master", "br0")
        _ip("-n", self.bridge_ns, "link", "set", outside, "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", name, "link", "set", inside, "up")
        # mDNS goes out of the interface the multicast route names.
        _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", inside)
        self.hosts[name] = address
        return name, address

    def delete(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10,
                           check=False)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    if shutil.which("ip") is None:
        pytest.skip("the ip command is not installed")
    ns = Namespaces()
    try:
        try:
            ns.add_bridge()
        except (subprocess.CalledProcessError, OSError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            pytest.skip(f"network namespaces unavailable here (needs root and "
                        f"CAP_SYS_ADMIN): {stderr.decode(errors='replace').strip() or exc}")
        yield ns
    finally:
        ns.delete()


def in_ns(ns: str, args: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def wrapper(ns: str) -> Callable[[list[str]], list[str]]:
    return lambda args: in_ns(ns, args)


def ns_status(ns: str, url: str) -> dict[str, Any]:
    out = subprocess.run(in_ns(ns, ["curl", "-sf", "--max-time", "2", f"{url}/fleet/status"]),
                         capture_output=True, timeout=10, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def test_discovery_across_a_bridge(namespaces: Namespaces, tmp_path: Path,
                                   redis_url: str, prefix: str) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is needed to reach the router inside its namespace")
    router_ns, router_ip = namespaces.add_host(0)
    agents = [namespaces.add_host(i) for i in (1, 2)]
    # A unix-socket Redis is reachable from any namespace; a TCP one on 127.0.0.1 is not.
    shared_redis = redis_url if redis_url.startswith("unix://") else ""
    procs: list[Cluster] = []
    router_port, sim_port = free_port(), free_port()
    url = f"http://{router_ip}:{router_port}"

    router = Cluster(tmp_path / "r", shared_redis, prefix,
                     wrap=wrapper(router_ns), mdns_address=router_ip)
    procs.append(router)
    try:
        (tmp_path / "r").mkdir()
        router.router("r", router_port, host=router_ip, wait=False)
        for index, (ns, address) in enumerate(agents):
            host = Cluster(tmp_path / f"a{index}", shared_redis, prefix,
                           wrap=wrapper(ns), mdns_address=address)
            host.env["FLEET_NAME"] = router.env["FLEET_NAME"]
            procs.append(host)
            (tmp_path / f"a{index}").mkdir()
            # The simulator answers on the namespace's own address; the agent is told
            # loopback, as on a real box, and the router must work out the real address.
            host.sim(f"n{index}", sim_port, host="0.0.0.0", wait=False)
            host.agent(f"n{index}", f"http://127.0.0.1:{sim_port}")

        def both_online() -> dict[str, Any] | None:
            nodes = {n["node_id"]: n for n in ns_status(router_ns, url).get("nodes", [])}
            ok = len(nodes) == 2 and all(n["servable"] for n in nodes.values())
            return nodes if ok else None

        nodes = wait_until(both_online, timeout=30.0, interval=0.3,
                           message="both agents online through the bridge")
        for index, (_ns, address) in enumerate(agents):
            assert nodes[f"n{index}"]["ollama_url"] == f"http://{address}:{sim_port}"
        # The router can reach each node's Ollama at the address it worked out.
        for node in nodes.values():
            out = subprocess.run(
                in_ns(router_ns, ["curl", "-sf", "--max-time", "2",
                                  f"{node['ollama_url']}/api/version"]),
                capture_output=True, timeout=10, check=False)
            assert out.returncode == 0 and b"version" in out.stdout
    finally:
        for cluster in reversed(procs):
            cluster.stop()
