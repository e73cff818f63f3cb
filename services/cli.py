"""The `herd` command: serve the router, or run one of its sub-commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from shared.settings import Settings, SettingsError

__all__ = ["main", "settings_from_args"]


class Subcommand(Protocol):
    """A module under `herd <name>`: it adds its flags and runs."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# name -> (module, one-line help). Modules are imported only when needed.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("services.check", "Exit 0 if a router answers its health check, 1 if not."),
    "sim": ("services.sim.cli", "Run a simulated Ollama server (for tests, demos and benchmarks)."),
    "dashboard": ("services.dashboard", "Run the dashboard alone, reading a router's API."),
    "demo": ("services.demo", "Start a whole simulated fleet with its dashboard, in one command."),
    "recorder": ("services.recorder.cli", "Copy the fleet's traces into one latency.db, alone."),
    "bench": ("services.bench.cli", "Measure a fleet through its router; the dashboard keeps it."),
    "keys": ("services.client_keys", "Create, list or revoke client keys; open or close inference "
                              "(admin token from FLEET_ADMIN_TOKEN)."),
    "pin": ("services.pin", "Keep a model loaded on N nodes of the fleet; --list shows the pins "
                            "(admin token from FLEET_ADMIN_TOKEN)."),
    "unpin": ("services.unpin", "Stop keeping a model loaded: its copies go back to the nodes' "
                                "keep_alive."),
}

# CLI flag dest -> settings field. Flags left unset (None) keep the environment's value.
FLAG_FIELDS = (
    "host", "port", "workers", "redis_url", "data_dir", "log_level", "mdns_enabled",
    "dashboard_enabled", "dashboard_port", "router_urls", "node_ollama_host", "node_id",
    "num_parallel", "node_memory_gb", "mdns_interfaces", "fleet_name",
)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from FLEET_* variables, with every flag the user gave winning."""
    overrides = {name: getattr(args, name) for name in FLAG_FIELDS if hasattr(args, name)}
    return Settings.load(**overrides)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fleet-name", dest="fleet_name", default=None,
                        help="Name of the fleet: agents join only routers of the same name "
                             "(FLEET_NAME). Lets several fleets share one LAN.")
    parser.add_argument("--data-dir", dest="data_dir", default=None,
                        help="Where logs, latency.db and the embedded Redis live "
                             "(FLEET_DATA_DIR, default ~/.fleet-manager).")
    parser.add_argument("--log-level", dest="log_level", default=None,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="Lowest level logged (FLEET_LOG_LEVEL, default INFO).")


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None,
                        help="Address to listen on (FLEET_HOST, default 0.0.0.0).")
    parser.add_argument("--port", type=int, default=None,
                        help="Port to listen on (FLEET_PORT, default 11435).")
    parser.add_argument("--workers", type=int, default=None,
                        help="Router processes on that port, each a full replica "
                             "(FLEET_WORKERS, default 1). About one per core.")
    parser.add_argument("--redis-url", dest="redis_url", default=None,
                        help="Shared Redis, e.g. redis://10.0.0.5:6379/0 (FLEET_REDIS_URL). "
                             "Without it herd starts an embedded Redis of its own.")
    add_common_flags(parser)
    parser.add_argument("--no-mdns", dest="mdns_enabled", action="store_const", const=False,
                        default=None, help="Do not advertise this router over mDNS.")
    parser.add_argument("--mdns-interfaces", dest="mdns_interfaces", default=None,
                        help="Comma list of addresses mDNS uses (FLEET_MDNS_INTERFACES).")
    parser.add_argument("--no-dashboard", dest="dashboard_enabled", action="store_const",
                        const=False, default=None, help="Do not start the Streamlit dashboard.")
    parser.add_argument("--dashboard-port", dest="dashboard_port", type=int, default=None,
                        help="Port of the dashboard (FLEET_DASHBOARD_PORT, default 8501).")


def _subcommand(name: str) -> Subcommand:
    module: Subcommand = importlib.import_module(SUBCOMMANDS[name][0])
    return module


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for `argv`: only the sub-command named there is imported (each is heavy)."""
    command = next((arg for arg in argv if arg in SUBCOMMANDS), None)
    parser = argparse.ArgumentParser(
        prog="herd",
        description="Herd: one address in front of a fleet of Ollama servers. "
                    "With no sub-command, serve the router (default port 11435).",
    )
    add_serve_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _subcommand(name).add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(args_list).parse_args(args_list)
    try:
        if args.command:
            return _subcommand(args.command).run(args)
        from services.router.server import serve

        return serve(settings_from_args(args))
    except SettingsError as exc:
        print(f"herd: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
