"""The suppression list: hashed addresses checked at dispatch and again right before sending."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns.services import enrollments_dispatch
from channels.models import Message, SandboxMessage, Suppression
from channels.services import messages_send
from channels.suppression import is_suppressed, suppressed_addresses, suppressed_hashes, suppression_add
from customers.models import Activity, Customer
from tests.factories import CustomerFactory, email_only_campaign, launch, two_channel_campaign


@pytest.mark.django_db
def test_suppression_stores_only_a_hash_and_counts_only_new_addresses():
    assert suppression_add(addresses=["ana@example.com", "+48600100200", "", "  "], reason="hard_bounce") == 2
    assert suppression_add(addresses=["ana@example.com", "bo@example.com"], reason="manual") == 1
    stored = list(Suppression.objects.values_list("address_hash", "reason"))
    assert len(stored) == 3
    assert ("ana@example.com" not in str(stored)) and ("+48600100200" not in str(stored))
    # An address already on the list keeps its first reason.
    ana = Suppression.objects.get(address_hash=Suppression.address_hash_for("ana@example.com"))
    assert ana.reason == "hard_bounce"


@pytest.mark.django_db
def test_suppression_with_an_unknown_reason_is_refused_and_nothing_is_stored():
    with pytest.raises(ValidationError, match="not a suppression reason"):
        suppression_add(addresses=["ana@example.com"], reason="because")
    assert not Suppression.objects.exists()


@pytest.mark.django_db
def test_suppression_lookup_ignores_case_and_surrounding_space():
    suppression_add(addresses=["ana@example.com"], reason="manual")
    assert is_suppressed(" ANA@Example.com ")
    assert not is_suppressed("bo@example.com")
    assert not is_suppressed("")
    assert not is_suppressed(None)


@pytest.mark.django_db
def test_a_batch_of_addresses_is_checked_in_one_query(django_assert_num_queries):
    suppression_add(addresses=["ana@example.com", "+48600100200"], reason="manual")
    batch = ["ana@example.com", "bo@example.com", "+48600100200", None, "@cy@mastodon.social"]
    with django_assert_num_queries(1):
        found = suppressed_addresses(batch)
    assert found == {"ana@example.com", "+48600100200"}
    assert suppressed_hashes(batch) == {Suppression.address_hash_for(a) for a in found}


@pytest.mark.django_db
def test_dispatch_skips_a_suppressed_address_with_the_reason_on_the_timeline():
    ana = CustomerFactory(consents={"email": "opted_in", "sms": "opted_in"})
    bo = CustomerFactory(consents={"email": "opted_in", "sms": "opted_in"})
    suppression_add(addresses=[ana.email], reason="hard_bounce")
    run = launch(two_channel_campaign())
    enrollments_dispatch()
    email = Message.objects.get(run=run, customer=ana, channel="email")
    assert (email.status, email.skip_reason) == ("skipped", "suppressed")
    skipped = Activity.objects.get(customer=ana, kind="message.skipped")
    assert (skipped.channel, skipped.properties) == ("email", {"reason": "suppressed"})
    # Only the suppressed address is skipped: the same customer's SMS step and other customers go out.
    assert Message.objects.get(run=run, customer=bo, channel="email").status == "queued"
    enrollments_dispatch()
    assert Message.objects.get(run=run, customer=ana, channel="sms").status == "queued"


@pytest.mark.django_db
def test_dispatch_skips_a_customer_erased_after_enrollment_as_erased():
    ana = CustomerFactory(consents={"email": "opted_in"})
    run = launch(email_only_campaign())
    # An erasure that commits after the enrollment was created (erasure itself exits
    # pending enrollments; this is the state a concurrent dispatch can still see).
    Customer.objects.filter(pk=ana.pk).update(erased_at=timezone.now())
    enrollments_dispatch()
    message = Message.objects.get(run=run, customer=ana)
    assert (message.status, message.skip_reason, message.to_address) == ("skipped", "erased", "")
    assert Activity.objects.get(customer=ana, kind="message.skipped").properties == {"reason": "erased"}


@pytest.mark.django_db(transaction=True)
def test_an_address_suppressed_after_dispatch_is_skipped_at_send_and_the_provider_never_called(sandbox, hold_sends):
    ana = CustomerFactory(consents={"email": "opted_in"})
    run = launch(email_only_campaign())
    enrollments_dispatch()
    message = Message.objects.get(run=run, customer=ana)
    assert message.status == "queued"
    suppression_add(addresses=[ana.email], reason="spam_report")  # e.g. a complaint about another campaign
    messages_send(message_ids=[message.pk])
    message.refresh_from_db()
    assert (message.status, message.skip_reason) == ("skipped", "suppressed")
    assert Activity.objects.filter(
        message=message, kind="message.skipped", properties={"reason": "suppressed"}
    ).exists()
    assert not SandboxMessage.objects.exists()
