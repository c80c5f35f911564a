"""The segments API: CRUD with rule errors naming the node, counts, members as JSON or streamed CSV,
previews of unsaved trees, "why in/out?", and static lists uploaded from CSV."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from config.roles import ANALYST, MARKETER
from customers.exports import customers_csv_rows
from customers.models import Customer, Persona
from segments.models import Segment, SegmentMember
from tests.factories import CampaignFactory, CustomerFactory, SegmentFactory
from tests.factories import api_client as api

pytestmark = pytest.mark.django_db
POLAND = {"all": [{"field": "country", "op": "eq", "value": "PL"}]}


@pytest.fixture(autouse=True)
def _roles(roles):
    """Every test here calls the API with a role."""


@pytest.fixture
def marketer() -> APIClient:
    return api(MARKETER)


@pytest.fixture
def analyst() -> APIClient:
    return api(ANALYST)


@pytest.fixture
def people():
    ola = CustomerFactory(email="ola@example.com", first_name="Ola", country="PL", attributes={"tier": "gold"})
    jan = CustomerFactory(email="jan@example.com", first_name="Jan", country="PL", attributes={"tier": "silver"})
    hans = CustomerFactory(email="hans@example.com", first_name="Hans", country="DE")
    return {"ola": ola, "jan": jan, "hans": hans}


# --- CRUD ----------------------------------------------------------------------------------


def test_marketer_creates_a_segment_and_reads_it_back_with_its_live_count(marketer, people):
    response = marketer.post(
        "/api/v1/segments/", {"name": "Poles", "description": "Everyone in Poland", "rules": POLAND}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["kind"] == "dynamic"
    assert body["rules"] == POLAND
    detail = marketer.get(f"/api/v1/segments/{body['id']}/").json()
    assert detail["count"] == 2
    listing = marketer.get("/api/v1/segments/").json()
    assert [s["name"] for s in listing["results"]] == ["Poles"]


def test_marketer_updates_rules_and_the_count_follows(marketer, people):
    segment = SegmentFactory(rules=POLAND)
    gold = {"all": [{"attribute": "tier", "op": "eq", "value": "gold"}]}

    response = marketer.patch(f"/api/v1/segments/{segment.pk}/", {"rules": gold}, format="json")

    assert response.status_code == 200, response.json()
    segment.refresh_from_db()
    assert segment.rules == gold
    assert marketer.get(f"/api/v1/segments/{segment.pk}/count/").json() == {"count": 1}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            {
                "all": [
                    {"field": "country", "op": "eq", "value": "PL"},
                    {"field": "country", "op": "eqq", "value": "PL"},
                ]
            },
            "all[1].op: unknown operator 'eqq'; use one of eq, neq",
        ),
        ({"all": [{"field": "shoe_size", "op": "eq", "value": 42}]}, "all[0].field: unknown field 'shoe_size'"),
        ({"all": [{"any": []}]}, "all[0].any: empty group"),
        ({"any": [{"persona": "ghost"}]}, "any[0].persona: unknown persona 'ghost'"),
        ({"all": [{"field": "orders_count", "op": "contains", "value": "1"}]}, "all[0].op: 'contains' does not apply"),
        ({"all": [{"segment": 999999}]}, "all[0].segment: unknown segment id 999999"),
        ({"all": [{"activity": "Clicked!", "performed": True}]}, "all[0].activity: bad activity kind 'Clicked!'"),
        ([1, 2], "(root): a rule must be a non-empty JSON object"),
    ],
)
def test_bad_rule_trees_are_refused_with_the_node_path_and_reason(marketer, rules, message):
    response = marketer.post("/api/v1/segments/", {"name": "Bad", "rules": rules}, format="json")

    assert response.status_code == 400
    errors = response.json()["rules"]
    assert len(errors) == 1 and errors[0].startswith(message), errors
    assert not Segment.objects.exists()


def test_a_segment_cannot_refer_to_itself_through_another(marketer):
    first = SegmentFactory(name="First", rules=POLAND)
    second = SegmentFactory(name="Second", rules={"all": [{"segment": first.pk}]})

    response = marketer.patch(
        f"/api/v1/segments/{first.pk}/", {"rules": {"any": [{"segment": second.pk}]}}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["rules"] == [f"any[0].segment: segment cycle: {first.pk} → {second.pk} → {first.pk}"]
    first.refresh_from_db()
    assert first.rules == POLAND


def test_dynamic_segments_need_rules_and_static_ones_take_none(marketer):
    no_rules = marketer.post("/api/v1/segments/", {"name": "Empty"}, format="json")
    assert no_rules.status_code == 400
    assert no_rules.json()["rules"] == ["A dynamic segment needs a rule tree."]

    static_rules = marketer.post(
        "/api/v1/segments/", {"name": "List", "kind": "static", "rules": POLAND}, format="json"
    )
    assert static_rules.status_code == 400
    assert "static segment has no rules" in static_rules.json()["rules"][0]

    static = marketer.post("/api/v1/segments/", {"name": "List", "kind": "static"}, format="json")
    assert static.status_code == 201
    assert static.json()["rules"] == {}


def test_the_kind_of_a_segment_cannot_change(marketer):
    segment = SegmentFactory()
    response = marketer.patch(f"/api/v1/segments/{segment.pk}/", {"kind": "static", "rules": {}}, format="json")
    assert response.status_code == 400
    assert "cannot change" in response.json()["kind"][0]


def test_duplicate_names_are_refused(marketer):
    SegmentFactory(name="Poles")
    response = marketer.post("/api/v1/segments/", {"name": "Poles", "rules": POLAND}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()


def test_analyst_reads_and_previews_but_cannot_write(analyst, people):
    segment = SegmentFactory(rules=POLAND)
    static = SegmentFactory(name="List", kind=Segment.Kind.STATIC, rules={})
    base = f"/api/v1/segments/{segment.pk}"

    assert analyst.get("/api/v1/segments/").status_code == 200
    assert analyst.get(f"{base}/").status_code == 200
    assert analyst.get(f"{base}/count/").status_code == 200
    assert analyst.get(f"{base}/customers/").status_code == 200
    assert analyst.get(f"{base}/explain/{people['ola'].pk}/").status_code == 200
    assert analyst.post("/api/v1/segments/preview/", {"rules": POLAND}, format="json").status_code == 200

    assert analyst.post("/api/v1/segments/", {"name": "Mine", "rules": POLAND}, format="json").status_code == 403
    assert analyst.patch(f"{base}/", {"name": "Renamed"}, format="json").status_code == 403
    assert analyst.delete(f"{base}/").status_code == 403
    upload = SimpleUploadedFile("list.csv", b"email\nola@example.com\n", content_type="text/csv")
    assert analyst.post(f"/api/v1/segments/{static.pk}/members/upload/", {"file": upload}).status_code == 403
    segment.refresh_from_db()
    assert segment.name != "Renamed"
    assert not static.members.exists()


def test_anonymous_callers_get_401(people):
    assert APIClient().get("/api/v1/segments/").status_code == 401
    assert APIClient().post("/api/v1/segments/preview/", {"rules": POLAND}, format="json").status_code == 401


def test_deleting_a_segment_in_use_is_a_conflict_naming_the_users(marketer):
    campaign = CampaignFactory(name="Spring sale")
    referrer = SegmentFactory(name="Referrer", rules={"all": [{"segment": campaign.segment.pk}]})

    response = marketer.delete(f"/api/v1/segments/{campaign.segment.pk}/")

    assert response.status_code == 409
    assert "campaign “Spring sale”" in response.json()["detail"]
    assert "segment “Referrer”" in response.json()["detail"]
    assert marketer.delete(f"/api/v1/segments/{referrer.pk}/").status_code == 204
    assert not Segment.objects.filter(pk=referrer.pk).exists()


def test_unknown_segment_is_404_json(marketer):
    response = marketer.get("/api/v1/segments/999999/count/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


# --- Members: JSON and CSV -------------------------------------------------------------------


def test_customers_are_listed_paginated_newest_first(marketer, people):
    segment = SegmentFactory(rules=POLAND)

    body = marketer.get(f"/api/v1/segments/{segment.pk}/customers/", {"limit": 1}).json()

    assert body["count"] == 2
    assert [c["email"] for c in body["results"]] == ["jan@example.com"]
    assert body["next"] is not None


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("customers/?format=csv", {}),
        ("customers.csv", {}),
        ("customers/", {"HTTP_ACCEPT": "text/csv"}),
    ],
)
def test_customers_stream_as_csv_with_a_header_and_one_row_each(marketer, people, path, headers):
    segment = SegmentFactory(name="Poles", rules=POLAND)

    response = marketer.get(f"/api/v1/segments/{segment.pk}/{path}", **headers)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="segment-{segment.pk}-Poles.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["email"] for row in rows] == ["ola@example.com", "jan@example.com"]  # id order
    assert rows[0]["country"] == "PL"
    assert rows[0]["attributes"] == '{"tier": "gold"}'


def test_csv_export_of_a_segment_with_a_non_ascii_name_has_a_valid_filename(marketer, people):
    segment = SegmentFactory(name="Klienci z Łodzi", rules=POLAND)
    response = marketer.get(f"/api/v1/segments/{segment.pk}/customers.csv")
    assert response["Content-Disposition"] == (
        f"attachment; filename*=utf-8''segment-{segment.pk}-Klienci-z-%C5%81odzi.csv"
    )


def test_csv_export_reads_in_chunks_and_keeps_every_row(django_assert_num_queries):
    for n in range(5):
        CustomerFactory(email=f"c{n}@example.com")
    queryset = Customer.objects.filter(email__endswith="@example.com")

    chunks = customers_csv_rows(queryset, chunk_size=2)
    header = next(chunks)
    with django_assert_num_queries(3):  # 2 + 2 + 1 rows, one keyset query each
        body = list(chunks)

    assert header.startswith("id,email,phone")
    assert len(body) == 3
    emails = [row[1] for row in csv.reader(io.StringIO("".join(body)))]
    assert emails == [f"c{n}@example.com" for n in range(5)]


def test_csv_export_keeps_spreadsheet_formulas_inert():
    customer = CustomerFactory(first_name='=HYPERLINK("http://evil")', phone="+48600100999")

    text = "".join(customers_csv_rows(Customer.objects.filter(pk=customer.pk)))

    row = next(csv.DictReader(io.StringIO(text)))
    assert row["first_name"] == '\'=HYPERLINK("http://evil")'
    assert row["phone"] == "+48600100999"  # a validated phone number stays as it is


# --- Preview and explain -------------------------------------------------------------------------


def test_preview_counts_an_unsaved_tree_and_samples_its_customers(marketer, people):
    response = marketer.post(
        "/api/v1/segments/preview/",
        {
            "rules": {
                "all": [
                    {"field": "country", "op": "eq", "value": "PL"},
                    {"attribute": "tier", "op": "eq", "value": "gold"},
                ]
            }
        },
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert [c["email"] for c in body["sample"]] == ["ola@example.com"]
    assert not Segment.objects.exists()


def test_preview_sample_is_capped_at_twenty(marketer):
    for n in range(23):
        CustomerFactory(email=f"p{n}@example.com", country="PL")
    body = marketer.post("/api/v1/segments/preview/", {"rules": POLAND}, format="json").json()
    assert body["count"] == 23
    assert len(body["sample"]) == 20


def test_preview_of_a_bad_tree_is_400_with_the_path(marketer):
    response = marketer.post(
        "/api/v1/segments/preview/",
        {"rules": {"all": [{"field": "country", "op": "between", "value": ["Z", "A"]}]}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"rules": ["all[0].value: 'between' needs low <= high"]}


def test_preview_of_an_edit_reports_a_cycle_back_to_the_edited_segment(marketer):
    segment = SegmentFactory()
    response = marketer.post(
        "/api/v1/segments/preview/", {"rules": {"all": [{"segment": segment.pk}]}, "segment": segment.pk}, format="json"
    )
    assert response.status_code == 400
    assert "segment cycle" in response.json()["rules"][0]


def test_explain_marks_every_node_matched_or_not(marketer, people):
    segment = SegmentFactory(
        rules={
            "all": [
                {"field": "country", "op": "eq", "value": "PL"},
                {"not": {"attribute": "tier", "op": "eq", "value": "gold"}},
            ]
        }
    )

    ola = marketer.get(f"/api/v1/segments/{segment.pk}/explain/{people['ola'].pk}/").json()
    jan = marketer.get(f"/api/v1/segments/{segment.pk}/explain/{people['jan'].pk}/").json()

    assert ola["matched"] is False
    assert ola["tree"]["all"][0]["matched"] is True
    assert ola["tree"]["all"][1]["matched"] is False
    assert ola["tree"]["all"][1]["not"]["matched"] is True
    assert jan["matched"] is True
    assert jan["tree"]["all"][1]["not"]["matched"] is False


def test_explain_for_a_static_segment_is_membership(marketer, people):
    segment = SegmentFactory(kind=Segment.Kind.STATIC, rules={})
    SegmentMember.objects.create(segment=segment, customer=people["hans"])

    body = marketer.get(f"/api/v1/segments/{segment.pk}/explain/{people['hans'].pk}/").json()
    assert body == {"segment": segment.pk, "customer": people["hans"].pk, "matched": True, "tree": None}
    assert marketer.get(f"/api/v1/segments/{segment.pk}/explain/{people['ola'].pk}/").json()["matched"] is False


def test_explain_for_an_unknown_customer_is_404(marketer):
    segment = SegmentFactory()
    assert marketer.get(f"/api/v1/segments/{segment.pk}/explain/999999/").status_code == 404


def test_explain_says_an_erased_customer_is_in_no_segment(marketer, people):
    ola = people["ola"]
    dynamic = SegmentFactory(rules=POLAND)
    static = SegmentFactory(kind=Segment.Kind.STATIC, rules={})
    SegmentMember.objects.create(segment=static, customer=ola)
    Customer.objects.filter(pk=ola.pk).update(erased_at="2025-01-01T00:00:00Z")

    for segment in (dynamic, static):
        body = marketer.get(f"/api/v1/segments/{segment.pk}/explain/{ola.pk}/").json()
        assert body == {"segment": segment.pk, "customer": ola.pk, "matched": False, "tree": None}


# --- Static lists --------------------------------------------------------------------------------


def _csv(text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile("list.csv", text.encode(), content_type="text/csv")


@pytest.fixture
def static_list():
    return SegmentFactory(name="VIPs", kind=Segment.Kind.STATIC, rules={})


def test_upload_matches_emails_phones_and_external_ids_and_reports_unknown_rows(marketer, static_list):
    ola = CustomerFactory(email="ola@example.com", phone="+48600100200")
    jan = CustomerFactory(email="jan@example.com", external_id="crm-7")
    piotr = CustomerFactory(email="piotr@example.com", phone="+48600100300")
    upload = _csv(
        "email,phone,external_id\n"
        "OLA@example.com,,\n"  # line 2: email, case-insensitive
        ",,crm-7\n"  # line 3: external id
        ",+48 600 100 300,\n"  # line 4: phone, normalised to E.164
        "nobody@example.com,,\n"  # line 5: unknown
        "ola@example.com,,\n"  # line 6: duplicate of line 2
        "not-an-email,,\n"  # line 7: invalid
        ",,\n"  # line 8: blank, skipped silently
        ",12,\n"  # line 9: invalid phone
    )

    response = marketer.post(f"/api/v1/segments/{static_list.pk}/members/upload/", {"file": upload, "mode": "append"})

    assert response.status_code == 200, response.json()
    report = response.json()
    assert report["identity_columns"] == ["email", "phone", "external_id"]
    assert report["rows"] == 7
    assert report["matched"] == 3
    assert report["added"] == 3
    assert report["duplicates"] == 1
    assert report["unknown_count"] == 3
    assert [(row["line"], row["value"]) for row in report["unknown"]] == [
        (5, "nobody@example.com"),
        (7, "not-an-email"),
        (9, "12"),
    ]
    assert report["unknown"][0]["reason"] == "no customer with email nobody@example.com"
    assert "not a valid email address" in report["unknown"][1]["reason"]
    assert "not a valid phone number" in report["unknown"][2]["reason"]
    assert set(static_list.members.values_list("customer_id", flat=True)) == {ola.pk, jan.pk, piotr.pk}


def test_upload_appends_or_replaces(marketer, static_list):
    ola, jan, hans = (CustomerFactory(email=f"{n}@example.com") for n in ("ola", "jan", "hans"))
    SegmentMember.objects.create(segment=static_list, customer=ola)
    SegmentMember.objects.create(segment=static_list, customer=jan)
    url = f"/api/v1/segments/{static_list.pk}/members/upload/"

    appended = marketer.post(url, {"file": _csv("email\njan@example.com\nhans@example.com\n")}).json()
    assert (appended["added"], appended["already_members"], appended["removed"], appended["members"]) == (1, 1, 0, 3)

    replaced = marketer.post(url, {"file": _csv("email\nhans@example.com\n"), "mode": "replace"}).json()
    assert (replaced["added"], replaced["removed"], replaced["members"]) == (0, 2, 1)
    assert list(static_list.members.values_list("customer_id", flat=True)) == [hans.pk]


def test_upload_understands_semicolons_and_a_byte_order_mark(marketer, static_list):
    ola = CustomerFactory(email="ola@example.com")
    upload = SimpleUploadedFile(
        "list.csv", "\ufeffName;E-mail\nOla;ola@example.com\n".encode(), content_type="text/csv"
    )

    report = marketer.post(f"/api/v1/segments/{static_list.pk}/members/upload/", {"file": upload}).json()

    assert report["added"] == 1
    assert list(static_list.members.values_list("customer_id", flat=True)) == [ola.pk]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name,city\nOla,Krakow\n", "No identity column found"),
        (b"", "empty"),
        ("email\nżółw@example.com\n".encode("utf-16"), "not UTF-8"),
        (b"email\n\x00\x01\x02binary", "not a CSV file"),
    ],
)
def test_unusable_files_are_refused_and_change_nothing(marketer, static_list, content, message):
    SegmentMember.objects.create(segment=static_list, customer=CustomerFactory())
    upload = SimpleUploadedFile("list.csv", content, content_type="text/csv")

    response = marketer.post(f"/api/v1/segments/{static_list.pk}/members/upload/", {"file": upload, "mode": "replace"})

    assert response.status_code == 400
    assert message in response.json()["file"][0]
    assert static_list.members.count() == 1


def test_upload_to_a_dynamic_segment_or_with_a_bad_mode_is_400(marketer, static_list):
    dynamic = SegmentFactory()
    refused = marketer.post(f"/api/v1/segments/{dynamic.pk}/members/upload/", {"file": _csv("email\na@b.co\n")})
    assert refused.status_code == 400
    assert "Only static segments" in refused.json()["file"][0]

    bad_mode = marketer.post(
        f"/api/v1/segments/{static_list.pk}/members/upload/", {"file": _csv("email\na@b.co\n"), "mode": "merge"}
    )
    assert bad_mode.status_code == 400
    assert "mode" in bad_mode.json()

    missing = marketer.post(f"/api/v1/segments/{static_list.pk}/members/upload/", {})
    assert missing.status_code == 400
    assert "file" in missing.json()


def test_static_members_are_listed_with_when_they_were_added(marketer, static_list, people):
    SegmentMember.objects.create(segment=static_list, customer=people["hans"])

    body = marketer.get(f"/api/v1/segments/{static_list.pk}/members/").json()
    assert body["count"] == 1
    assert body["results"][0]["customer"] == people["hans"].pk
    assert body["results"][0]["email"] == "hans@example.com"
    assert marketer.get(f"/api/v1/segments/{static_list.pk}/count/").json() == {"count": 1}

    dynamic = SegmentFactory()
    assert marketer.get(f"/api/v1/segments/{dynamic.pk}/members/").status_code == 400


def test_erased_customers_are_in_no_static_list(marketer, static_list, people):
    SegmentMember.objects.create(segment=static_list, customer=people["hans"])
    Customer.objects.filter(pk=people["hans"].pk).update(erased_at="2025-01-01T00:00:00Z")
    assert marketer.get(f"/api/v1/segments/{static_list.pk}/count/").json() == {"count": 0}


# --- Schema -------------------------------------------------------------------------------------------


def test_every_segment_endpoint_is_in_the_openapi_schema_with_its_errors(marketer):
    schema = marketer.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    for path, method, codes in [
        ("/api/v1/segments/", "post", {"201", "400", "403"}),
        ("/api/v1/segments/{id}/", "delete", {"204", "409"}),
        ("/api/v1/segments/{id}/count/", "get", {"200", "400", "404"}),
        ("/api/v1/segments/{id}/customers/", "get", {"200", "400", "404"}),
        ("/api/v1/segments/preview/", "post", {"200", "400"}),
        ("/api/v1/segments/{id}/explain/{customer_id}/", "get", {"200", "404"}),
        ("/api/v1/segments/{id}/members/", "get", {"200", "400"}),
        ("/api/v1/segments/{id}/members/upload/", "post", {"200", "400", "403"}),
    ]:
        assert codes <= set(paths[path][method]["responses"]), (path, method)
    assert "text/csv" in paths["/api/v1/segments/{id}/customers/"]["get"]["responses"]["200"]["content"]


def test_persona_references_resolve_to_existing_personas(marketer, people):
    Persona.objects.create(name="Bargain hunter", slug="bargain-hunter", rules=POLAND)
    response = marketer.post(
        "/api/v1/segments/", {"name": "Hunters", "rules": {"all": [{"persona": "bargain-hunter"}]}}, format="json"
    )
    assert response.status_code == 201, response.json()
