"""Bit-exact NumPy model of every sparqforge block: the single source of truth for numerics.

Imports only NumPy. Integers are ``int64`` inside; functions are vectorised.
"""

from .numerics import *  # noqa: F401,F403
from .numerics import __all__ as _numerics_all
from .requant import *  # noqa: F401,F403
from .requant import __all__ as _requant_all
from .mac_array import *  # noqa: F401,F403
from .mac_array import __all__ as _mac_array_all

from .sparse_mac_array import *  # noqa: F401,F403
from .sparse_mac_array import __all__ as _sparse_mac_array_all

from .packed_multiplier import *  # noqa: F401,F403
from .packed_multiplier import __all__ as _packed_multiplier_all

from .power import *  # noqa: F401,F403
from .power import __all__ as _power_all

from .network import *  # noqa: F401,F403
from .network import __all__ as _network_all

from .graph_ops import *  # noqa: F401,F403
from .graph_ops import __all__ as _graph_ops_all

__all__ = [*_numerics_all, *_requant_all, *_mac_array_all, *_sparse_mac_array_all,
           *_packed_multiplier_all, *_power_all, *_network_all, *_graph_ops_all]
