"""authgate: an identity and API gateway for AI services.

The public face for library users is small: the decision engine and its verdict, the
settings loader, and the error tree. Everything else is reachable by module path.
"""

from authgate.config import Settings, load_settings
from authgate.decide import Decision, DecisionEngine, Outcome
from authgate.errors import AuthgateError, Reason

__all__ = [
    "AuthgateError",
    "Decision",
    "DecisionEngine",
    "Outcome",
    "Reason",
    "Settings",
    "load_settings",
]
