"""Event contracts: the envelope, the catalogue of events and their topics.

Services import events from here and nowhere else, so a contract changes in one place.
"""

from screwops_contracts.envelope import ID_NAMESPACE, Event, Payload
from screwops_contracts.events import *  # noqa: F403
from screwops_contracts.events import __all__ as _events_all

__all__ = ["ID_NAMESPACE", "Event", "Payload", *_events_all]
