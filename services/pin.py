"""`herd pin MODEL [--copies N] [--node ID]` / `herd unpin MODEL` / `herd pin --list`: keep
models loaded on the fleet, with the admin token from the environment (FLEET_ADMIN_TOKEN)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from shared.settings import Settings

__all__ = ["add_arguments", "add_unpin_arguments", "run", "run_unpin"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--router-url", dest="pin_router_url", default="http://127.0.0.1:11435",
                        help="The router (default http://127.0.0.1:11435). The admin token is "
                             "read from FLEET_ADMIN_TOKEN.")
    parser.add_argument("--json", action="store_true", help="Print the router's JSON answer.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="The model to keep loaded (omit with --list).")
    parser.add_argument("--copies", type=int, default=None,
                        help="Loaded copies to keep, each on its own node (default 1, or one "
                             "per --node).")
    parser.add_argument("--node", dest="nodes", action="append", default=None, metavar="ID",
                        help="Keep the copies only on this node (repeat for several).")
    parser.add_argument("--list", action="store_true", help="List the pins and their state.")
    _common(parser)


def add_unpin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="The model whose copies go back to the nodes' keep_alive.")
    _common(parser)


def _call(args: argparse.Namespace, method: str, body: dict[str, Any] | None = None,
          params: dict[str, str] | None = None) -> tuple[int, Any]:
    token = Settings.load().admin_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = args.pin_router_url.rstrip("/") + "/fleet/pins"
    with httpx.Client(headers=headers, timeout=10.0) as client:
        response = client.request(method, url, json=body, params=params)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {"error": response.text[:300]}


def _line(pin: dict[str, Any]) -> str:
    where = f" on {', '.join(pin['nodes'])}" if pin.get("nodes") else ""
    loaded = ", ".join(pin.get("loaded_on") or []) or "-"
    text = f"{pin['model']:<28} {pin['copies']:>2} cop{'y' if pin['copies'] == 1 else 'ies'}" \
           f"{where}  {pin['state']:<9}  loaded on: {loaded}"
    return text + (f"  ({pin['reason']})" if pin.get("reason") else "")


def _finish(args: argparse.Namespace, status: int, body: Any, what: str) -> int:
    if status >= 400:
        error = body.get("error") if isinstance(body, dict) else body
        print(f"herd {what}: {status}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    if what == "pin" and args.list:
        if not body["pins"]:
            print("no pinned models")
        for pin in body["pins"]:
            print(_line(pin))
    elif what == "pin":
        print(f"pinned {body['model']}: {body['copies']} cop"
              f"{'y' if body['copies'] == 1 else 'ies'}"
              f"{' on ' + ', '.join(body['nodes']) if body['nodes'] else ''}; the leader "
              "loads missing copies within a heartbeat (herd pin --list shows the state)")
    else:
        print(f"unpinned {body['model']}: its copies go back to the nodes' keep_alive")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.list:
            status, body = _call(args, "GET")
        elif not args.model:
            print("herd pin: name a model, or --list", file=sys.stderr)
            return 2
        else:
            request: dict[str, Any] = {"model": args.model}
            if args.copies is not None:
                request["copies"] = args.copies
            if args.nodes:
                request["nodes"] = args.nodes
            status, body = _call(args, "POST", request)
    except httpx.HTTPError as exc:
        print(f"herd pin: {args.pin_router_url}: {exc}", file=sys.stderr)
        return 1
    return _finish(args, status, body, "pin")


def run_unpin(args: argparse.Namespace) -> int:
    try:
        status, body = _call(args, "DELETE", params={"model": args.model})
    except httpx.HTTPError as exc:
        print(f"herd unpin: {args.pin_router_url}: {exc}", file=sys.stderr)
        return 1
    return _finish(args, status, body, "unpin")
