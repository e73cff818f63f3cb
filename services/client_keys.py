"""`herd keys create|list|revoke|open|close`: manage client keys and who may run inference on
a router, with the admin token from the environment (FLEET_ADMIN_TOKEN), never from the
command line."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

import httpx

from shared.settings import Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--router-url", dest="keys_router_url", default="http://127.0.0.1:11435",
                        help="The router to manage (default http://127.0.0.1:11435). The admin "
                             "token is read from FLEET_ADMIN_TOKEN.")
    parser.add_argument("--json", action="store_true", help="Print the router's JSON answer.")
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="Create a key for an app; its secret is shown "
                                               "once.")
    create.add_argument("app", help="The app's name (letters, digits, '.', '_', '-').")
    create.add_argument("--requests-per-minute", type=int, default=0,
                        help="Requests per minute over the whole fleet (0: no limit).")
    create.add_argument("--tokens-per-minute", type=int, default=0,
                        help="Prompt + completion tokens per minute (0: no limit).")
    actions.add_parser("list", help="List the apps with keys, their limits and last use.")
    revoke = actions.add_parser("revoke", help="Revoke an app's key on every replica; "
                                               "inference stays closed (client_auth keys).")
    revoke.add_argument("app")
    actions.add_parser("open", help="Let requests without a credential run inference again "
                                    "(client_auth open); refused while any key exists.")
    actions.add_parser("close", help="Make inference need a client key, the client token or "
                                     "the admin token (client_auth keys), with or without keys.")


# What each client_auth value means, as `list`, `open` and `close` say it.
_MODES = {
    "open": "open: requests without a credential are served (no key exists)",
    "keys": "keys: inference needs a client key, the client token or the admin token",
}


def _when(ts: Any) -> str:
    if not ts:
        return "never"
    return datetime.datetime.fromtimestamp(float(ts), datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _limit(value: Any) -> str:
    return str(value) if value else "-"


def run(args: argparse.Namespace) -> int:
    token = Settings.load().admin_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    router = args.keys_router_url.rstrip("/")
    base = router + "/dashboard/api/keys"
    action = args.keys_action
    try:
        with httpx.Client(headers=headers, timeout=10.0) as client:
            if action == "create":
                response = client.post(base, json={
                    "app": args.app, "requests_per_minute": args.requests_per_minute,
                    "tokens_per_minute": args.tokens_per_minute})
            elif action == "list":
                response = client.get(base)
            elif action in ("open", "close"):
                mode = "open" if action == "open" else "keys"
                response = client.post(router + "/dashboard/api/settings",
                                       json={"client_auth": mode})
            else:
                response = client.delete(f"{base}/{args.app}")
    except httpx.HTTPError as exc:
        print(f"herd keys: {base}: {exc}", file=sys.stderr)
        return 1
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:300]}
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else body
        print(f"herd keys: {response.status_code}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
    elif action == "create":
        print(f"key for {body['app']} (shown only now; give it to the app as its API key):")
        print(body["key"])
        print("client_auth " + _MODES["keys"])
    elif action == "list":
        mode = str(body.get("client_auth", "open"))
        line = "client_auth " + _MODES.get(mode, mode)
        if mode == "open" and not body.get("inference_open", True):
            line += " (but FLEET_CLIENT_TOKEN is set: it or a key is needed)"
        print(line)
        if body["keys"]:
            print(f"{'app':<24} {'req/min':>8} {'tok/min':>9}  {'created':<20}  last used")
        for key in body["keys"]:
            print(f"{key['app']:<24} {_limit(key['requests_per_minute']):>8} "
                  f"{_limit(key['tokens_per_minute']):>9}  {_when(key['created']):<20}  "
                  f"{_when(key['last_used'])}")
    elif action in ("open", "close"):
        print("client_auth " + _MODES["open" if action == "open" else "keys"])
    else:
        print(f"revoked the key of {body['app']}; inference stays closed "
              "(client_auth keys: herd keys open reopens it once no key is left)")
    return 0
