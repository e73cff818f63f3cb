"""`herd sim`: the flags of the simulated Ollama server, and running it."""

from __future__ import annotations

import argparse
import sys

from services.sim.catalogue import parse_models
from services.sim.config import DEFAULT_MODELS, SimConfig
from services.sim.faults import parse_fault_flag
from services.sim.text import parse_keep_alive
from shared.endpoints import parse_version

__all__ = ["add_arguments", "config_from_args", "run"]

_D = SimConfig()


def _range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        return (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument_group("listening")
    p.add_argument("--host", default=_D.host, help=f"Address to listen on (default {_D.host}).")
    p.add_argument("--port", type=int, default=_D.port,
                   help=f"Port to listen on; 0 picks a free one (default {_D.port}).")
    p.add_argument("--control-port", type=int, default=0,
                   help="Also serve the API and /sim/* on this port; it keeps answering while "
                        "the 'refuse' fault closes the main port (default: none).")
    p.add_argument("--node-name", default=_D.node_name,
                   help=f"Name shown in /sim/stats (default {_D.node_name!r}).")
    m = parser.add_argument_group("models and memory")
    m.add_argument("--models", default=DEFAULT_MODELS,
                   help="Comma list of installed models. Known names get real sizes; others "
                        "are sized from their ':Nb' tag; no tag means ':latest' "
                        f"(default {DEFAULT_MODELS}).")
    m.add_argument("--memory-gb", type=float, default=_D.memory_gb,
                   help="Memory (VRAM) for loaded models, in GB; weights plus KV cache of "
                        f"num_ctx x num_parallel tokens must fit (default {_D.memory_gb}).")
    m.add_argument("--max-loaded-models", type=int, default=_D.max_loaded_models,
                   help="At most this many models loaded at once; least recently used "
                        f"idle models are evicted (default {_D.max_loaded_models}).")
    m.add_argument("--cpu-cores", type=int, default=_D.cpu_cores,
                   help="CPU cores the modelled machine has; its CPU use is one core per "
                        "running request or loading model, reported on /sim/node "
                        f"(default {_D.cpu_cores}).")
    m.add_argument("--disk-gb", type=float, default=_D.disk_gb,
                   help="Disk size of the modelled machine in GB; the installed models use "
                        f"it, as /sim/node reports (default {_D.disk_gb:g}).")
    m.add_argument("--num-parallel", type=int, default=_D.num_parallel,
                   help="Requests served at once per model (slots); more wait in the node's "
                        f"queue, first come first served (default {_D.num_parallel}).")
    m.add_argument("--default-num-ctx", type=int, default=_D.default_num_ctx,
                   help="Context length when a request sets no options.num_ctx; a request "
                        "with another num_ctx reloads the model "
                        f"(default {_D.default_num_ctx}).")
    m.add_argument("--keep-alive", default="5m",
                   help="How long an idle model stays loaded when the request gives no "
                        "keep_alive: seconds or a duration like 30s, 5m; negative = forever, "
                        "0 = unload when idle (default 5m).")
    m.add_argument("--load-seconds-per-gb", type=float, default=_D.load_seconds_per_gb,
                   help="Loading time per GB of weights "
                        f"(default {_D.load_seconds_per_gb}).")
    m.add_argument("--load-base-seconds", type=float, default=_D.load_base_seconds,
                   help=f"Fixed start-up time of every load (default {_D.load_base_seconds}).")
    m.add_argument("--pull-seconds-per-gb", type=float, default=_D.pull_seconds_per_gb,
                   help=f"Download time per GB for /api/pull (default {_D.pull_seconds_per_gb}).")
    s = parser.add_argument_group("speed and output")
    s.add_argument("--prompt-tps", type=float, default=_D.prompt_tps,
                   help="Prompt evaluation speed, tokens/s per request; 0 = instant "
                        f"(default {_D.prompt_tps}).")
    s.add_argument("--tokens-per-s", type=float, default=_D.tokens_per_s,
                   help="Generation speed, tokens/s per request when alone on the node; "
                        f"0 = as fast as possible (default {_D.tokens_per_s}).")
    s.add_argument("--contention", type=float, default=_D.contention,
                   help="Slowdown per extra request running on the node: each runs at "
                        "speed / (1 + contention x (running - 1)) "
                        f"(default {_D.contention}).")
    s.add_argument("--response-tokens", type=_range, default=_D.response_tokens,
                   metavar="MIN-MAX",
                   help="Reply length when the request sets no num_predict/max_tokens, "
                        "chosen deterministically per prompt (default 24-160).")
    s.add_argument("--seed", type=int, default=_D.seed,
                   help="Seed of the generated text, embeddings and fault probabilities; "
                        "options.seed / seed in a request wins (default 0).")
    s.add_argument("--ollama-version", dest="version", default=_D.version,
                   help="The Ollama version to behave as: /api/version reports it, and "
                        "the endpoints it did not have yet (shared/endpoints.py) answer "
                        f"'404 page not found' (default {_D.version}, which has them all).")
    o = parser.add_argument_group("faults and observation")
    o.add_argument("--fault", default="none",
                   help="Fault at start, MODE[:key=value,...], e.g. 'slow:factor=5' or "
                        "'error500:probability=0.5'. Modes: none, refuse, error500, hang, "
                        "slow, die_mid_stream; switch later with POST /sim/fault "
                        "(default none).")
    o.add_argument("--keep-bodies", type=int, default=_D.keep_bodies,
                   help="How many recent request bodies /sim/stats shows "
                        f"(default {_D.keep_bodies}).")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    models = tuple(parse_models(args.models))
    if not models:
        raise ValueError("--models lists no model")
    if args.cpu_cores < 1:
        raise ValueError("--cpu-cores must be at least 1")
    if args.disk_gb <= 0:
        raise ValueError("--disk-gb must be positive")
    try:
        keep_alive = parse_keep_alive(args.keep_alive, 300.0)
    except ValueError as exc:
        raise ValueError(f"--keep-alive: {exc}") from exc
    try:
        parse_version(args.version)
    except ValueError as exc:
        raise ValueError(f"--ollama-version: {exc}") from exc
    fault, fault_params = parse_fault_flag(args.fault)
    return SimConfig(
        host=args.host, port=args.port, control_port=args.control_port,
        node_name=args.node_name, models=models, memory_gb=args.memory_gb,
        max_loaded_models=args.max_loaded_models, num_parallel=args.num_parallel,
        cpu_cores=args.cpu_cores, disk_gb=args.disk_gb,
        default_num_ctx=args.default_num_ctx, keep_alive=keep_alive,
        load_seconds_per_gb=args.load_seconds_per_gb, load_base_seconds=args.load_base_seconds,
        prompt_tps=args.prompt_tps, tokens_per_s=args.tokens_per_s,
        contention=args.contention, response_tokens=args.response_tokens,
        pull_seconds_per_gb=args.pull_seconds_per_gb, seed=args.seed, version=args.version,
        keep_bodies=args.keep_bodies, fault=fault, fault_params=fault_params,
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"herd sim: {exc}", file=sys.stderr)
        return 2
    # Imported here: `herd --help` builds every sub-command's parser, and should not pay
    # for aiohttp.
    from services.sim.server import serve

    return serve(config)
