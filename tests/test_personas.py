"""Personas: assignment by priority, bulk recompute in one UPDATE, services, API and pages."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from config.roles import ANALYST, MARKETER
from customers.identity import normalize_phone
from customers.models import Consent, Customer, Persona
from customers.services import consent_record
from customers.services import personas as persona_services
from customers.services.customers import customer_update
from customers.services.personas import (
    Recompute,
    persona_create,
    persona_delete,
    persona_update,
    personas_assign,
)
from tests.factories import CustomerFactory, UserFactory, two_channel_campaign

pytestmark = pytest.mark.django_db

LOYAL = {"all": [{"field": "orders_count", "op": "gte", "value": 5}]}
POLISH = {"all": [{"field": "country", "op": "eq", "value": "PL"}]}
BARGAIN = {"any": [{"attribute": "coupon_uses", "op": "gte", "value": 3}]}


def _persona(name: str, rules: dict, priority: int = 0, **extra) -> Persona:
    persona, recompute = persona_create(data={"name": name, "rules": rules, "priority": priority, **extra})
    assert recompute == Recompute.DONE
    return persona


def _customer(*, orders: int = 0, country: str = "PL", **kwargs) -> Customer:
    customer = CustomerFactory(country=country, **kwargs)
    Customer.objects.filter(pk=customer.pk).update(orders_count=orders)
    return customer


def _persona_of(customer: Customer) -> str | None:
    customer.refresh_from_db(fields=["persona"])
    return customer.persona.name if customer.persona_id else None


def _customer_updates(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith('UPDATE "CUSTOMERS_CUSTOMER"')]


# --- assignment ----------------------------------------------------------------


def test_highest_priority_matching_persona_wins():
    polish_loyal = _customer(orders=7, country="PL")
    german_loyal = _customer(orders=7, country="DE")
    polish_new = _customer(orders=0, country="PL")
    german_new = _customer(orders=0, country="DE")
    _persona("Polish", POLISH, priority=10)
    _persona("Loyal regular", LOYAL, priority=20)

    assert _persona_of(polish_loyal) == "Loyal regular"  # matches both: the higher priority wins
    assert _persona_of(german_loyal) == "Loyal regular"
    assert _persona_of(polish_new) == "Polish"
    assert _persona_of(german_new) is None


def test_raising_a_persona_priority_moves_customers_matching_both():
    customer = _customer(orders=7, country="PL")
    polish = _persona("Polish", POLISH, priority=10)
    _persona("Loyal regular", LOYAL, priority=20)
    assert _persona_of(customer) == "Loyal regular"

    persona_update(persona=polish, data={"priority": 30})

    assert _persona_of(customer) == "Polish"


def test_editing_a_persona_recomputes_everyone_in_one_update():
    customers = [_customer(orders=n % 8, country="PL" if n % 2 else "DE") for n in range(40)]
    loyal = _persona("Loyal regular", LOYAL, priority=20)
    _persona("Polish", POLISH, priority=10)

    with CaptureQueriesContext(connection) as ctx:
        persona_update(persona=loyal, data={"rules": {"all": [{"field": "orders_count", "op": "gte", "value": 3}]}})

    assert len(_customer_updates(ctx.captured_queries)) == 1, _customer_updates(ctx.captured_queries)
    assert len(ctx.captured_queries) <= 12  # validation look-ups, save, the size check, one UPDATE
    expected = {c.pk: "Loyal regular" if c.orders_count >= 3 else ("Polish" if c.country == "PL" else None)
                for c in Customer.objects.filter(pk__in=[c.pk for c in customers])}  # fmt: skip
    assert {c.pk: _persona_of(c) for c in customers} == expected


def test_recompute_query_count_does_not_grow_with_the_audience():
    _persona("Loyal regular", LOYAL, priority=20)
    _persona("Polish", POLISH, priority=10)
    counts = []
    for size in (3, 60):
        for n in range(size):
            _customer(orders=n % 7)
        with CaptureQueriesContext(connection) as ctx:
            personas_assign()
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


def test_recompute_writes_only_customers_whose_persona_changes():
    steady = [_customer(orders=6) for _ in range(5)]
    _persona("Loyal regular", LOYAL)  # assigns all five
    assert personas_assign() == 0  # everyone is already right: nothing written

    Customer.objects.filter(pk=steady[0].pk).update(orders_count=1)
    assert personas_assign() == 1
    assert _persona_of(steady[0]) is None


def test_customer_change_recomputes_that_customer():
    loyal = _persona("Loyal regular", LOYAL)
    changed, untouched = _customer(orders=0), _customer(orders=0)
    # Stats moved behind the assignment's back for both; only one is reported as changed.
    Customer.objects.filter(pk__in=[changed.pk, untouched.pk]).update(orders_count=9)

    assert personas_assign(customer_ids=[changed.pk]) == 1

    assert _persona_of(changed) == loyal.name
    assert _persona_of(untouched) is None


def test_customer_update_service_reassigns_the_persona():
    _persona("Bargain hunter", BARGAIN)
    customer = _customer()
    assert _persona_of(customer) is None

    customer_update(customer=customer, data={"attributes": {"coupon_uses": 4}}, source="api")

    assert _persona_of(customer) == "Bargain hunter"


def test_erased_customers_are_left_alone():
    _persona("Polish", POLISH)
    erased = _customer()
    Customer.objects.filter(pk=erased.pk).update(erased_at="2025-01-01T00:00:00Z", persona=None)

    personas_assign()

    assert _persona_of(erased) is None


def test_a_persona_whose_rules_no_longer_compile_matches_nobody_and_the_rest_still_assign():
    customer = _customer(orders=9)
    broken = _persona("Loyal regular", LOYAL, priority=20)
    _persona("Polish", POLISH, priority=10)
    assert _persona_of(customer) == "Loyal regular"
    Persona.objects.filter(pk=broken.pk).update(rules={"all": []})  # e.g. edited straight in the database

    personas_assign()

    assert _persona_of(customer) == "Polish"


def test_deleting_a_persona_moves_its_members_to_their_next_match():
    customer = _customer(orders=9)
    loyal = _persona("Loyal regular", LOYAL, priority=20)
    _persona("Polish", POLISH, priority=10)
    assert _persona_of(customer) == "Loyal regular"

    assert persona_delete(persona=loyal) == Recompute.DONE

    assert _persona_of(customer) == "Polish"


def test_large_audiences_are_recomputed_by_a_task_after_commit(monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(persona_services, "INLINE_RECOMPUTE_MAX_CUSTOMERS", 2)
    customers = [_customer(orders=6) for _ in range(3)]

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        _, recompute = persona_create(data={"name": "Loyal regular", "rules": LOYAL})
        assert recompute == Recompute.QUEUED
        assert all(_persona_of(c) is None for c in customers)  # nothing recomputed inside the request

    assert len(callbacks) == 1
    assert all(_persona_of(c) == "Loyal regular" for c in customers)


def test_the_worker_knows_the_recompute_task():
    """A worker only imports what Celery autodiscovers (``<app>.tasks``); an unknown task name
    would be rejected there and big audiences would never be recomputed."""
    import subprocess
    import sys

    script = (
        "from config.celery import app; app.loader.import_default_modules(); "
        "print('customers.tasks.personas_recompute' in app.tasks)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True", "the worker does not know customers.tasks.personas_recompute"


# --- validation ----------------------------------------------------------------


def test_bad_rules_are_rejected_naming_the_node_path():
    with pytest.raises(ValidationError) as exc:
        persona_create(
            data={"name": "X", "rules": {"all": [POLISH["all"][0], {"field": "orders_count", "op": "bigger"}]}}
        )

    assert "all[1]" in exc.value.message_dict["rules"][0]
    assert not Persona.objects.exists()


def test_persona_rules_may_not_refer_to_personas():
    _persona("Polish", POLISH)
    with pytest.raises(ValidationError) as exc:
        persona_create(data={"name": "Polish fans", "rules": {"all": [{"persona": "polish"}]}})
    assert "rules" in exc.value.message_dict


def test_a_persona_needs_rules():
    with pytest.raises(ValidationError) as exc:
        persona_create(data={"name": "Everyone", "rules": {}})
    assert "rules" in exc.value.message_dict


@pytest.mark.parametrize(
    ("channels", "message"),
    [(["email", "fax"], "fax"), ("email", "list of channels"), ([1], "list of channels")],
)
def test_preferred_channels_must_be_a_list_of_known_channels(channels, message):
    with pytest.raises(ValidationError) as exc:
        persona_create(data={"name": "X", "rules": POLISH, "preferred_channels": channels})
    assert message in exc.value.message_dict["preferred_channels"][0]


def test_preferred_channels_keep_their_order_without_duplicates():
    persona = _persona("X", POLISH, preferred_channels=["sms", "email", "sms"])
    assert persona.preferred_channels == ["sms", "email"]


def test_slug_is_made_from_the_name_and_kept_unique():
    first = _persona("Loyal regular", LOYAL)
    second = _persona("Loyal   Regular!", LOYAL)
    assert (first.slug, second.slug) == ("loyal-regular", "loyal-regular-2")

    persona_update(persona=first, data={"name": "Loyal customer"})
    first.refresh_from_db()
    assert first.slug == "loyal-regular"  # segment rules refer to it: renaming keeps it


@pytest.mark.parametrize("slug", ["new", "check-rules", "123"])
def test_slugs_that_clash_with_addresses_or_ids_are_rejected(slug):
    with pytest.raises(ValidationError) as exc:
        persona_create(data={"name": "X", "slug": slug, "rules": POLISH})
    assert "slug" in exc.value.message_dict


def test_names_are_unique():
    _persona("Polish", POLISH)
    with pytest.raises(ValidationError) as exc:
        persona_create(data={"name": "Polish", "rules": LOYAL})
    assert "name" in exc.value.message_dict


# --- API -----------------------------------------------------------------------


@pytest.fixture
def marketer_api(roles):
    client = APIClient()
    client.force_authenticate(UserFactory(username="mia", role=MARKETER))
    return client


@pytest.fixture
def analyst_api(roles):
    client = APIClient()
    client.force_authenticate(UserFactory(username="ada", role=ANALYST))
    return client


def test_api_creates_a_persona_and_reports_its_members(marketer_api):
    _customer(orders=6)
    _customer(orders=1)

    response = marketer_api.post(
        "/api/v1/personas/",
        {"name": "Loyal regular", "rules": LOYAL, "priority": 5, "preferred_channels": ["email"]},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "loyal-regular"
    assert body["member_count"] == 1
    assert body["recompute"] == "done"
    assert body["preferred_channels"] == ["email"]


def test_api_reads_a_persona_by_id_or_slug(analyst_api):
    _customer(orders=6)
    persona = _persona("Loyal regular", LOYAL)

    by_slug = analyst_api.get("/api/v1/personas/loyal-regular/")
    by_id = analyst_api.get(f"/api/v1/personas/{persona.pk}/")
    listing = analyst_api.get("/api/v1/personas/")

    assert by_slug.status_code == by_id.status_code == listing.status_code == 200
    assert by_slug.json() == by_id.json()
    assert by_slug.json()["member_count"] == 1
    assert [p["slug"] for p in listing.json()["results"]] == ["loyal-regular"]
    assert analyst_api.get("/api/v1/personas/nobody/").status_code == 404
    assert analyst_api.get("/api/v1/personas/999999/").status_code == 404


def test_api_update_recomputes_members(marketer_api):
    customer = _customer(orders=3)
    _persona("Loyal regular", LOYAL)
    assert _persona_of(customer) is None

    response = marketer_api.patch(
        "/api/v1/personas/loyal-regular/",
        {"rules": {"all": [{"field": "orders_count", "op": "gte", "value": 3}]}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["member_count"] == 1
    assert _persona_of(customer) == "Loyal regular"


def test_api_delete_removes_the_persona_and_frees_its_members(marketer_api):
    customer = _customer(orders=6)
    _persona("Loyal regular", LOYAL)

    assert marketer_api.delete("/api/v1/personas/loyal-regular/").status_code == 204

    assert not Persona.objects.exists()
    assert _persona_of(customer) is None


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (
            {"name": "X", "rules": {"all": [{"field": "orders_count", "op": "bigger", "value": 5}]}},
            "rules",
            "all[0].op",
        ),
        ({"name": "X", "rules": {"all": [{"field": "shoe_size", "op": "eq", "value": 5}]}}, "rules", "all[0].field"),
        ({"name": "X", "rules": {"any": []}}, "rules", "any"),
        ({"name": "X", "rules": "orders > 5"}, "rules", ""),
        ({"name": "X"}, "rules", ""),
        ({"rules": LOYAL}, "name", ""),
        ({"name": "X", "rules": LOYAL, "preferred_channels": ["fax"]}, "preferred_channels", ""),
        ({"name": "X", "rules": LOYAL, "priority": "high"}, "priority", ""),
        ({"name": "X", "rules": LOYAL, "slug": "not a slug"}, "slug", ""),
        ({"name": "X", "rules": LOYAL, "slug": "new"}, "slug", ""),
    ],
)
def test_api_rejects_bad_input_with_400_naming_the_problem(marketer_api, payload, field, words):
    response = marketer_api.post("/api/v1/personas/", payload, format="json")

    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors, errors
    assert words in json.dumps(errors[field])
    assert not Persona.objects.exists()


def test_api_rejects_a_duplicate_name(marketer_api):
    _persona("Polish", POLISH)
    response = marketer_api.post("/api/v1/personas/", {"name": "Polish", "rules": LOYAL}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()


def test_api_rejects_malformed_json(marketer_api):
    response = marketer_api.post("/api/v1/personas/", "{not json", content_type="application/json")
    assert response.status_code == 400


def test_analyst_reads_but_cannot_write_personas(analyst_api):
    persona = _persona("Polish", POLISH)

    assert analyst_api.get("/api/v1/personas/").status_code == 200
    assert analyst_api.post("/api/v1/personas/", {"name": "X", "rules": LOYAL}, format="json").status_code == 403
    assert analyst_api.patch("/api/v1/personas/polish/", {"priority": 9}, format="json").status_code == 403
    assert analyst_api.delete("/api/v1/personas/polish/").status_code == 403
    persona.refresh_from_db()
    assert persona.priority == 0
    assert Persona.objects.count() == 1


def test_anonymous_api_clients_are_refused(roles):
    assert APIClient().get("/api/v1/personas/").status_code == 401


def test_persona_endpoints_are_in_the_schema_with_their_errors(marketer_api):
    schema = marketer_api.get("/api/schema/", {"format": "json"}).json()
    item = schema["paths"]["/api/v1/personas/{id_or_slug}/"]
    assert {"get", "put", "patch", "delete"} <= set(item)
    assert {"400", "403", "404"} <= set(item["patch"]["responses"])
    assert {"201", "400", "403"} <= set(schema["paths"]["/api/v1/personas/"]["post"]["responses"])


# --- pages ---------------------------------------------------------------------


def test_persona_list_shows_member_counts_and_shares(marketer_client, django_assert_max_num_queries):
    for n in range(12):
        _customer(orders=6 if n < 3 else 0, country="PL" if n < 6 else "DE")
    _persona("Loyal regular", LOYAL, priority=20, preferred_channels=["email", "sms"])
    _persona("Polish", POLISH, priority=10)

    with django_assert_max_num_queries(8):
        body = marketer_client.get(reverse("customers:persona-list")).content.decode()

    assert 'data-persona="loyal-regular"' in body
    assert "25.0% of customers" in body  # 3 of 12
    assert "6 of 12 customers match no persona" in body


def test_persona_page_shows_definition_rules_members_and_engagement(marketer_client, django_assert_max_num_queries):
    member = _customer(orders=6, first_name="Zofia", last_name="Loyalna")
    _customer(orders=0, first_name="Adam", last_name="Outsider")
    for _ in range(25):
        _customer(orders=8)
    _persona(
        "Loyal regular",
        LOYAL,
        goals="Early access to new gear",
        pain_points="Generic discounts",
        tone_of_voice="Warm, insider",
        preferred_channels=["email"],
    )

    with django_assert_max_num_queries(12):
        body = marketer_client.get(reverse("customers:persona-detail", args=["loyal-regular"])).content.decode()

    assert "Early access to new gear" in body and "Generic discounts" in body and "Warm, insider" in body
    assert "<code>Orders</code> ≥ <b>5</b>" in body  # readable rules
    assert body.count("<tr data-member=") == 20
    assert "A sample of 20 of 26" in body
    assert "Adam Outsider" not in body
    assert (
        reverse("customers:detail", args=[member.pk])
        in marketer_client.get(reverse("customers:list"), {"persona": Persona.objects.get().pk}).content.decode()
    )
    with django_assert_max_num_queries(8):
        engagement = marketer_client.get(reverse("customers:persona-engagement", args=["loyal-regular"]))
    assert 'data-testid="persona-engagement"' in engagement.content.decode()


def test_persona_engagement_counts_reachable_members_and_message_outcomes(marketer_client):
    from campaigns.models import CampaignRun
    from channels.models import Message

    members = [_customer(orders=6, consents={"email": "opted_in"}) for _ in range(4)]
    consent_record(customer=members[0], channel="email", status="opted_out", source=Consent.Source.ONE_CLICK)
    outsider = _customer(orders=0, consents={"email": "opted_in"})
    _persona("Loyal regular", LOYAL)
    campaign = two_channel_campaign()
    run = CampaignRun.objects.create(campaign=campaign, number=1)
    email = campaign.steps.get(channel="email")
    S = Message.Status
    for customer, status in zip(
        [*members, outsider], [S.CLICKED, S.OPENED, S.DELIVERED, S.BOUNCED, S.CLICKED], strict=True
    ):
        Message.objects.create(
            run=run, step=email, customer=customer, channel="email", status=status, rank=Message.RANK[status],
            sent_at=timezone.now(),
        )  # fmt: skip

    body = marketer_client.get(reverse("customers:persona-engagement", args=["loyal-regular"])).content.decode()
    row = body.split('<tr data-channel="email">')[1].split("</tr>")[0]
    metrics = dict(re.findall(r'data-metric="(\w+)"[^>]*>([\d,]+)', row))

    assert metrics == {"reachable": "3", "sent": "4", "delivered": "3", "opened": "2", "clicked": "1", "bounced": "1"}
    assert "75.0%" in row  # delivered of sent
    assert "33.3%" in row  # clicked of delivered


def test_persona_form_creates_a_persona_and_shows_rule_errors_inline(marketer_client):
    _customer(orders=6)
    url = reverse("customers:persona-new")
    data = {"name": "Loyal regular", "priority": "5", "rules": '{"all": [{"field": "orders_count", "op": "gte"}]}'}

    bad = marketer_client.post(url, data)
    assert bad.status_code == 400
    assert "all[0]" in bad.content.decode()
    assert not Persona.objects.exists()

    check = marketer_client.post(reverse("customers:persona-rules-check"), {"rules": json.dumps(LOYAL)})
    assert "1 customer match" in check.content.decode()

    data["rules"] = json.dumps(LOYAL)
    data["preferred_channels"] = ["email", "sms"]
    response = marketer_client.post(url, data, follow=True)
    assert response.redirect_chain[-1][0] == reverse("customers:persona-detail", args=["loyal-regular"])
    assert "1 customer in it now" in response.content.decode()
    assert Persona.objects.get().preferred_channels == ["email", "sms"]


def test_persona_form_reports_invalid_json_with_its_position(marketer_client):
    response = marketer_client.post(reverse("customers:persona-rules-check"), {"rules": '{"all": [}'})
    assert "Not valid JSON" in response.content.decode()
    assert "line 1" in response.content.decode()


def test_analyst_sees_personas_but_no_way_to_change_them(analyst_client):
    _persona("Polish", POLISH)

    page = analyst_client.get(reverse("customers:persona-detail", args=["polish"])).content.decode()
    assert reverse("customers:persona-edit", args=["polish"]) not in page
    assert analyst_client.get(reverse("customers:persona-new")).status_code == 403
    assert analyst_client.post(reverse("customers:persona-delete", args=["polish"])).status_code == 403
    assert Persona.objects.filter(slug="polish").exists()


def test_deleting_a_persona_from_its_page(marketer_client):
    _persona("Polish", POLISH)
    response = marketer_client.post(reverse("customers:persona-delete", args=["polish"]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("customers:persona-list")
    assert not Persona.objects.exists()


# --- demo data -----------------------------------------------------------------


def test_demo_data_fills_every_persona_with_valid_customers_and_loads_once(roles):
    call_command("chorus_demo", customers=120, stdout=io.StringIO())
    output = io.StringIO()
    call_command("chorus_demo", customers=120, stdout=output)

    assert "already present" in output.getvalue()

    assert Customer.objects.count() == 120
    counts = {p.slug: p.customers.count() for p in Persona.objects.all()}
    assert set(counts) == {"lapsed", "loyal-regular", "bargain-hunter", "new-subscriber"}
    assert all(counts.values()), counts
    for phone in Customer.objects.values_list("phone", flat=True):
        assert normalize_phone(phone) == phone
    loyal = Customer.objects.filter(persona__slug="loyal-regular")
    assert not loyal.filter(orders_count__lt=5).exists()
    assert Customer.objects.filter(orders_count__gt=0, lifetime_value__gt=0).exists()  # stats were refreshed
