"""``lstack serve <artifact>``: the policy as a websocket server (openpi protocol; :mod:`latentstack.serving`).

Torch-free: the server module (and the model) load when the command runs.
"""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import LazyCommand, add_device_arg, add_threads_arg

__all__ = ["add_parser"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve a policy artifact over websockets (openpi protocol, batched clients)")
    p.add_argument("artifact", help="policy artifact dir (e.g. policies/vla_metaworld_mt6), random:<dir> or quant:<dir>")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 = every "
                   "interface: the protocol has no authentication, put it behind a TLS proxy / VPN)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port, printed)")
    add_device_arg(p)
    p.add_argument("--batch-max", type=int, default=16, help="most observations stacked into one forward pass "
                   "(1: no batching)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="how long the first queued request waits for others to join its batch")
    p.add_argument("--seed", type=int, default=None,
                   help="noise seed of a new connection until it sends reset (default: the policy config's seed)")
    add_threads_arg(p)
    p.set_defaults(func=LazyCommand("latentstack.serving.server:cmd_serve"))
    return p
