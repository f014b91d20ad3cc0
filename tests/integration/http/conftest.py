"""The dashboard served for real (hypercorn on Trio, a real SQLite file), fetched over TCP.

The seeded queue is the unit tests' (``tests/unit/http/http_seed.py``), so both
suites check the same known numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "http"))
