"""The suppression list: addresses Chorus must never message again, kept only as hashes.

Entries come from erasure (GDPR), hard bounces and spam reports. Dispatch checks a
whole batch with one query (``suppressed_addresses``) and the sender checks again
right before calling the provider, so an address suppressed in between is never
messaged. Addresses are hashed with ``Suppression.address_hash_for``, the same
function for writing and reading, so a re-imported customer with an erased
address is still recognised.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction

from channels.models import Suppression
from config.db import in_values


def _hashes_by_address(addresses: Iterable[str | None]) -> dict[str, str]:
    """Non-blank addresses -> their hash; blanks (no address on that channel) are dropped."""
    return {address: Suppression.address_hash_for(address) for address in addresses if address and address.strip()}


@transaction.atomic
def suppression_add(*, addresses: list[str], reason: str) -> int:
    """Put ``addresses`` on the suppression list; returns how many were not on it before.

    Addresses already suppressed keep their original entry (and reason); blank
    addresses are ignored. An unknown ``reason`` raises ``ValidationError``.
    """
    if reason not in Suppression.Reason.values:
        raise ValidationError(
            f"{reason!r} is not a suppression reason; use one of {', '.join(Suppression.Reason.values)}."
        )
    wanted = set(_hashes_by_address(addresses).values())
    if not wanted:
        return 0
    existing = set(Suppression.objects.filter(address_hash__in=wanted).values_list("address_hash", flat=True))
    new = wanted - existing
    # ignore_conflicts: a concurrent writer adding the same address is not an error.
    Suppression.objects.bulk_create(
        [Suppression(address_hash=h, reason=reason) for h in sorted(new)], ignore_conflicts=True
    )
    return len(new)


def suppressed_hashes(addresses: Iterable[str | None]) -> set[str]:
    """The hashes among ``addresses`` that are on the suppression list (one query)."""
    hashes = set(_hashes_by_address(addresses).values())
    if not hashes:
        return set()
    matching = Suppression.objects.filter(address_hash__in=in_values(hashes, "text"))
    return set(matching.values_list("address_hash", flat=True))


def suppressed_addresses(addresses: Iterable[str | None]) -> set[str]:
    """The addresses among ``addresses`` that are suppressed, as given (one query for the batch)."""
    by_address = _hashes_by_address(addresses)
    suppressed = suppressed_hashes(by_address)
    return {address for address, h in by_address.items() if h in suppressed}


def is_suppressed(address: str | None) -> bool:
    """Whether one address is on the suppression list; a blank address is not."""
    return bool(suppressed_hashes([address]))
