"""The dispatcher's wake-up: one event, re-armed before each dispatch round."""

from __future__ import annotations

import attrs
import trio


@attrs.define(eq=False)
class Waker:
    _event: trio.Event = attrs.field(factory=trio.Event)

    def arm(self) -> trio.Event:
        """A fresh event for the next sleep; armed before the round, so no wake-up is lost."""
        self._event = trio.Event()
        return self._event

    def wake(self) -> None:
        self._event.set()
