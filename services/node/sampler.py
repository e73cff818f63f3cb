"""Samples this machine (psutil, NVIDIA GPUs when present) and the local Ollama for heartbeats."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import os
import platform
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import psutil

from services.node.shapes import ModelShapes
from shared.version import VERSION

__all__ = [
    "GpuSampler",
    "Sampler",
    "default_max_loaded_models",
    "default_num_parallel",
    "fixed_memory",
    "memory_pressure",
    "modelled_machine",
    "resolve_max_loaded_models",
    "resolve_num_parallel",
]

log = logging.getLogger("herd.node")

GB = 1e9  # Ollama and ollama-herd report decimal gigabytes


def memory_pressure(available: float, total: float) -> str:
    """ollama-herd's levels: normal, warning (under 20 % free), critical (under 10 %)."""
    if total <= 0:
        return "normal"
    free = available / total
    if free < 0.10:
        return "critical"
    if free < 0.20:
        return "warning"
    return "normal"


def fixed_memory(total_gb: float, loaded_gb: Iterable[float]) -> dict[str, Any]:
    """The memory section when --memory-gb sets the total: on a GPU box VRAM bounds the
    models, not the host's RAM, and agents sharing a host would each report all of it.
    Used is the size of the models the local Ollama has loaded (/api/ps `size`)."""
    used = sum(loaded_gb)
    # More loaded than configured (a wrong figure, or Ollama spilling to RAM): nothing free.
    available = max(0.0, total_gb - used)
    return {
        "total_gb": round(total_gb, 2),
        "used_gb": round(used, 2),
        "available_gb": round(available, 2),
        "pressure": memory_pressure(available, total_gb),
    }


def default_num_parallel(available_gb: float) -> int:
    """Ollama's automatic choice when OLLAMA_NUM_PARALLEL is unset: 4 slots when memory
    allows, else 1 (newer Ollama releases document 1; a router that assumes 1 serialises
    everything, so this errs to 4 only where there is room for it)."""
    return 4 if available_gb >= 8.0 else 1


def default_max_loaded_models(gpus: int) -> int:
    """Ollama's documented default: 3 per GPU, or 3 for CPU inference."""
    return 3 * max(1, gpus)


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


def resolve_num_parallel(
    flag: int, environ: Mapping[str, str], available_gb: float,
    simulated: Mapping[str, Any] | None = None,
) -> tuple[int, str]:
    """The slots per model and where the figure came from: flag, the simulator's own
    figure, env, or Ollama's default."""
    if flag > 0:
        return flag, "flag"
    from_sim = _positive_int((simulated or {}).get("num_parallel"))
    if from_sim is not None:
        return from_sim, "sim"
    from_env = _env_int(environ, "OLLAMA_NUM_PARALLEL")
    if from_env is not None:
        return from_env, "env"
    return default_num_parallel(available_gb), "default"


def resolve_max_loaded_models(
    environ: Mapping[str, str], gpus: int, simulated: Mapping[str, Any] | None = None,
) -> int:
    """A simulator says what it runs with; else OLLAMA_MAX_LOADED_MODELS; else Ollama's
    default. The environment is only the agent's guess at the server's: the server's own
    word wins when it can give one."""
    return (_positive_int((simulated or {}).get("max_loaded_models"))
            or _env_int(environ, "OLLAMA_MAX_LOADED_MODELS")
            or default_max_loaded_models(gpus))


def _section(value: Any, names: Iterable[str]) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    out: dict[str, float] = {}
    for name in names:
        item = value.get(name)
        if not isinstance(item, int | float) or isinstance(item, bool) or item < 0:
            return None
        out[name] = float(item)
    return out


def modelled_machine(machine: Mapping[str, Any], simulated: Mapping[str, Any]) -> dict[str, Any]:
    """The machine section with a simulator's modelled CPU, memory and disk in place of the
    host's (each section only when the simulator gave it whole). Several simulated nodes
    on one host then look like the different machines they model."""
    out = dict(machine)
    cpu = _section(simulated.get("cpu"), ("cores_physical", "cores_logical",
                                          "utilization_pct"))
    if cpu is not None:
        out["cpu"] = {"cores_physical": int(cpu["cores_physical"]),
                      "cores_logical": int(cpu["cores_logical"]),
                      "utilization_pct": cpu["utilization_pct"]}
    memory = _section(simulated.get("memory"), ("total_gb", "used_gb", "available_gb"))
    if memory is not None:
        out["memory"] = {**memory,
                         "pressure": memory_pressure(memory["available_gb"], memory["total_gb"]),
                         "swap_used_gb": 0.0, "swap_total_gb": 0.0}  # no swap is modelled
    disk = _section(simulated.get("disk"), ("total_gb", "used_gb", "available_gb"))
    if disk is not None:
        out["disk"] = disk
    return out


class GpuSampler:
    """NVIDIA figures through nvidia-ml-py; absent (None) on machines without it, never raising."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._count = 0
        try:
            pynvml: Any = importlib.import_module("pynvml")  # nvidia-ml-py, optional
            pynvml.nvmlInit()
            self._count = int(pynvml.nvmlDeviceGetCount())
            self._nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - missing library or driver: no GPU figures
            log.debug("no NVIDIA GPU figures", extra={"reason": repr(exc)})

    @property
    def count(self) -> int:
        return self._count if self._nvml is not None else 0

    def sample(self) -> dict[str, float] | None:
        if self._nvml is None or self._count == 0:
            return None
        nvml = self._nvml
        try:
            total = used = util = 0.0
            for index in range(self._count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                total += mem.total / GB
                used += mem.used / GB
                util += float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            return {"count": float(self._count), "vram_total_gb": round(total, 2),
                    "vram_used_gb": round(used, 2),
                    "utilization_pct": round(util / self._count, 1)}
        except Exception as exc:  # noqa: BLE001 - a driver hiccup must not stop heartbeats
            log.debug("GPU sample failed", extra={"reason": repr(exc)})
            return None


def _loaded_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    details = entry.get("details") or {}
    return {
        "name": entry.get("name") or entry.get("model") or "",
        "size_gb": round(float(entry.get("size") or 0) / GB, 3),
        "size_vram_gb": round(float(entry.get("size_vram") or 0) / GB, 3),
        "requests_active": 0,
        "parameter_size": details.get("parameter_size", ""),
        "quantization": details.get("quantization_level", ""),
        "context_length": int(entry.get("context_length") or 0),
        "expires_at": entry.get("expires_at") or "",
        "digest": entry.get("digest", ""),
    }


class Sampler:
    """Builds one heartbeat payload: a superset of ollama-herd's, same field names."""

    def __init__(self, ollama_host: str, num_parallel_flag: int,
                 environ: Mapping[str, str] | None = None, timeout: float = 2.0,
                 memory_gb: float = 0.0) -> None:
        self.ollama_host = ollama_host.rstrip("/")
        if "://" not in self.ollama_host:
            self.ollama_host = f"http://{self.ollama_host}"
        self._flag = num_parallel_flag
        self._memory_gb = memory_gb  # 0: the machine's memory
        self._environ = os.environ if environ is None else environ
        self._client = httpx.AsyncClient(base_url=self.ollama_host, timeout=timeout)
        self._gpu = GpuSampler()
        self._process = psutil.Process()
        self._simulator: bool | None = None  # None: not asked yet
        self._shapes = ModelShapes()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    async def aclose(self) -> None:
        await self._client.aclose()

    async def ollama(self) -> dict[str, Any]:
        """The local Ollama's state; `up: false` with the error when it does not answer."""
        try:
            ps, tags, version = await asyncio.gather(
                self._client.get("/api/ps"), self._client.get("/api/tags"),
                self._client.get("/api/version"))
            for response in (ps, tags, version):
                response.raise_for_status()
            ps_body, tags_body = ps.json(), tags.json()
            version_body = version.json()
        except (httpx.HTTPError, ValueError) as exc:
            return {"up": False, "error": f"{type(exc).__name__}: {exc}"[:300],
                    "models_loaded": [], "models_available": []}
        models = [m for m in tags_body.get("models") or [] if isinstance(m, Mapping)]
        shapes = await self._shapes.update(self._client, models)
        return {
            "up": True,
            "error": "",
            "models_loaded": [_loaded_entry(m) for m in ps_body.get("models") or []
                              if isinstance(m, Mapping)],
            "models_available": [m.get("name") or m.get("model") for m in models],
            "models_available_sizes": {
                (m.get("name") or m.get("model")): round(float(m.get("size") or 0) / GB, 6)
                for m in models},
            # what each model's context costs, for the routers' fit estimate (shapes.py)
            "models_available_shape": shapes,
            "version": str(version_body.get("version", "")),
        }

    async def simulated(self) -> dict[str, Any] | None:
        """What a `herd sim` says it models (GET /sim/node); None beside a real Ollama.

        Asked until the server first answers: a real Ollama says 404 and is not asked again,
        so the probe costs one request over the agent's life.
        """
        if self._simulator is False:
            return None
        try:
            response = await self._client.get("/sim/node")
        except httpx.HTTPError:
            return None  # down for now: ask again with the next heartbeat
        body: Any = None
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
        if not isinstance(body, dict) or body.get("simulated") is not True:
            if response.status_code < 500:
                if self._simulator is None:
                    log.debug("not a simulator", extra={"status": response.status_code})
                self._simulator = False
            return None
        self._simulator = True
        return body

    def machine(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        try:
            disk = shutil.disk_usage(os.path.expanduser("~"))
            disk_view = {"total_gb": round(disk.total / GB, 2), "used_gb": round(disk.used / GB, 2),
                         "available_gb": round(disk.free / GB, 2)}
        except OSError:
            disk_view = {"total_gb": 0.0, "used_gb": 0.0, "available_gb": 0.0}
        return {
            "arch": platform.machine(),
            "cpu": {"cores_physical": psutil.cpu_count(logical=False) or psutil.cpu_count() or 0,
                    "cores_logical": psutil.cpu_count() or 0,
                    "utilization_pct": psutil.cpu_percent(interval=None)},
            "memory": {
                "total_gb": round(vm.total / GB, 2),
                "used_gb": round((vm.total - vm.available) / GB, 2),
                "available_gb": round(vm.available / GB, 2),
                "pressure": memory_pressure(vm.available, vm.total),
                "swap_used_gb": round(swap.used / GB, 2),
                "swap_total_gb": round(swap.total / GB, 2),
            },
            "disk": disk_view,
            "thermal": {"state": "unknown", "temperature_c": None, "source": ""},
            "process_memory": {"rss_gb": round(self._process.memory_info().rss / GB, 3)},
        }

    async def sample(self, node_id: str, router_host: str = "") -> dict[str, Any]:
        """One heartbeat (without `draining`, which the agent adds)."""
        ollama, simulated = await asyncio.gather(self.ollama(), self.simulated())
        machine = self.machine()
        if simulated is not None:
            machine = modelled_machine(machine, simulated)
        if self._memory_gb > 0:
            machine["memory"].update(fixed_memory(
                self._memory_gb, (m["size_gb"] for m in ollama["models_loaded"])))
        num_parallel, source = resolve_num_parallel(
            self._flag, self._environ, machine["memory"]["available_gb"], simulated)
        max_loaded = resolve_max_loaded_models(self._environ, self._gpu.count, simulated)
        ollama.update(num_parallel=num_parallel, num_parallel_source=source,
                      max_loaded_models=max_loaded, requests_active=0)
        payload: dict[str, Any] = {
            "node_id": node_id,
            "timestamp": time.time(),
            **machine,
            "ollama": ollama,
            "ollama_host": self.ollama_host,
            "lan_ip": lan_ip(router_host),
            "capacity": None,
            "agent": "herd-node",
            "agent_version": VERSION,
            "num_parallel": num_parallel,
            "max_loaded_models": max_loaded,
        }
        gpu = self._gpu.sample()
        if gpu is not None:
            payload["gpu"] = gpu
        return payload


def lan_ip(router_host: str) -> str:
    """The local address this machine uses towards the router (no packet is sent)."""
    try:
        target = str(ipaddress.IPv4Address(router_host or "127.0.0.1"))
    except ValueError:  # a name: resolving it here would block the loop
        return ""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((target, 9))  # UDP connect only picks a route
            return str(sock.getsockname()[0])
    except OSError:
        return ""
