"""The segment builder and pages: form fields -> rule tree -> saved rules, inline errors, fragments."""

from __future__ import annotations

import io
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from customers.models import Activity, Customer
from segments.forms import attribute_keys
from segments.models import Segment, SegmentMember
from tests.factories import CampaignFactory, CustomerFactory, SegmentFactory

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _roles(roles):
    """Every test here logs in with a role."""


class _FormState(HTMLParser):
    """What a browser would submit for the page's form: checked boxes, selected options."""

    def __init__(self):
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button", "file"):
            if attrs.get("type") in ("checkbox", "radio") and "checked" not in attrs:
                return
            self.fields.append((name, attrs.get("value") or ""))
        elif tag == "select" and name:
            self._select, self._options = name, []
        elif tag == "option" and self._select is not None:
            self._options.append((attrs.get("value", ""), "selected" in attrs))
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields.append((name, ""))

    def handle_data(self, data):
        if self._textarea is not None:
            name, value = self.fields[-1]
            self.fields[-1] = (name, value + data)

    def handle_endtag(self, tag):
        if tag == "select" and self._select is not None:
            chosen = next(
                (v for v, selected in self._options if selected), self._options[0][0] if self._options else ""
            )
            self.fields.append((self._select, chosen))
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def form_state(html: str) -> dict[str, list[str]]:
    parser = _FormState()
    parser.feed(html)
    data: dict[str, list[str]] = {}
    for name, value in parser.fields:
        data.setdefault(name, []).append(value)
    return data


def builder_post(*nodes: tuple, name: str = "Engaged Poles", **extra) -> dict:
    """Form fields for a tree given as (id, parent, type, {fields}) rows in document order."""
    data: dict[str, list[str] | str] = {"name": name, "description": "", "kind": "dynamic", "nodes": []}
    for node_id, parent, node_type, fields in nodes:
        data["nodes"].append(node_id)
        data[f"{node_id}-parent"] = parent
        data[f"{node_id}-type"] = node_type
        for key, value in fields.items():
            data[f"{node_id}-{key}"] = value
    data.update(extra)
    return data


NESTED_TREE_FORM = (
    ("r", "", "group", {"match": "all"}),
    ("c1", "r", "condition", {"kind": "field", "field": "country", "op": "in", "value": "PL, DE"}),
    ("g1", "r", "group", {"match": "any"}),
    (
        "c2",
        "g1",
        "condition",
        {"kind": "attribute", "attribute": "tier", "value_type": "text", "op": "eq", "value": "gold"},
    ),
    (
        "c3",
        "g1",
        "condition",
        {
            "kind": "activity",
            "activity": "message.clicked",
            "channel": "email",
            "campaign": "",
            "min_count": "2",
            "within_days": "30",
            "performed": "true",
        },
    ),
    ("g2", "r", "group", {"match": "all", "negate": "on"}),
    ("c4", "g2", "condition", {"kind": "consent", "channel": "sms", "consent": "opted_out"}),
    ("c5", "r", "condition", {"kind": "field", "field": "orders_count", "op": "between", "value": "1", "value2": "5"}),
)
NESTED_TREE = {
    "all": [
        {"field": "country", "op": "in", "value": ["PL", "DE"]},
        {
            "any": [
                {"attribute": "tier", "op": "eq", "value": "gold"},
                {
                    "activity": "message.clicked",
                    "channel": "email",
                    "min_count": 2,
                    "within_days": 30,
                    "performed": True,
                },
            ]
        },
        {"not": {"consent": "sms", "op": "eq", "value": "opted_out"}},
        {"field": "orders_count", "op": "between", "value": [1, 5]},
    ]
}


def test_builder_form_fields_become_the_saved_rule_tree(marketer_client):
    response = marketer_client.post(reverse("segments:new"), builder_post(*NESTED_TREE_FORM))

    segment = Segment.objects.get(name="Engaged Poles")
    assert response.status_code == 302
    assert response["Location"] == reverse("segments:detail", args=[segment.pk])
    assert segment.kind == Segment.Kind.DYNAMIC
    assert segment.rules == NESTED_TREE


def _every_kind_of_condition() -> dict:
    from customers.models import Persona

    Persona.objects.create(
        name="Bargain hunter", slug="bargain-hunter", rules={"all": [{"field": "country", "op": "is_set"}]}
    )
    other = SegmentFactory(name="Other")
    campaign = CampaignFactory(name="Spring sale", segment=other)
    return {
        "any": [
            {"field": "last_purchase_at", "op": "gte", "value": "2025-06-01T10:00:00+02:00"},
            {"field": "created_at", "op": "between", "value": ["2024-01-01", "2024-12-31"]},
            {"field": "last_engaged_email_at", "op": "within_last_days", "value": 30},
            {"field": "email", "op": "is_set"},
            {"field": "lifetime_value", "op": "gte", "value": 99.5},
            {"attribute": "vip", "op": "eq", "value": True},
            {"attribute": "joined", "op": "before_last_days", "value": 365},
            {"attribute": "score", "op": "in", "value": [1, 2.5]},
            {"attribute": "code", "op": "eq", "value": "7"},
            {"persona": "bargain-hunter"},
            {"segment": other.pk},
            {"activity": "purchase", "campaign": campaign.pk, "performed": False},
            {"not": {"not": {"consent": "email", "op": "eq", "value": "unknown"}}},
        ]
    }


@pytest.mark.parametrize("tree", ["nested", "every kind"])
def test_a_saved_tree_survives_opening_and_saving_the_edit_page_unchanged(marketer_client, tree):
    rules = NESTED_TREE if tree == "nested" else _every_kind_of_condition()
    segment = SegmentFactory(name="Round trip", rules=rules)

    page = marketer_client.get(reverse("segments:edit", args=[segment.pk]))
    assert page.status_code == 200
    data = form_state(page.content.decode())
    assert data["name"] == ["Round trip"]
    response = marketer_client.post(reverse("segments:edit", args=[segment.pk]), data)

    assert response.status_code == 302, response.content.decode()[:3000]
    segment.refresh_from_db()
    assert segment.rules == rules


def test_new_segment_page_starts_with_one_condition_and_a_live_preview(marketer_client):
    CustomerFactory(country="PL")
    body = marketer_client.get(reverse("segments:new")).content.decode()

    assert 'id="builder-tree"' in body
    assert body.count('data-testid="rule-condition"') == 1
    assert 'hx-post="/segments/builder/preview/"' in body
    assert 'data-testid="preview"' in body
    # A blank first condition is not shown as a mistake before the marketer typed anything.
    assert "Pick a field and enter a value" in body
    assert 'data-testid="preview-error"' not in body


def test_preview_fragment_counts_and_samples_the_unsaved_tree(marketer_client):
    inside = CustomerFactory(first_name="Ola", country="PL", attributes={"tier": "gold"})
    CustomerFactory(first_name="Hans", country="DE", attributes={"tier": "gold"})
    data = builder_post(
        ("r", "", "group", {"match": "all"}),
        ("c1", "r", "condition", {"kind": "field", "field": "country", "op": "eq", "value": "PL"}),
        (
            "c2",
            "r",
            "condition",
            {"kind": "attribute", "attribute": "tier", "value_type": "text", "op": "eq", "value": "gold"},
        ),
    )

    response = marketer_client.post(reverse("segments:builder_preview"), data, **HTMX)

    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith("<section")  # a fragment, not a page
    assert 'data-testid="preview-count">1<' in body
    assert reverse("customers:detail", args=[inside.pk]) in body
    assert "Hans" not in body
    assert "&quot;value&quot;: &quot;gold&quot;" in body  # the JSON view, swapped out of band
    assert Segment.objects.count() == 0  # previewing saves nothing


def test_a_bad_value_is_shown_inline_next_to_its_condition(marketer_client):
    data = builder_post(
        ("r", "", "group", {"match": "all"}),
        ("c1", "r", "condition", {"kind": "field", "field": "country", "op": "eq", "value": "PL"}),
        ("c2", "r", "condition", {"kind": "field", "field": "orders_count", "op": "gt", "value": "lots"}),
    )

    body = marketer_client.post(reverse("segments:builder_preview"), data, **HTMX).content.decode()

    assert 'data-testid="preview-error"' in body
    assert 'id="err-c2" role="alert" hx-swap-oob="true">“lots” is not a number.<' in body
    assert 'id="err-c1" role="alert" hx-swap-oob="true"><' in body  # the good condition's slot is cleared


def test_a_rule_language_error_lands_on_the_node_its_path_names(marketer_client):
    data = builder_post(
        ("r", "", "group", {"match": "all"}),
        ("c1", "r", "condition", {"kind": "field", "field": "country", "op": "eq", "value": "PL"}),
        ("g1", "r", "group", {"match": "any"}),
        (
            "c2",
            "g1",
            "condition",
            {"kind": "field", "field": "orders_count", "op": "between", "value": "9", "value2": "2"},
        ),
    )

    body = marketer_client.post(reverse("segments:builder_preview"), data, **HTMX).content.decode()

    assert "all[1].any[0].value: &#x27;between&#x27; needs low &lt;= high" in body
    assert 'id="err-c2" role="alert" hx-swap-oob="true">&#x27;between&#x27; needs low &lt;= high<' in body


def test_an_empty_group_is_reported_on_the_group(marketer_client):
    data = builder_post(
        ("r", "", "group", {"match": "all"}),
        ("c1", "r", "condition", {"kind": "field", "field": "country", "op": "eq", "value": "PL"}),
        ("g1", "r", "group", {"match": "any"}),
    )

    body = marketer_client.post(reverse("segments:builder_preview"), data, **HTMX).content.decode()

    assert 'id="err-g1" role="alert" hx-swap-oob="true">This group is empty' in body


def test_adding_and_removing_nodes_re_renders_the_builder_with_the_preview_out_of_band(marketer_client):
    CustomerFactory(country="PL")
    base = (
        ("r", "", "group", {"match": "all"}),
        ("c1", "r", "condition", {"kind": "field", "field": "country", "op": "eq", "value": "PL"}),
    )

    added = marketer_client.post(
        reverse("segments:builder_update"), builder_post(*base, _action="add_group", _target="r"), **HTMX
    ).content.decode()
    assert added.lstrip().startswith('<div id="builder-tree"')
    assert added.count('data-testid="rule-group"') == 2
    assert added.count('data-testid="rule-condition"') == 2
    assert 'id="preview" class="card preview-card" data-testid="preview" aria-live="polite" hx-swap-oob="true"' in added
    assert 'value="PL"' in added  # what was typed survives the re-render

    removed = marketer_client.post(
        reverse("segments:builder_update"), builder_post(*base, _action="remove", _target="c1"), **HTMX
    ).content.decode()
    assert removed.count('data-testid="rule-condition"') == 0
    assert "This group is empty" in removed


def test_picking_a_number_field_offers_number_operators_and_inputs(marketer_client):
    data = builder_post(
        ("r", "", "group", {"match": "all"}),
        ("c1", "r", "condition", {"kind": "field", "field": "orders_count", "op": "contains", "value": "x"}),
    )

    body = marketer_client.post(
        reverse("segments:builder_update"), {**data, "_action": "refresh"}, **HTMX
    ).content.decode()

    assert '<option value="contains"' not in body
    assert '<option value="between"' in body
    assert '<option value="eq" selected>is</option>' in body  # the operator fell back to one that applies
    assert 'type="number"' in body


def test_an_auto_typed_attribute_compares_as_that_attribute_usually_is(marketer_client):
    CustomerFactory(attributes={"score": 12, "zip": "01234"})
    data = builder_post(
        ("r", "", "group", {"match": "all"}),
        (
            "c1",
            "r",
            "condition",
            {"kind": "attribute", "attribute": "score", "value_type": "auto", "op": "gt", "value": "10"},
        ),
        (
            "c2",
            "r",
            "condition",
            {"kind": "attribute", "attribute": "zip", "value_type": "auto", "op": "eq", "value": "01234"},
        ),
        (
            "c3",
            "r",
            "condition",
            {"kind": "attribute", "attribute": "new", "value_type": "auto", "op": "in", "value": "1, x"},
        ),
        (
            "c4",
            "r",
            "condition",
            {"kind": "attribute", "attribute": "code", "value_type": "text", "op": "eq", "value": "7"},
        ),
    )

    response = marketer_client.post(reverse("segments:new"), data)

    assert response.status_code == 302
    assert Segment.objects.get().rules == {
        "all": [
            {"attribute": "score", "op": "gt", "value": 10},
            {"attribute": "zip", "op": "eq", "value": "01234"},
            {"attribute": "new", "op": "in", "value": [1, "x"]},
            {"attribute": "code", "op": "eq", "value": "7"},  # an explicit type wins
        ]
    }


def test_saving_invalid_rules_keeps_the_form_and_names_the_problem(marketer_client):
    data = builder_post(
        ("r", "", "group", {"match": "all"}),
        ("c1", "r", "condition", {"kind": "persona", "persona": "ghost"}),
    )

    response = marketer_client.post(reverse("segments:new"), data)

    body = response.content.decode()
    assert response.status_code == 400
    assert "The segment was not saved." in body
    assert "all[0].persona: unknown persona &#x27;ghost&#x27;" in body
    assert 'value="Engaged Poles"' in body
    assert not Segment.objects.exists()


def test_a_duplicate_name_is_refused_with_the_field_named(marketer_client):
    SegmentFactory(name="Engaged Poles")
    response = marketer_client.post(reverse("segments:new"), builder_post(*NESTED_TREE_FORM))
    assert response.status_code == 400
    assert "Name: Segment with this Name already exists." in response.content.decode()


def test_editing_a_segment_to_refer_to_itself_is_a_cycle(marketer_client):
    segment = SegmentFactory(name="Loop")
    data = builder_post(
        ("r", "", "group", {"match": "all"}),
        ("c1", "r", "condition", {"kind": "segment", "segment": str(segment.pk)}),
        name="Loop",
        segment=str(segment.pk),
    )

    response = marketer_client.post(reverse("segments:edit", args=[segment.pk]), data)

    assert response.status_code == 400
    assert "segment cycle" in response.content.decode()
    segment.refresh_from_db()
    assert segment.rules == {"all": [{"field": "country", "op": "eq", "value": "PL"}]}


def test_a_static_segment_is_created_without_rules(marketer_client):
    response = marketer_client.post(
        reverse("segments:new"), builder_post(*NESTED_TREE_FORM, name="VIP list", kind="static")
    )
    segment = Segment.objects.get(name="VIP list")
    assert response.status_code == 302
    assert segment.kind == Segment.Kind.STATIC
    assert segment.rules == {}


def test_analysts_read_segments_but_cannot_build_them(analyst_client):
    segment = SegmentFactory()
    assert analyst_client.get(reverse("segments:detail", args=[segment.pk])).status_code == 200
    assert analyst_client.get(reverse("segments:new")).status_code == 403
    assert analyst_client.get(reverse("segments:edit", args=[segment.pk])).status_code == 403
    assert analyst_client.post(reverse("segments:builder_preview"), builder_post(*NESTED_TREE_FORM)).status_code == 403
    listing = analyst_client.get(reverse("segments:list")).content.decode()
    assert reverse("segments:new") not in listing


def test_segment_page_reads_the_rules_as_sentences(marketer_client):
    campaign = CampaignFactory(name="Spring sale")
    segment = SegmentFactory(
        rules={
            "all": [
                {"field": "country", "op": "eq", "value": "PL"},
                {"activity": "message.clicked", "channel": "email", "campaign": campaign.pk, "within_days": 30},
                {"not": {"consent": "sms", "op": "eq", "value": "opted_out"}},
            ]
        }
    )

    body = marketer_client.get(reverse("segments:detail", args=[segment.pk])).content.decode()

    assert "Country is “PL”" in body
    assert "Performed message.clicked on Email in campaign “Spring sale” in the last 30 days" in body
    assert "SMS consent is opted out" in body
    assert reverse("segments:edit", args=[segment.pk]) in body


def test_why_in_or_out_is_a_fragment_for_htmx_and_a_page_otherwise(marketer_client):
    segment = SegmentFactory(
        rules={
            "all": [{"field": "country", "op": "eq", "value": "PL"}, {"field": "city", "op": "eq", "value": "Gdansk"}]
        }
    )
    customer = CustomerFactory(first_name="Ola", last_name="Nowak", country="PL", city="Krakow")
    url = reverse("segments:explain", args=[segment.pk, customer.pk])

    fragment = marketer_client.get(url, **HTMX)
    body = fragment.content.decode()
    assert "<html" not in body
    assert 'data-testid="explain" data-matched="false"' in body
    assert 'data-matched="true" data-testid="rule-node"' in body  # country is PL
    assert body.count('data-matched="false" data-testid="rule-node"') == 2  # the group and the city
    assert "Ola Nowak</a></strong>\n      is not in" in body
    assert "HX-Request" in fragment["Vary"]

    page = marketer_client.get(url).content.decode()
    assert "<html" in page
    assert 'data-testid="explain"' in page


def test_why_in_or_out_for_a_static_list_says_whether_they_were_uploaded(marketer_client):
    segment = SegmentFactory(kind=Segment.Kind.STATIC, rules={})
    member, stranger = CustomerFactory(), CustomerFactory()
    SegmentMember.objects.create(segment=segment, customer=member)

    assert (
        "On the uploaded list since"
        in marketer_client.get(reverse("segments:explain", args=[segment.pk, member.pk]), **HTMX).content.decode()
    )
    assert (
        "Not on the uploaded list."
        in marketer_client.get(reverse("segments:explain", args=[segment.pk, stranger.pk]), **HTMX).content.decode()
    )


def test_why_in_or_out_says_an_erased_customer_is_in_no_segment(marketer_client):
    # Erased customers keep their activity rows, which a rule could still match.
    customer = CustomerFactory(country="PL")
    Activity.objects.create(customer=customer, kind="message.clicked", channel="email")
    dynamic = SegmentFactory(rules={"activity": "message.clicked"})
    static = SegmentFactory(kind=Segment.Kind.STATIC, rules={})
    SegmentMember.objects.create(segment=static, customer=customer)
    Customer.objects.filter(pk=customer.pk).update(erased_at="2025-01-01T00:00:00Z")

    for segment in (dynamic, static):
        body = marketer_client.get(reverse("segments:explain", args=[segment.pk, customer.pk]), **HTMX).content.decode()
        assert 'data-testid="explain" data-matched="false"' in body
        assert "erased customers are in no segment" in body
        assert 'data-testid="rule-node"' not in body


def test_explain_search_offers_matching_customers(marketer_client):
    segment = SegmentFactory()
    ola = CustomerFactory(first_name="Ola", last_name="Wrona")
    CustomerFactory(first_name="Hans", last_name="Weber")

    body = marketer_client.get(
        reverse("segments:explain_search", args=[segment.pk]), {"q": "wrona"}, **HTMX
    ).content.decode()

    assert reverse("segments:explain", args=[segment.pk, ola.pk]) in body
    assert "Hans" not in body


def test_uploading_a_list_in_the_page_reports_unknown_rows_and_updates_the_members(marketer_client):
    segment = SegmentFactory(kind=Segment.Kind.STATIC, rules={})
    known = CustomerFactory(email="ola@example.com", first_name="Ola")
    upload = io.BytesIO(b"email\nola@example.com\nnobody@example.com\nnot-an-email\n")
    upload.name = "list.csv"

    response = marketer_client.post(
        reverse("segments:upload", args=[segment.pk]), {"file": upload, "mode": "append"}, **HTMX
    )

    body = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="upload-report"' in body
    assert "no customer with email nobody@example.com" in body
    assert '<td class="num mono">4</td><td class="mono">not-an-email</td>' in body
    assert 'id="members-card"' in body and 'hx-swap-oob="true"' in body
    assert reverse("customers:detail", args=[known.pk]) in body
    assert list(segment.members.values_list("customer_id", flat=True)) == [known.pk]


def test_uploading_a_file_without_an_identity_column_changes_nothing(marketer_client):
    segment = SegmentFactory(kind=Segment.Kind.STATIC, rules={})
    SegmentMember.objects.create(segment=segment, customer=CustomerFactory())
    upload = io.BytesIO(b"name,city\nOla,Krakow\n")
    upload.name = "list.csv"

    response = marketer_client.post(reverse("segments:upload", args=[segment.pk]), {"file": upload, "mode": "replace"})

    assert response.status_code == 400
    assert "No identity column found" in response.content.decode()
    assert segment.members.count() == 1


def test_export_link_streams_the_members_as_csv(marketer_client):
    segment = SegmentFactory()
    CustomerFactory(email="ola@example.com", country="PL")
    CustomerFactory(email="hans@example.com", country="DE")

    response = marketer_client.get(reverse("segments:export", args=[segment.pk]))

    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f'filename="segment-{segment.pk}-' in response["Content-Disposition"]
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0].startswith("id,email,phone,external_id")
    assert len(lines) == 2 and "ola@example.com" in lines[1]


def test_a_segment_a_campaign_uses_cannot_be_deleted(marketer_client):
    campaign = CampaignFactory(name="Spring sale")
    unused = SegmentFactory(name="Unused")

    refused = marketer_client.post(reverse("segments:delete", args=[campaign.segment.pk]), follow=True)
    assert "still used by campaign “Spring sale”" in refused.content.decode()
    assert Segment.objects.filter(pk=campaign.segment.pk).exists()

    marketer_client.post(reverse("segments:delete", args=[unused.pk]))
    assert not Segment.objects.filter(pk=unused.pk).exists()


def test_attribute_keys_come_from_the_newest_customers_with_their_usual_type(django_assert_num_queries):
    CustomerFactory(attributes={"old_key": "x"})
    CustomerFactory(attributes={"tier": "gold", "score": 3, "vip": False, "joined": "2024-05-01"})
    CustomerFactory(attributes={"tier": "silver", "score": 7.5})

    with django_assert_num_queries(1):
        keys = dict(attribute_keys(sample=2))

    assert keys == {"tier": "text", "score": "number", "vip": "boolean", "joined": "datetime"}


def test_activity_kind_suggestions_include_custom_kinds_seen_recently(marketer_client):
    customer = CustomerFactory()
    Activity.objects.create(customer=customer, kind="order.refunded")
    body = marketer_client.get(reverse("segments:new")).content.decode()
    assert '<option value="message.clicked">' in body
    assert '<option value="order.refunded">' in body
