"""The eleven session phases, in the order the design fixes (docs/architecture.md).

The order is part of the contract: extent mapping before the split and before quiescing,
discovery and prepare after quiescing, unquiesce after the map check, files backed up from the
split mirror afterwards, in logical order.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    INIT = 1
    MAP = 2
    SYNC = 3
    QUIESCE = 4
    DISCOVER = 5
    PREPARE = 6
    SPLIT = 7
    CHECK = 8
    UNQUIESCE = 9
    BACKUP = 10
    CLEANUP = 11

    @property
    def in_window(self) -> bool:
        """True for the phases during which the database is quiesced."""
        return Phase.QUIESCE.value <= self.value <= Phase.UNQUIESCE.value


PHASE_ORDER: tuple[Phase, ...] = tuple(Phase)


class Mode(enum.Enum):
    """The two quiesce modes (docs/architecture.md, "The session")."""

    FREEZE = "freeze"
    HOT_BACKUP = "hot-backup"
