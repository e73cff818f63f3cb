"""The `herd-node` command: run the node agent beside one Ollama."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from services.cli import add_common_flags, settings_from_args
from shared.settings import SettingsError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herd-node",
        description="Herd's node agent: finds the routers (mDNS, or --router-url), samples "
                    "this machine and its Ollama, and sends a heartbeat every few seconds.",
    )
    parser.add_argument("--router-url", dest="router_url", action="append", default=None,
                        help="A router to report to; repeat or comma-separate for several "
                             "(FLEET_ROUTER_URL). Without it, routers are found over mDNS.")
    parser.add_argument("--ollama-host", dest="node_ollama_host", default=None,
                        help="The local Ollama (FLEET_NODE_OLLAMA_HOST, "
                             "default http://localhost:11434).")
    parser.add_argument("--node-id", dest="node_id", default=None,
                        help="This node's name (FLEET_NODE_ID, default the host name).")
    parser.add_argument("--num-parallel", dest="num_parallel", type=int, default=None,
                        help="Parallel requests per model the Ollama runs (FLEET_NUM_PARALLEL; "
                             "default OLLAMA_NUM_PARALLEL, else Ollama's own rule).")
    parser.add_argument("--memory-gb", dest="node_memory_gb", type=float, default=None,
                        help="Report this many GB as the node's memory instead of the "
                             "machine's RAM (FLEET_NODE_MEMORY_GB): the GPU's VRAM on a GPU "
                             "box, or this agent's share when several share a host. Used "
                             "memory is then the size of the models the Ollama has loaded. "
                             "Default 0: the machine's memory.")
    parser.add_argument("--no-mdns", dest="mdns_enabled", action="store_const", const=False,
                        default=None, help="Do not browse for routers over mDNS.")
    parser.add_argument("--mdns-interfaces", dest="mdns_interfaces", default=None,
                        help="Comma list of addresses mDNS uses (FLEET_MDNS_INTERFACES).")
    add_common_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.router_url:
        args.router_urls = ",".join(args.router_url)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"herd-node: {exc}", file=sys.stderr)
        return 2
    from services.node.agent import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
