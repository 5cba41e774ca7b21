"""Every board sparqforge builds for, by command-line name."""

__all__ = ["BOARDS", "get_board"]

from ..errors import ConfigError
from .arty_a7 import ARTY_A7_35, ARTY_A7_100
from .basys3 import BASYS3
from .icebreaker import ICEBREAKER
from .nexys4ddr import NEXYS4DDR
from .orangecrab import ORANGECRAB_25F, ORANGECRAB_85F
from .ulx3s import ULX3S

BOARDS = {board.name: board for board in (ARTY_A7_35, ARTY_A7_100, NEXYS4DDR, BASYS3, ULX3S,
                                          ORANGECRAB_25F, ORANGECRAB_85F, ICEBREAKER)}


def get_board(name):
    """The :class:`~sparqforge.boards.board.Board` called ``name`` (``_`` and ``-`` are
    the same: ``ulx3s_85f`` is ``ulx3s-85f``).

    Raises
    ------
    ConfigError
        For an unknown name; the message lists the known ones.
    """
    if isinstance(name, str) and name.replace("_", "-").lower() in BOARDS:
        return BOARDS[name.replace("_", "-").lower()]
    if not isinstance(name, str) and hasattr(name, "platform"):
        return name
    raise ConfigError(f"Unknown board {name!r}; choose one of {', '.join(BOARDS)}")
