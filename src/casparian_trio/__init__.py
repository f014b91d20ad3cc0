"""casparian_trio: directories of messy files into typed Parquet tables.

A Sentinel owns a SQLite job queue and dispatches jobs over ZeroMQ to Workers,
which run parser plugins in isolated guest processes and stream Arrow into Parquet.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
