"""Merging two customer records that turn out to be one person.

Identity resolution never merges on its own (a conflict is reported); a person
with the right to change customers merges explicitly, from the UI or the API.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from campaigns.models import Enrollment
from channels.models import Message
from customers.identity import IDENTITY_FIELDS
from customers.models import Activity, Consent, Customer
from customers.services.activities import customer_stats_refresh
from customers.services.customers import PROFILE_FIELDS
from customers.services.personas import personas_assign
from segments.models import SegmentMember

MERGED_KIND = "customer.merged"


def _move(queryset, *, survivor_id: int, clash: Exists) -> tuple[int, int]:
    """Re-point the duplicate's rows at the survivor; rows that would clash with one of the
    survivor's (``clash``) are deleted instead. Returns (moved, dropped)."""
    _, per_model = queryset.filter(clash).delete()
    # delete() counts cascaded rows too; what we dropped is the rows of this model.
    dropped = per_model.get(queryset.model._meta.label, 0)
    moved = queryset.update(customer_id=survivor_id)
    return moved, dropped


@transaction.atomic
def customers_merge(*, survivor: Customer, duplicate: Customer, by) -> Customer:
    """Fold ``duplicate`` into ``survivor`` and delete it; returns the survivor, reloaded.

    Moves the timeline, the consent ledger (rows stay as they were, so the current
    state per channel is the latest across both), messages, enrollments and static
    segment memberships. Where the survivor already has a message for the same
    (step, run) or an enrollment in the same run, the survivor's row is kept and the
    duplicate's deleted. The survivor's empty identity keys and profile fields are
    filled from the duplicate; attributes are combined, the survivor winning on a
    shared key. Stats and persona are recomputed, and a ``customer.merged`` activity
    on the survivor records who merged what, with the duplicate's identities and
    the counts moved and dropped. Both rows are locked for the whole merge.

    Raises ``ValidationError`` for a customer merged with itself or with an erased
    customer.
    """
    if survivor.pk == duplicate.pk:
        raise ValidationError("A customer cannot be merged with itself.")
    # Locked in primary-key order, so two merges of the same pair cannot deadlock.
    locked = {c.pk: c for c in Customer.objects.select_for_update().filter(pk__in=[survivor.pk, duplicate.pk])}
    for customer in (survivor, duplicate):
        if customer.pk not in locked:
            raise ValidationError(f"Customer #{customer.pk} does not exist (it may have been merged already).")
    survivor, duplicate = locked[survivor.pk], locked[duplicate.pk]
    for customer in (survivor, duplicate):
        if customer.erased_at is not None:
            raise ValidationError(f"Customer #{customer.pk} was erased and cannot be merged.")

    moved, dropped = {}, {}
    moved["activities"] = Activity.objects.filter(customer=duplicate).update(customer=survivor)
    moved["consents"] = Consent.objects.filter(customer=duplicate).update(customer=survivor)
    moved["messages"], dropped["messages"] = _move(
        Message.objects.filter(customer=duplicate),
        survivor_id=survivor.pk,
        clash=Exists(Message.objects.filter(customer=survivor, step=OuterRef("step"), run=OuterRef("run"))),
    )
    moved["enrollments"], dropped["enrollments"] = _move(
        Enrollment.objects.filter(customer=duplicate),
        survivor_id=survivor.pk,
        clash=Exists(Enrollment.objects.filter(customer=survivor, run=OuterRef("run"))),
    )
    moved["segment_memberships"], dropped["segment_memberships"] = _move(
        SegmentMember.objects.filter(customer=duplicate),
        survivor_id=survivor.pk,
        clash=Exists(SegmentMember.objects.filter(customer=survivor, segment=OuterRef("segment"))),
    )

    duplicate_identities = {field: getattr(duplicate, field) for field in IDENTITY_FIELDS if getattr(duplicate, field)}
    filled = [
        field
        for field in (*IDENTITY_FIELDS, *PROFILE_FIELDS)
        if not getattr(survivor, field) and getattr(duplicate, field)
    ]
    # Identity keys are unique: the duplicate lets go of them before the survivor takes them.
    Customer.objects.filter(pk=duplicate.pk).update(**dict.fromkeys(IDENTITY_FIELDS))
    for field in filled:
        setattr(survivor, field, getattr(duplicate, field))
    attributes = {
        **(duplicate.attributes if isinstance(duplicate.attributes, dict) else {}),
        **(survivor.attributes if isinstance(survivor.attributes, dict) else {}),
    }
    survivor.attributes = attributes
    survivor.created_at = min(survivor.created_at, duplicate.created_at)
    survivor.save(update_fields=[*filled, "attributes", "created_at", "updated_at"])
    duplicate_id = duplicate.pk
    duplicate.delete()

    customer_stats_refresh(customer_ids=[survivor.pk])
    personas_assign(customer_ids=[survivor.pk])
    Activity.objects.create(
        customer=survivor,
        kind=MERGED_KIND,
        occurred_at=timezone.now(),
        properties={
            "merged_by": by.get_username() if by is not None else "system",
            "merged_by_id": getattr(by, "pk", None),
            "duplicate_id": duplicate_id,
            "duplicate_identities": duplicate_identities,
            "filled_fields": filled,
            "moved": moved,
            "dropped": dropped,
        },
    )
    survivor.refresh_from_db()
    return survivor
