"""Fixtures for the deterministic Sentinel/Worker tests: MockClock, memory transport, inline SQLite.

Virtual time jumps while a thread or a real socket is pending (trio#456), so
these tests forbid both: the ``no_threads_or_sockets`` guard makes any use fail.
pytest-trio only takes the clock from the test's own arguments, so every test
asks for ``autojump_clock`` itself.
"""

from __future__ import annotations

from services_harness import cluster as cluster
from services_harness import no_threads_or_sockets as no_threads_or_sockets
from services_harness import store as store
