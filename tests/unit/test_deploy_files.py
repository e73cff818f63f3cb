"""compose.yaml and the Procfile run commands the CLI really accepts."""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from services.cli import build_parser
from services.node.cli import build_parser as build_node_parser

ROOT = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> None:
    program, *args = argv
    parser = build_node_parser() if program == "herd-node" else build_parser(args)
    try:
        parser.parse_args(args)
    except SystemExit as exc:  # argparse exits on an unknown flag or sub-command
        pytest.fail(f"{shlex.join(argv)} is not a valid command line ({exc})")


def _compose_commands() -> list[list[str]]:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return [s["command"] for s in spec["services"].values() if s.get("command", [""])[0] in
            {"herd", "herd-node"}]


def _procfile_commands() -> list[list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    commands = [shlex.split(line.split(":", 1)[1]) for line in lines if line and line[0] != "#"]
    return [c for c in commands if c[0] in {"herd", "herd-node"}]


def test_compose_runs_two_replicas_on_one_redis() -> None:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    routers = [name for name in spec["services"] if name.startswith("router")]
    assert len(routers) == 2
    assert spec["x-herd"]["environment"]["FLEET_REDIS_URL"].startswith("redis://redis:")
    commands = _compose_commands()
    assert len(commands) >= 3
    for argv in commands:
        _parse(argv)


def test_procfile_commands_parse() -> None:
    commands = _procfile_commands()
    assert {c[0] for c in commands} == {"herd", "herd-node"}
    for argv in commands:
        _parse(argv)


def test_compose_redis_keeps_its_data_on_a_volume() -> None:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    redis = spec["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in spec["volumes"]


def test_procfile_redis_has_a_port_of_its_own_and_persists() -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    redis_line = next(line for line in lines if line.startswith("redis:"))
    argv = shlex.split(redis_line.split("&&")[-1].removeprefix(" exec"))
    port = argv[argv.index("--port") + 1]
    assert port != "6379"  # a developer's own Redis usually holds that one
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--appendfsync") + 1] == "everysec"
    urls = {c[c.index("--redis-url") + 1] for c in _procfile_commands() if "--redis-url" in c}
    assert urls == {f"redis://127.0.0.1:{port}/0"}


def _observability() -> tuple[dict[str, Any], dict[str, Any]]:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    wanted = {name: s for name, s in spec["services"].items()
              if "observability" in s.get("profiles", [])}
    return spec, wanted


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the repository) of the bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def test_compose_observability_profile_is_optional_and_complete() -> None:
    spec, wanted = _observability()
    assert set(wanted) == {"prometheus", "grafana", "otel-collector"}
    # The default stack is unchanged: nothing else sits behind a profile.
    assert all(not s.get("profiles") for name, s in spec["services"].items()
               if name not in wanted)
    for name, service in wanted.items():
        for source in _mounts(service).values():
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts a missing {source}"
            else:
                assert source in spec["volumes"], f"{name}: volume {source} is not declared"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_prometheus_scrapes_each_replica_and_loads_the_rules() -> None:
    spec, wanted = _observability()
    prometheus = wanted["prometheus"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_in_container = PurePosixPath(config_flag.split("=", 1)[1])
    host_dir = _mounts(prometheus)[str(config_in_container.parent)]
    config = yaml.safe_load((ROOT / host_dir / config_in_container.name).read_text())
    for rule_file in config["rule_files"]:
        assert (ROOT / host_dir / rule_file).exists(), rule_file
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "herd"  # alerts.yaml's HerdReplicaDown names it
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    routers = {name for name in spec["services"] if name.startswith("router")}
    ports = {_flag(spec["services"][name]["command"], "--port") for name in routers}
    # every replica on its own address, not the proxy: counters are per replica
    assert targets == {f"{name}:{port}" for name in routers for port in ports}


def test_compose_grafana_is_provisioned_with_the_dashboard_and_prometheus() -> None:
    _, wanted = _observability()
    grafana = _mounts(wanted["grafana"])
    provisioning = ROOT / grafana["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"  # the profile's service and its port
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "herd.yaml").read_text())["providers"]
    folder = provider["options"]["path"]
    dashboards = {target: source for target, source in grafana.items()
                  if str(PurePosixPath(target).parent) == folder}
    assert dashboards == {f"{folder}/herd.json": "./deploy/grafana/herd.json"}


def test_compose_otel_collector_receives_otlp_and_has_a_working_pipeline() -> None:
    _, wanted = _observability()
    collector = wanted["otel-collector"]
    config_flag = next(a for a in collector["command"] if a.startswith("--config="))
    config_in_container = PurePosixPath(config_flag.split("=", 1)[1])
    host_dir = _mounts(collector)[str(config_in_container.parent)]
    config = yaml.safe_load((ROOT / host_dir / config_in_container.name).read_text())
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert {p.split(":")[-1] for p in collector["ports"]} == {"4317", "4318"}
    pipelines = config["service"]["pipelines"]
    assert "traces" in pipelines
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{component} is not defined under {kind}"
    assert "debug" in pipelines["traces"]["exporters"]


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]
