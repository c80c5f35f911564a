"""Writes to the customer record, one module per concern.

Import from the submodule (``customers.services.consent``); the names below are
re-exported for the callers that predate the split.
"""

from customers.services.consent import consent_current, consent_record

__all__ = ["consent_current", "consent_record"]
