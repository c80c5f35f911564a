"""The single customer record page and the customer list: content, filters, bounded queries."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from customers.models import Activity, Consent, Customer
from customers.services import consent_record
from customers.services.personas import persona_create, personas_assign
from tests.factories import CustomerFactory, SegmentFactory

pytestmark = pytest.mark.django_db

CHANNELS = ["email", "sms", "whatsapp", "social"]
KINDS = ["message.sent", "message.delivered", "message.opened", "message.clicked", "message.bounced", "purchase"]
PAGE_QUERY_BUDGET = 25
LIST_QUERY_BUDGET = 12


def _activities(customer: Customer, count: int) -> None:
    """``count`` activities cycling through channels and kinds, one minute apart, in one INSERT batch."""
    now = timezone.now()
    Activity.objects.bulk_create(
        [
            Activity(
                customer=customer,
                kind=KINDS[n % len(KINDS)],
                channel="" if KINDS[n % len(KINDS)] == "purchase" else CHANNELS[n % len(CHANNELS)],
                occurred_at=now - timedelta(minutes=n),
                properties={"n": n},
            )
            for n in range(count)
        ],
        batch_size=2000,
    )


@pytest.fixture
def anna(roles):
    """A customer with every identity, stats, a persona, a consent history and some activity."""
    anna = CustomerFactory(
        first_name="Anna",
        last_name="Kowalska",
        email="anna@example.com",
        phone="+48601999888",
        external_id="crm-1042",
        mastodon_handle="@anna@mastodon.social",
        bluesky_handle="anna.bsky.social",
        attributes={"tier": "gold"},
    )
    Customer.objects.filter(pk=anna.pk).update(
        lifetime_value=Decimal("1234.50"),
        orders_count=7,
        last_purchase_at=timezone.now() - timedelta(days=3),
        last_engaged_email_at=timezone.now() - timedelta(days=1),
    )
    month_ago = timezone.now() - timedelta(days=30)
    consent_record(customer=anna, channel="email", status="opted_in", source=Consent.Source.IMPORT, at=month_ago)
    consent_record(
        customer=anna,
        channel="email",
        status="opted_in",
        source=Consent.Source.FORM,
        evidence={"ip": "203.0.113.7"},
        at=month_ago + timedelta(days=1),
    )
    consent_record(customer=anna, channel="sms", status="opted_in", source=Consent.Source.IMPORT, at=month_ago)
    consent_record(
        customer=anna,
        channel="sms",
        status="opted_out",
        source=Consent.Source.SMS_KEYWORD,
        evidence={"keyword": "STOP"},
        at=month_ago + timedelta(days=2),
    )
    persona_create(
        data={"name": "Loyal regular", "rules": {"all": [{"field": "orders_count", "op": "gte", "value": 5}]}}
    )
    anna.refresh_from_db()
    return anna


def test_customer_page_shows_identities_persona_and_stats(marketer_client, anna):
    body = marketer_client.get(reverse("customers:detail", args=[anna.pk])).content.decode()

    for identity in ("anna@example.com", "+48601999888", "crm-1042", "@anna@mastodon.social", "anna.bsky.social"):
        assert identity in body
    assert reverse("customers:persona-detail", args=["loyal-regular"]) in body
    assert 'data-stat="lifetime_value">1,234.50<' in body
    assert 'data-stat="orders_count">7<' in body
    assert 'data-testid="last-engaged"' in body
    assert 'data-testid="privacy-actions"' in body  # export / merge / erase


def test_customer_page_shows_current_consent_with_its_ledger(marketer_client, anna):
    body = marketer_client.get(reverse("customers:detail", args=[anna.pk])).content.decode()

    current = body.split('data-testid="current-consent"')[1].split("</table>")[0]
    rows = dict(re.findall(r'<tr data-channel="(\w+)">(.*?)</tr>', current, re.S))
    assert "consent-opted_out" in rows["sms"] and "SMS keyword" in rows["sms"]  # the latest row wins
    assert "consent-opted_in" in rows["email"] and "Form" in rows["email"]
    assert "Never asked" in rows["whatsapp"]
    ledger = body.split('data-testid="consent-history"')[1].split("</table>")[0]
    assert ledger.count("<tr data-channel=") == 4  # every row, newest first
    assert ledger.index("STOP") < ledger.index("203.0.113.7")
    assert "Import" in ledger


def test_customer_page_lists_the_segments_the_customer_is_in_and_offers_why(marketer_client, anna):
    polish = SegmentFactory(name="Customers in Poland")
    german = SegmentFactory(
        name="Customers in Germany", rules={"all": [{"field": "country", "op": "eq", "value": "DE"}]}
    )

    body = marketer_client.get(reverse("customers:detail", args=[anna.pk])).content.decode()

    in_segments = body.split('data-testid="customer-segments"')[1].split("</div>")[0]
    assert "Customers in Poland" in in_segments
    assert "Customers in Germany" not in in_segments
    for segment in (polish, german):  # the why in/out picker offers both
        assert reverse("segments:explain", args=[segment.pk, anna.pk]) in body


def test_customer_page_sums_engagement_per_channel(marketer_client, anna):
    _activities(anna, 48)  # 8 of each kind; message kinds spread over the channels

    body = marketer_client.get(reverse("customers:detail", args=[anna.pk])).content.decode()
    table = body.split('data-testid="engagement"')[1].split("</table>")[0]
    counts = {
        (channel, metric): int(value)
        for channel, row in re.findall(r'data-channel="(\w+)">(.*?)</tr>', table, re.S)
        for metric, value in re.findall(r'data-metric="(\w+)">(\d+)<', row)
    }

    expected = {}
    for n in range(48):
        kind = KINDS[n % len(KINDS)]
        if kind != "purchase":
            key = (CHANNELS[n % len(CHANNELS)], kind.split(".")[1])
            expected[key] = expected.get(key, 0) + 1
    assert {k: v for k, v in counts.items() if v} == expected


def test_customer_page_with_10000_activities_uses_a_bounded_number_of_queries(
    marketer_client, anna, django_assert_max_num_queries
):
    SegmentFactory(name="Customers in Poland")
    url = reverse("customers:detail", args=[anna.pk])
    with CaptureQueriesContext(connection) as small:
        assert marketer_client.get(url).status_code == 200

    _activities(anna, 10_000)
    with django_assert_max_num_queries(PAGE_QUERY_BUDGET):
        response = marketer_client.get(url)
    with CaptureQueriesContext(connection) as large:
        marketer_client.get(url, {"page": 300, "channel": "email"})

    assert response.status_code == 200
    total = anna.activities.count()
    assert total > 10_000
    assert f"{total:,} activities" in response.content.decode()
    assert len(large.captured_queries) == len(small.captured_queries)  # independent of the timeline's size
    assert response.content.decode().count('<tr data-kind="') == 25  # one page, never the whole timeline


def test_timeline_fragment_filters_by_channel_and_kind(marketer_client, anna):
    _activities(anna, 120)
    url = reverse("customers:detail", args=[anna.pk])

    fragment = marketer_client.get(url, {"channel": "sms"}, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<div id="timeline">')
    assert fragment.count("<tr data-kind=") == min(25, anna.activities.filter(channel="sms").count())
    assert "channel-email" not in fragment and "channel-sms" in fragment

    purchases = marketer_client.get(url, {"kind": "purchase"}, headers={"HX-Request": "true"}).content.decode()
    kinds = set(re.findall(r'<tr data-kind="([^"]+)"', purchases))
    assert kinds == {"purchase"}

    nothing = marketer_client.get(url, {"kind": "no.such.kind"}, headers={"HX-Request": "true"}).content.decode()
    assert "Nothing matches these filters." in nothing


def test_timeline_paginates(marketer_client, anna):
    _activities(anna, 60)  # plus the consent changes of the fixture
    url = reverse("customers:detail", args=[anna.pk])

    last = marketer_client.get(url, {"page": 3}, headers={"HX-Request": "true"}).content.decode()
    assert "Page 3 of 3" in last
    assert last.count("<tr data-kind=") == anna.activities.count() - 50
    junk = marketer_client.get(url, {"page": "abc", "channel": "fax"}, headers={"HX-Request": "true"})
    assert junk.status_code == 200  # a bad page or channel falls back, never a 500


def test_customer_page_404s_for_an_unknown_customer(marketer_client):
    assert marketer_client.get(reverse("customers:detail", args=[999999])).status_code == 404


def test_analyst_sees_the_customer_page_without_merge_or_erase(analyst_client, anna):
    body = analyst_client.get(reverse("customers:detail", args=[anna.pk])).content.decode()
    assert "anna@example.com" in body
    assert 'data-testid="erase-button"' not in body
    assert 'data-testid="merge-button"' not in body


# --- the list --------------------------------------------------------------------


def test_customer_list_shows_personas_and_filters_by_them(marketer_client, anna):
    other = CustomerFactory(first_name="Olek", last_name="Bezpersony")
    url = reverse("customers:list")

    everyone = marketer_client.get(url).content.decode()
    assert "Loyal regular" in everyone and "Olek Bezpersony" in everyone

    persona = anna.persona
    loyal = marketer_client.get(url, {"persona": persona.pk}, headers={"HX-Request": "true"}).content.decode()
    assert f'data-customer="{anna.pk}"' in loyal and f'data-customer="{other.pk}"' not in loyal
    assert "in persona “Loyal regular”" in loyal

    none = marketer_client.get(url, {"persona": "none"}, headers={"HX-Request": "true"}).content.decode()
    assert f'data-customer="{other.pk}"' in none and f'data-customer="{anna.pk}"' not in none

    combined = marketer_client.get(url, {"persona": persona.pk, "q": "olek"}).content.decode()
    assert "No customers match “olek” in persona “Loyal regular”" in combined

    unknown = marketer_client.get(url, {"persona": "banana"})
    assert unknown.status_code == 200 and f'data-customer="{other.pk}"' in unknown.content.decode()


def test_customer_search_pushes_only_the_filters_in_use(marketer_client, anna):
    url = reverse("customers:list")
    response = marketer_client.get(url, {"q": "anna", "persona": ""}, headers={"HX-Request": "true"})
    assert response["HX-Push-Url"] == f"{url}?q=anna"
    response = marketer_client.get(url, {"q": "", "persona": ""}, headers={"HX-Request": "true"})
    assert response["HX-Push-Url"] == url


def test_customer_list_query_count_does_not_grow_with_customers(marketer_client, anna, django_assert_max_num_queries):
    url = reverse("customers:list")
    with CaptureQueriesContext(connection) as few:
        marketer_client.get(url)
    for n in range(60):
        CustomerFactory(consents={"email": "opted_in"} if n % 2 else {})
    Customer.objects.update(orders_count=6)
    personas_assign()

    with django_assert_max_num_queries(LIST_QUERY_BUDGET):
        page = marketer_client.get(url, {"q": "customer"})
    with CaptureQueriesContext(connection) as many:
        marketer_client.get(url)

    assert page.content.decode().count("<tr data-customer=") == 50
    assert len(many.captured_queries) == len(few.captured_queries)


def test_long_customer_lists_page_without_counting_and_count_separately(marketer_client, roles):
    for n in range(55):
        CustomerFactory(first_name="Zenon" if n % 5 == 0 else "Other")
    url = reverse("customers:list")

    first = marketer_client.get(url).content.decode()
    assert first.count("<tr data-customer=") == 50
    assert f'hx-get="{reverse("customers:count")}"' in first  # the total loads after the rows
    assert 'rel="next"' in first and 'rel="prev"' not in first
    second = marketer_client.get(url, {"page": 2}, headers={"HX-Request": "true"})
    assert second.content.decode().count("<tr data-customer=") == 5
    assert second["HX-Push-Url"] == f"{url}?page=2"

    count = marketer_client.get(reverse("customers:count")).content.decode()
    assert "55 customers" in count and "About" not in count
    matching = marketer_client.get(reverse("customers:count"), {"q": "zenon"}).content.decode()
    assert "11 customers matching “zenon”" in matching
    assert marketer_client.get(url, {"page": "-3"}).status_code == 200  # a bad page number shows page 1
