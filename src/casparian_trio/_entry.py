"""The ``casparian-trio`` console script: stop signals recorded before the heavy imports.

``cli`` imports trio, pyzmq and pyarrow (a few hundred ms); a SIGTERM in that
window must still end in exit 0, so the handlers go in first (see ``_signals``).
"""

from __future__ import annotations

from casparian_trio._arrow_pool import prefer_jemalloc_default
from casparian_trio._signals import install_early


def main() -> int:
    """Install the early signal handlers, then run the command line (``cli.main``)."""
    install_early()
    prefer_jemalloc_default()  # before pyarrow loads: Arrow reads its C++ default pool once
    from casparian_trio.cli import main as cli_main

    return cli_main()
