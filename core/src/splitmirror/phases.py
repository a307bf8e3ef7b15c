"""The eleven session phases, in the order DESIGN.md section 2 (and the patent) fixes.

The order is part of the contract: extent mapping before the split (claim 1) and before quiescing
(claim 7), discovery and prepare after quiescing, unquiesce after the map check (claim 10), files
backed up from the split mirror afterwards, in logical order (claim 12).
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
    """The two quiesce modes (DESIGN.md section 4)."""

    FREEZE = "freeze"
    HOT_BACKUP = "hot-backup"
