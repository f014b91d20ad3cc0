"""``keys init|add|revoke``: the CURVE keys folder of a keyed deployment (``transport/keys.py``).

``DIR`` is ``--dir`` (``init``: the positional), else ``$CASPARIAN_KEYS``.
Revoking takes effect for the next connection: the Sentinel reads the
``authorized`` folders at every handshake, so no restart is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from casparian_trio.cli._common import EXIT_OK
from casparian_trio.errors import ConfigError
from casparian_trio.transport.keys import KEYS_ENV, Role, add_key, init_keys, keys_dir, revoke_key

_DIR_HELP = f"the keys folder (env ${KEYS_ENV}; default none: required)"


def add_commands(sub: Any) -> None:
    """``keys`` with ``init``, ``add`` and ``revoke``."""
    p = sub.add_parser("keys", help="manage CURVE keys: who may connect as a worker or deploy")
    actions = p.add_subparsers(
        dest="keys_action", metavar="ACTION", required=True, help="init, add or revoke"
    )

    a = actions.add_parser("init", help="create the sentinel's key pair and the authorized folders")
    a.add_argument("dir", metavar="DIR", nargs="?", default=None, help=_DIR_HELP)
    a.set_defaults(handler=cmd_keys_init)

    a = actions.add_parser("add", help="create a key pair and authorize it for a role")
    a.add_argument("name", metavar="NAME", help="the key's name (a worker's identity)")
    a.add_argument(
        "--role", choices=[r.value for r in Role], required=True, help="worker or admin (required)"
    )
    a.add_argument("--dir", default=None, help=_DIR_HELP)
    a.set_defaults(handler=cmd_keys_add)

    a = actions.add_parser("revoke", help="remove a key's authorization (new connections)")
    a.add_argument("name", metavar="NAME", help="the key to revoke")
    a.add_argument("--dir", default=None, help=_DIR_HELP)
    a.set_defaults(handler=cmd_keys_revoke)


def _directory(value: str | None) -> Path:
    chosen = keys_dir(value)
    if chosen is None:
        raise ConfigError(f"name the keys folder: --dir DIR or ${KEYS_ENV}")
    return chosen


def cmd_keys_init(args: argparse.Namespace) -> int:
    directory = _directory(args.dir)
    public = init_keys(directory)
    print(f"sentinel key pair in {directory}; copy {public} to every worker and admin")
    print(f"next: casparian-trio keys add NAME --role worker --dir {directory}")
    return EXIT_OK


def cmd_keys_add(args: argparse.Namespace) -> int:
    directory = _directory(args.dir)
    secret = add_key(directory, args.name, Role(args.role))
    print(
        f"{args.role} key {args.name!r} authorized; its secret is {secret} (give it only to them)"
    )
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    directory = _directory(args.dir)
    roles = revoke_key(directory, args.name)
    listed = ", ".join(r.value for r in roles)
    print(f"key {args.name!r} revoked ({listed}); new connections with it are refused")
    return EXIT_OK
