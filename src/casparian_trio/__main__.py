"""``python -m casparian_trio sentinel|worker|...``"""

from __future__ import annotations

import sys

from casparian_trio.cli import main

sys.exit(main())
