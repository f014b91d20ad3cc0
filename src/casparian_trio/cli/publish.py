"""``publish``: check a plugin, then record it in the database or DEPLOY it to a Sentinel.

``build_deploy`` validates without running the plugin. Without ``--sentinel``
the manifest is written straight into the database (``publish.record_deploy``);
with it, a DEALER sends DEPLOY and waits for the Sentinel's CONCLUDE or ERR.
Both paths return the same result dict, so the output is the same.
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from casparian_trio.cli._common import CONNECT_ENV, command
from casparian_trio.cli._db import session
from casparian_trio.config import check_address
from casparian_trio.errors import ConfigError, PluginError, TransportTimeout
from casparian_trio.protocol import Conclude, Deploy, Err, decode, encode
from casparian_trio.protocol.limits import DEFAULT_MAX_MESSAGE_BYTES
from casparian_trio.publish import build_deploy, record_deploy
from casparian_trio.store import Store, reports
from casparian_trio.transport.keys import ClientKeys, client_keys, keys_dir

# A Sentinel answers a DEPLOY in milliseconds; 10 s means it is not there (zmq
# queues the message silently while no peer is connected) or it is stuck.
DEPLOY_TIMEOUT = 10.0
ARTIFACT_SHOWN = 12  # hex digits of the artifact hash shown to people


def add_commands(sub: Any) -> None:
    """``publish``."""
    p = command(sub, "publish", cmd_publish, "check a plugin and make it the ACTIVE version")
    p.add_argument("plugin", metavar="PLUGIN.py", help="the plugin file (a Handler class)")
    p.add_argument(
        "--lockfile",
        metavar="PATH",
        help="uv.lock, or the folder of its uv project (default: the system env)",
    )
    p.add_argument("--version", help="version to publish (default MANIFEST['version'], else 0)")
    p.add_argument(
        "--no-reprocess",
        dest="reprocess",
        action="store_false",
        help=(
            "a new version does not queue the files it matches again "
            "(default: they are reprocessed and their rows replaced)"
        ),
    )
    p.add_argument(
        "--sentinel",
        metavar="ADDR",
        default=os.environ.get(CONNECT_ENV) or None,
        help=(
            f"DEPLOY to the running sentinel at ADDR (env ${CONNECT_ENV}; "
            "default: write the database directly)"
        ),
    )
    p.add_argument(
        "--keys",
        metavar="DIR",
        default=None,
        help=(
            "keys folder with NAME.key_secret and sentinel.key "
            "(env $CASPARIAN_KEYS; default none: no CURVE)"
        ),
    )
    p.add_argument(
        "--key", metavar="NAME", help="the admin key to DEPLOY with (with --keys; default none)"
    )


async def cmd_publish(args: argparse.Namespace) -> int:
    deploy = build_deploy(
        Path(args.plugin),
        lockfile=Path(args.lockfile) if args.lockfile else None,
        version=args.version,
        reprocess=args.reprocess,
    )
    if args.sentinel:
        result = await deploy_via_sentinel(args.sentinel, deploy, keys=_client_keys(args))
        previous = None
    else:
        result, previous = await _record_locally(args, deploy)
    print(describe_result(result, previous))
    if result.get("created"):
        print(reprocess_text(result))
    pattern = deploy.manifest.get("pattern")
    if result.get("created") and pattern:
        print(f"files matching {pattern!r} will be routed to {result['plugin_name']} on `scan`")
    return 0


def _client_keys(args: argparse.Namespace) -> ClientKeys | None:
    directory = keys_dir(args.keys)
    if directory is None and args.key is None:
        return None
    if directory is None or args.key is None:
        raise ConfigError("--keys DIR (or $CASPARIAN_KEYS) and --key NAME go together")
    return client_keys(directory, args.key)


async def _record_locally(
    args: argparse.Namespace, deploy: Deploy
) -> tuple[dict[str, Any], str | None]:
    """(record_deploy's result, the version it superseded) using the database directly."""
    with session(args) as db:
        before = db.run_sync(
            partial(reports.active_manifest, plugin_name=deploy.plugin_name), readonly=True
        )
        result = await record_deploy(Store(db), deploy, now=time.time())
    previous = before["version"] if before else None
    if before and before["artifact_hash"] == result["artifact_hash"]:
        previous = None
    return result, previous


def describe_result(result: dict[str, Any], previous: str | None = None) -> str:
    """The one line ``publish`` prints for a ``record_deploy`` result."""
    name, version = result["plugin_name"], result["version"]
    artifact = f"{str(result['artifact_hash'])[:ARTIFACT_SHOWN]}…"
    if not result.get("created"):
        return f"{name} {version} is already published (artifact {artifact}): nothing to do"
    env = result.get("env_hash") or "system"
    env = env if env == "system" else f"{env[:ARTIFACT_SHOWN]}…"
    line = f"published {name} {version} (artifact {artifact}, env {env})"
    return line + (f", superseding {previous}" if previous else "")


def reprocess_text(result: dict[str, Any]) -> str:
    """What a new version did to the files already scanned (``reprocess`` / ``requeued``)."""
    if not result.get("reprocess", True):
        return (
            "not reprocessing (--no-reprocess): files parsed by earlier versions keep their "
            f"rows; `casparian-trio reprocess --plugin {result['plugin_name']}` does it later"
        )
    jobs = int(result.get("requeued") or 0)
    job_word = "job" if jobs == 1 else "jobs"
    return f"reprocessing: queued {jobs} {job_word} for the files it matches"


# --- via a running Sentinel -------------------------------------------------------------


async def deploy_via_sentinel(
    address: str, deploy: Deploy, *, keys: ClientKeys | None = None
) -> dict[str, Any]:
    """Send DEPLOY to the Sentinel at ``address``; return its CONCLUDE metrics.

    ``keys``: an admin key pair and the Sentinel's public key (a keyed Sentinel).

    Raises:
        ConfigError: ``address`` is not a tcp:// or ipc:// address.
        TransportTimeout: no answer within DEPLOY_TIMEOUT seconds.
        PluginError: the Sentinel refused the plugin (its ERR message).
    """
    check_address(address, "--sentinel")
    try:
        with trio.fail_after(DEPLOY_TIMEOUT):
            return await request_deploy(address, deploy, keys=keys)
    except trio.TooSlowError:
        hint = (
            "is it running, and is your key authorized as an admin (`keys add NAME --role admin`)?"
            if keys is not None
            else f"is `casparian-trio sentinel --bind {address}` running (with --keys, pass "
            "--keys and --key)?"
        )
        raise TransportTimeout(
            f"no answer from sentinel at {address} in {DEPLOY_TIMEOUT:g} s; {hint}"
        ) from None


async def request_deploy(
    address: str, deploy: Deploy, *, keys: ClientKeys | None = None
) -> dict[str, Any]:
    """DEPLOY over a fresh DEALER and wait (no deadline: the caller owns it) for the answer."""
    from casparian_trio.transport import open_dealer

    identity = f"publish-{os.getpid()}-{time.monotonic_ns()}".encode()
    # The answers are small; the bound keeps a fake Sentinel from flooding us.
    with open_dealer(
        address, identity=identity, keys=keys, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES
    ) as channel:
        await channel.send(encode(deploy))
        while True:
            payload = decode(await channel.receive()).payload
            if isinstance(payload, Conclude):
                return dict(payload.metrics)
            if isinstance(payload, Err):
                raise PluginError(
                    f"sentinel at {address} refused {deploy.plugin_name}: {payload.message}"
                )
