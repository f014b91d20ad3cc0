"""``python -m casparian_trio sentinel|worker|...``

Stop signals are recorded from the first statement on (see ``_signals``), so a
SIGTERM while ``cli`` still imports trio, zmq and pyarrow ends in exit 0.
"""

from __future__ import annotations

from casparian_trio._arrow_pool import prefer_jemalloc_default
from casparian_trio._signals import install_early

install_early()
prefer_jemalloc_default()  # before pyarrow loads: Arrow reads its C++ default pool once

# Only now the heavy imports: a signal during them is recorded, not fatal.
import sys  # noqa: E402

from casparian_trio.cli import main  # noqa: E402

sys.exit(main())
