"""compose.yaml and the Procfile run commands the CLI really accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

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
