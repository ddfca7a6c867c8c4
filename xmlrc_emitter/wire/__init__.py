"""Deprecated alias of `xmlrc.wire` (the wire format moved to the core package).

``import xmlrc_emitter.wire`` and its submodules keep working for one
release, with a `DeprecationWarning`; import `xmlrc.wire` instead.
"""

import importlib
import sys
import warnings

import xmlrc.wire
from xmlrc.wire import *  # noqa: F403
from xmlrc.wire import __all__ as __all__

warnings.warn(
    "xmlrc_emitter.wire is deprecated: import xmlrc.wire", DeprecationWarning, stacklevel=2
)

_SUBMODULES = [
    "apijson",
    "coerce",
    "datagram",
    "errors",
    "ircline",
    "jsonfeed",
    "model",
    "mwxml",
    "rcxml",
    "safexml",
    "signing",
]
for _name in _SUBMODULES:
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"xmlrc.wire.{_name}")
del xmlrc
