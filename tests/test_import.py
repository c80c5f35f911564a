"""CSV import of customers: up-front file checks, per-row validation, upsert by identity, consents,
the Celery task's progress, the API, the pages and the management command (SQLite and PostgreSQL).
"""

from __future__ import annotations

import csv
import io
import json
import random
import string

import phonenumbers
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from config.roles import ANALYST, MARKETER
from customers import imports
from customers.identity import _normalize_email_slow, _normalize_phone_slow, normalize_email, normalize_phone
from customers.imports import ImportRejected, csv_inspect, import_create, import_run, mapping_suggest, mapping_validate
from customers.models import Activity, Consent, Customer, ImportJob, Persona
from customers.services import consent_current, consent_record
from tests.factories import CustomerFactory, UserFactory
from tests.factories import api_client as api

HEADER = "Email,Phone,First name,Country,City,Time zone,Tier,Orders,Email opt-in\n"


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def _file(text: str | bytes, name: str = "customers.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode() if isinstance(text, str) else text, content_type="text/csv")


def run_import(text: str, mapping: dict | None = None) -> ImportJob:
    job = import_create(file=_file(text), name="customers.csv", mapping=mapping, start=True, enqueue=False)
    return import_run(job_id=job.pk)


def errors_of(job: ImportJob) -> dict[int, list[str]]:
    """The errors CSV as {line: [reason, *original values]}."""
    assert job.errors_file, "expected an errors file"
    with job.errors_file.open("rb") as handle:
        rows = list(csv.reader(io.StringIO(handle.read().decode())))
    assert rows[0][:2] == ["line", "reason"]
    return {int(row[0]): row[1:] for row in rows[1:]}


@pytest.fixture
def small_chunks(monkeypatch):
    """Two rows per chunk, so cross-chunk behaviour shows with a handful of rows."""
    monkeypatch.setattr(imports, "PG_CHUNK_ROWS", 2)
    monkeypatch.setattr(imports, "SQLITE_CHUNK_ROWS", 2)


# --- Fast identity paths give exactly the slow paths' results --------------------------------------


def _outcome(function, *args, **kwargs):
    try:
        return ("ok", function(*args, **kwargs))
    except ValidationError as exc:
        return ("error", exc.messages)


def _phone_inputs(rng: random.Random) -> list[tuple[str, str | None]]:
    inputs = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        code = str(phonenumbers.country_code_for_region(region))
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
            digits = e164[1 + len(code) :]
            inputs += [
                (e164, None),
                (phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL), region),
                (national, region),
                (digits, region),
                (digits, rng.choice(["PL", "US", "GB", None])),
                (code + digits, region),
                ("0" + digits, region),
            ]
            # With the national prefix (8 in Russia, 1 in the US, 06 in Hungary...), nationally and after "+".
            prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
            if prefix:
                inputs += [(prefix + digits, region), ("+" + code + prefix + digits, None)]
            for _ in range(6):  # neighbours: same prefix, other digits and lengths
                cut = rng.randint(0, len(digits))
                tail = "".join(rng.choices(string.digits, k=rng.randint(0, 4)))
                mutated = digits[:cut] + tail
                inputs += [("+" + code + mutated, None), (mutated, region), (" ".join(mutated), region)]
    for _ in range(3000):
        digits = "".join(rng.choices(string.digits, k=rng.randint(1, 18)))
        inputs += [("+" + digits, None), (digits, rng.choice(sorted(phonenumbers.SUPPORTED_REGIONS)))]
    inputs += [("+1 202 555 0123", None), ("+48 600 100 200", "pl"), ("600100200", "XX"), ("+0048600100200", None)]
    return [(raw, region) for raw, region in inputs if raw.strip()]


def test_phone_fast_path_gives_exactly_the_phonenumbers_result():
    fast_hits = 0
    inputs = _phone_inputs(random.Random(20261123))
    for raw, region in inputs:
        expected = _outcome(_normalize_phone_slow, raw.strip(), region)
        assert _outcome(normalize_phone, raw, region=region) == expected, (raw, region)
        fast = imports_fast_phone(raw, region)
        if fast is not None:
            fast_hits += 1
            assert expected == ("ok", fast), (raw, region)
    # The comparison means something only if the fast path decided a good share of them.
    assert fast_hits > len(inputs) // 10


def test_national_prefix_stripping_mirrors_phonenumbers_parse():
    from customers.identity import _default_region

    rng = random.Random(31)
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        default = _default_region(region)
        if default is None or not default.parse.simple_prefix:
            continue
        prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix_for_parsing
        for _ in range(150):
            number = prefix + "".join(rng.choices(string.digits, k=rng.randint(1, 13)))
            if (default.idd and default.idd.match(number)) or number.startswith(default.code_digits):
                continue  # parse() reads these as international numbers; the fast path leaves them to it
            try:
                parsed = phonenumbers.parse(number, region)
            except phonenumbers.NumberParseException:
                continue
            assert default.parse.strip(number) == phonenumbers.national_significant_number(parsed), (number, region)
            checked += 1
    assert checked > 1000


def imports_fast_phone(raw: str, region: str | None) -> str | None:
    from customers.identity import _phone_fast

    return _phone_fast(raw.strip(), region)


def _email_inputs(rng: random.Random) -> list[str]:
    local = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-.\"\\ "
    domain = string.ascii_letters + string.digits + "-."
    inputs = []
    for _ in range(6000):
        user = "".join(rng.choices(local if rng.random() < 0.3 else string.ascii_lowercase + ".", k=rng.randint(0, 12)))
        labels = ["".join(rng.choices(domain, k=rng.randint(0, 12))) for _ in range(rng.randint(1, 3))]
        tld = rng.choice(
            ["com", "pl", "co.uk", "x", "c0m", "-com", "com-", "xn--p1ai", "xn--", "", "localhost", "a" * 64]
        )
        at = rng.choice(["@", "@", "@", "@@", ""])
        inputs.append(f"{user}{at}{'.'.join(labels)}.{tld}".rstrip("."))
    inputs += [
        "Anna.Nowak@Example.COM",
        "anna@localhost",
        '"anna nowak"@example.com',
        "anna@[127.0.0.1]",
        "anna@bücher.de",
        "ánna@example.com",
        "a@" + "b" * 63 + ".com",
        "a@" + "b" * 64 + ".com",
        "x" * 310 + "@example.com",
        "anna@example.com.",
        "anna@-example.com",
        "anna..nowak@example.com",
        ".anna@example.com",
    ]
    return inputs


def test_email_fast_path_gives_exactly_django_validate_email_result():
    for raw in _email_inputs(random.Random(7)):
        expected = _outcome(_normalize_email_slow, raw, raw.strip().lower()) if raw.strip() else ("ok", None)
        assert _outcome(normalize_email, raw) == expected, raw


# --- Up-front checks: the file or the mapping is refused before any row is touched -----------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 40, "Excel workbook or ZIP"),
        (b"email,phone\nanna@example.com,+48600100200\nbob\x00@example.com,\n", "line 3 contains a NUL byte"),
        ("email,name\nanna@example.com,Zoë\n".encode("latin-1"), "not UTF-8 text (line 2"),
        ("email,name\n".encode("utf-16"), "UTF-16"),
        (b"\n\n", "no header row"),
        (b"anna@example.com,Anna\nbob@example.com,Bob\n", "looks like data"),
        (b"email,phone,email\na@example.com,,b@example.com\n", "appears twice in the header row (columns 1 and 3)"),
        (b'email,name\nanna@example.com,"Anna\nbob@example.com,Bob\n', "Line 2 is not valid CSV"),
        (b'email,name\nanna@example.com,"Anna" Nowak\n', "Line 2 is not valid CSV"),
        (b"email,name\n", "no data rows"),
    ],
)
def test_a_file_that_is_not_a_usable_csv_is_refused_naming_the_problem(db, content, needle):
    with pytest.raises(ImportRejected) as exc:
        import_create(file=_file(content), name="x.csv", start=True, enqueue=False)
    assert needle in exc.value.message
    assert not ImportJob.objects.exists()


def test_a_mapping_without_an_identity_column_is_refused(db):
    with pytest.raises(ImportRejected) as exc:
        import_create(
            file=_file("email,name\nanna@example.com,Anna\n"),
            name="x.csv",
            mapping={"email": "attributes.email"},
            start=True,
            enqueue=False,
        )
    assert "at least one column to an identity" in exc.value.message
    assert not ImportJob.objects.exists()


@pytest.mark.parametrize(
    ("mapping", "needle"),
    [
        ({"Email": "email", "Mail": "email"}, "Columns 'Email' and 'Mail' both map to email"),
        ({"Email": "email", "Fax": "phone"}, "The file has no column 'Fax'"),
        ({"Email": "emial"}, "unknown target 'emial'"),
        ({"Email": "email", "Mail": "consent.fax"}, "unknown consent channel 'fax'"),
        ({"Email": "email", "Mail": 'attributes.say "hi"'}, "cannot contain"),
        (["email"], "must be an object"),
    ],
)
def test_mapping_validation_names_the_problem(mapping, needle):
    with pytest.raises(ImportRejected) as exc:
        mapping_validate(headers=["Email", "Mail"], mapping=mapping)
    assert needle in exc.value.message


def test_suggested_mapping_reads_common_column_names():
    headers = ["E-mail Address", "Mobile", "First Name", "Surname", "Country code", "Time zone", "SMS opt-in",
               "Newsletter consent", "consent.whatsapp", "Loyalty Tier", "", "email"]  # fmt: skip
    assert mapping_suggest(headers) == {
        "E-mail Address": "email",
        "Mobile": "phone",
        "First Name": "first_name",
        "Surname": "last_name",
        "Country code": "country",
        "Time zone": "timezone",
        "SMS opt-in": "consent.sms",
        "Newsletter consent": "consent.email",
        "consent.whatsapp": "consent.whatsapp",
        "Loyalty Tier": "attributes.loyalty_tier",
        "email": "attributes.email",  # "email" is taken by the first column
    }


def test_inspection_counts_rows_skips_blank_lines_and_reads_semicolons():
    inspection = csv_inspect(file=_file("\ufeffemail;name\nanna@example.com;Anna\n\n;\nbob@example.com;Bob\n"))
    assert inspection.headers == ["email", "name"]
    assert inspection.delimiter == ";"
    assert inspection.total_rows == 2
    assert inspection.rows == [["anna@example.com", "Anna"], ["bob@example.com", "Bob"]]


def test_country_codes_are_the_249_iso_3166_codes():
    assert len(imports.COUNTRY_CODES) == 249
    assert {"PL", "GB", "US", "AQ"} <= imports.COUNTRY_CODES
    assert "UK" not in imports.COUNTRY_CODES


# --- Rows: good ones in, bad ones reported, nothing else changed -------------------------------------


def test_good_rows_are_imported_and_bad_rows_reported_with_line_numbers_and_reasons(db):
    kept = CustomerFactory(email="kept@example.com", phone="+48600999000", first_name="Kept", city="Lublin")
    other = CustomerFactory(email="other@example.com", phone="+48600999001", first_name="Other")
    before = {c.pk: (c.email, c.phone, c.first_name, c.city, c.attributes) for c in Customer.objects.all()}
    job = run_import(
        HEADER
        + "anna@example.com,+48600100200,Anna,PL,Kraków,Europe/Warsaw,gold,3,yes\n"  # 2 good
        + "not-an-email,+48600100201,Bob,PL,,,,,\n"  # 3 bad email
        + "cara@example.com,+48 12345,Cara,PL,,,,,\n"  # 4 bad phone
        + "dan@example.com,,Dan,PL,,Mars/Olympus,,,\n"  # 5 bad time zone
        + "ANNA@example.com,,Anna again,PL,,,,,\n"  # 6 duplicate of line 2
        + "kept@example.com,+48600999001,Mixed,PL,,,,,\n"  # 7 identity conflict
        + "eve@example.com,600 100 202,Eve,PL,Gdańsk,,silver,,no\n"  # 8 good, national number read in PL
        + "fay@example.com,,Fay,XX,,,,,\n"  # 9 bad country
        + "gus@example.com,,Gus,PL,,,,,maybe\n"  # 10 bad consent value
        + ",,Nobody,PL,,,,,\n"  # 11 no identity
        + "too,few\n"  # 12 wrong number of values
    )
    assert job.status == ImportJob.Status.DONE
    assert (job.created_count, job.updated_count, job.rejected_count) == (2, 0, 9)
    assert job.processed_rows == job.total_rows == 11

    anna = Customer.objects.get(email="anna@example.com")
    assert (anna.phone, anna.first_name, anna.city, anna.timezone) == (
        "+48600100200",
        "Anna",
        "Kraków",
        "Europe/Warsaw",
    )
    assert anna.attributes == {"tier": "gold", "orders": 3}
    assert Customer.objects.get(email="eve@example.com").phone == "+48600100202"

    errors = errors_of(job)
    assert sorted(errors) == [3, 4, 5, 6, 7, 9, 10, 11, 12]
    assert "'not-an-email' is not a valid email address" in errors[3][0]
    assert errors[3][1:4] == ["not-an-email", "+48600100201", "Bob"]  # the row as it was
    assert "Phone: '+48 12345' is not a valid phone number" in errors[4][0]
    assert "'Mars/Olympus' is not an IANA time zone" in errors[5][0]
    assert errors[6][0] == "duplicate: Email 'anna@example.com' is already on line 2"
    assert errors[7][0].startswith(
        f"identity conflict: Email matches customer #{kept.pk}, Phone matches customer #{other.pk}"
    )
    assert "'XX' is not an ISO 3166-1 alpha-2 country code" in errors[9][0]
    assert "'maybe' is not a consent value" in errors[10][0]
    assert errors[11][0] == "no identity: Email, Phone are all empty"
    assert errors[12][0] == "has 2 values but the header has 9 columns"
    # Nothing else changed: the conflicting row merged nothing and touched neither customer.
    for customer in Customer.objects.filter(pk__in=before):
        assert (customer.email, customer.phone, customer.first_name, customer.city, customer.attributes) == before[
            customer.pk
        ]
    assert Customer.objects.count() == 4


def test_reimport_updates_the_matched_customer_with_the_given_cells_and_merges_attributes(db):
    customer = CustomerFactory(
        email="anna@example.com", phone="+48600100200", first_name="Anna", city="Kraków",
        attributes={"tier": "silver", "vip": True, "since": "2019-04-01"},
    )  # fmt: skip
    job = run_import(
        'Phone,First name,City,Tier,Orders,VIP,Note\n+48 600 100 200,Ania,,gold,12,false,"likes, commas"\n',
        mapping={"Note": "attributes.note"},
    )
    assert (job.created_count, job.updated_count, job.rejected_count) == (0, 1, 0)
    customer.refresh_from_db()
    assert customer.first_name == "Ania"
    assert customer.city == "Kraków"  # an empty cell never erases
    assert customer.email == "anna@example.com"
    assert customer.attributes == {
        "tier": "gold",
        "vip": False,
        "since": "2019-04-01",
        "orders": 12,
        "note": "likes, commas",
    }


def test_importing_the_same_file_twice_creates_nothing_the_second_time(db):
    text = HEADER + "anna@example.com,+48600100200,Anna,PL,Kraków,Europe/Warsaw,gold,3,yes\n"
    first = run_import(text)
    stamp = Customer.objects.get().updated_at
    second = run_import(text)
    assert (first.created_count, second.created_count, second.updated_count) == (1, 0, 1)
    assert Customer.objects.count() == 1
    assert Customer.objects.get().updated_at == stamp  # nothing changed, nothing rewritten


def test_consent_columns_append_import_rows_only_when_the_state_changes(db):
    anna = CustomerFactory(email="anna@example.com")
    bob = CustomerFactory(email="bob@example.com")
    consent_record(customer=anna, channel="email", status="opted_in", source=Consent.Source.FORM)
    consent_record(customer=bob, channel="email", status="opted_in", source=Consent.Source.FORM)
    activities_before = Activity.objects.count()

    job = run_import(
        "email,Email opt-in,SMS consent\nanna@example.com,yes,1\nbob@example.com,no,\nnew@example.com,true,0\n"
    )

    assert job.rejected_count == 0
    new = Customer.objects.get(email="new@example.com")
    imported = Consent.objects.filter(source=Consent.Source.IMPORT)
    assert sorted((c.customer.email, c.channel, c.status) for c in imported) == [
        ("anna@example.com", "sms", "opted_in"),
        ("bob@example.com", "email", "opted_out"),
        ("new@example.com", "email", "opted_in"),
        ("new@example.com", "sms", "opted_out"),
    ]  # anna's email consent was already opted in: no new row
    assert imported.get(customer=bob).evidence == {"import_job": job.pk, "line": 3}
    assert consent_current(customer=bob, channel="email") == "opted_out"
    changes = Activity.objects.filter(kind=Activity.Kind.CONSENT_CHANGED).order_by("pk")[activities_before:]
    assert sorted((a.customer_id, a.channel, a.properties["from"], a.properties["to"]) for a in changes) == sorted(
        [
            (anna.pk, "sms", "unknown", "opted_in"),
            (bob.pk, "email", "opted_in", "opted_out"),
            (new.pk, "email", "unknown", "opted_in"),
            (new.pk, "sms", "unknown", "opted_out"),
        ]
    )
    assert all(a.properties["source"] == "import" for a in changes)


def test_duplicates_are_found_across_chunks_and_through_different_identities(db, small_chunks):
    existing = CustomerFactory(email="x@example.com", phone="+48600100300", external_id="crm-1")
    job = run_import(
        "email,phone,external_id\n"
        "a@example.com,,\n"  # 2 new
        ",+48600100300,\n"  # 3 matches existing by phone
        "b@example.com,,\n"  # 4 new
        "a@example.com,,\n"  # 5 duplicate of 2, in a later chunk
        ",,crm-1\n"  # 6 same existing customer as line 3, through its external id
    )
    errors = errors_of(job)
    assert (
        errors[5][0]
        == f"duplicate: matches the same customer (#{Customer.objects.get(email='a@example.com').pk}) as line 2"
    )
    assert errors[6][0] == f"duplicate: matches the same customer (#{existing.pk}) as line 3"
    assert (job.created_count, job.updated_count, job.rejected_count) == (2, 1, 2)


def test_two_rows_for_one_existing_customer_in_one_chunk_are_a_duplicate(db):
    existing = CustomerFactory(email="x@example.com", phone="+48600100300")
    job = run_import("email,phone,first_name\nx@example.com,,First\n,+48600100300,Second\n")
    assert errors_of(job)[3][0] == f"duplicate: matches the same customer (#{existing.pk}) as line 2"
    existing.refresh_from_db()
    assert existing.first_name == "First"


def test_erased_customers_are_never_updated(db):
    erased = CustomerFactory(email="gone@example.com", first_name="", erased_at=timezone.now())
    job = run_import("email,first_name\ngone@example.com,Back\n")
    assert errors_of(job)[2][0] == f"customer #{erased.pk} was erased (GDPR) and is never updated"
    erased.refresh_from_db()
    assert erased.first_name == ""


def test_a_value_spanning_lines_keeps_its_row_and_the_line_where_it_starts(db):
    job = run_import('email,note\n"a@example.com","two\nlines"\nbad-email,x\n', mapping={"note": "attributes.note"})
    assert Customer.objects.get().attributes == {"note": "two\nlines"}
    assert list(errors_of(job)) == [4]


def test_personas_are_recomputed_for_the_imported_customers(db):
    persona = Persona.objects.create(
        name="Poles", slug="poles", rules={"all": [{"field": "country", "op": "eq", "value": "PL"}]}
    )
    run_import("email,country\nanna@example.com,PL\nbob@example.com,DE\n")
    assert Customer.objects.get(email="anna@example.com").persona == persona
    assert Customer.objects.get(email="bob@example.com").persona is None


# --- The Celery task: progress as it goes ------------------------------------------------------------


def test_the_task_commits_progress_chunk_by_chunk(db, small_chunks, monkeypatch, django_capture_on_commit_callbacks):
    seen = []
    original = imports._Loader.load

    def load(self, chunk):
        outcome = original(self, chunk)
        seen.append(ImportJob.objects.values_list("status", "processed_rows").get(pk=self.job.pk))
        return outcome

    monkeypatch.setattr(imports._Loader, "load", load)
    with django_capture_on_commit_callbacks(execute=True):
        job = import_create(file=_file("email\na@example.com\nb@example.com\nc@example.com\nd@example.com\nbad\n"),
                            name="x.csv", start=True)  # fmt: skip
    assert seen == [("running", 2), ("running", 4), ("running", 5)]
    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.created_count, job.rejected_count) == ("done", 5, 4, 1)
    assert job.started_at <= job.finished_at


def test_a_redelivered_task_for_a_running_import_fails_it_instead_of_importing_twice(db):
    job = import_create(file=_file("email\na@example.com\n"), name="x.csv", start=True, enqueue=False)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING, processed_rows=0)
    job = import_run(job_id=job.pk)
    assert job.status == ImportJob.Status.FAILED
    assert "import the same file again" in job.error
    assert not Customer.objects.exists()


# --- API -------------------------------------------------------------------------------------------------


def test_api_import_returns_202_then_status_and_the_errors_csv(roles, django_capture_on_commit_callbacks):
    client = api(MARKETER)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/v1/customers/import",
            {
                "file": _file("E-mail,Loyalty\nanna@example.com,gold\nnope,silver\n"),
                "mapping": '{"Loyalty": "attributes.tier"}',
            },
            format="multipart",
        )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued"
    assert body["mapping"] == {"E-mail": "email", "Loyalty": "attributes.tier"}

    status = client.get(f"/api/v1/customers/import/{body['id']}").json()
    assert (status["status"], status["progress"], status["created_count"], status["rejected_count"]) == (
        "done",
        100.0,
        1,
        1,
    )
    assert status["errors_url"].endswith(f"/api/v1/customers/import/{body['id']}/errors")
    errors = client.get(f"/api/v1/customers/import/{body['id']}/errors")
    assert errors.status_code == 200
    assert errors["Content-Type"].startswith("text/csv")
    lines = b"".join(errors.streaming_content).decode().splitlines()
    assert lines[1].startswith("3,E-mail: 'nope' is not a valid email address,nope,silver")
    assert Customer.objects.get().attributes == {"tier": "gold"}


def test_api_accepts_a_text_csv_body(roles, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(MARKETER).post(
            "/api/v1/customers/import?name=crm.csv", b"email\nanna@example.com\n", content_type="text/csv"
        )
    assert response.status_code == 202, response.json()
    assert response.json()["original_name"] == "crm.csv"
    assert Customer.objects.filter(email="anna@example.com").exists()


@pytest.mark.parametrize(
    ("data", "field", "needle"),
    [
        ({"file": _file(b"\x89PNG\r\n\x1a\n\x00\x00")}, "file", "binary"),
        ({"file": _file("name\nAnna\n")}, "mapping", "identity"),
        ({"file": _file("email\na@example.com\n"), "mapping": "{not json"}, "mapping", "Not valid JSON"),
        ({"file": _file("email\na@example.com\n"), "mapping": '{"email": "e-mail"}'}, "mapping", "unknown target"),
        ({}, "file", "multipart field named file"),
    ],
)
def test_api_refuses_bad_uploads_with_400_naming_the_field(roles, data, field, needle):
    response = api(MARKETER).post("/api/v1/customers/import", data, format="multipart")
    assert response.status_code == 400
    assert needle in " ".join(response.json()[field])
    assert not ImportJob.objects.exists()


def test_api_import_is_forbidden_to_analysts_but_they_can_read_jobs(roles):
    client = api(ANALYST)
    response = client.post("/api/v1/customers/import", {"file": _file("email\na@example.com\n")}, format="multipart")
    assert response.status_code == 403
    assert client.get("/api/v1/customers/import").status_code == 200
    assert not ImportJob.objects.exists()


def test_api_errors_of_an_import_without_rejections_is_404(roles):
    job = run_import("email\na@example.com\n")
    response = api(MARKETER).get(f"/api/v1/customers/import/{job.pk}/errors")
    assert response.status_code == 404
    assert api(MARKETER).get("/api/v1/customers/import/999999").status_code == 404


# --- Pages ------------------------------------------------------------------------------------------------


def test_upload_map_and_run_through_the_pages(marketer_client, django_capture_on_commit_callbacks):
    response = marketer_client.post(
        reverse("customers:import-list"),
        {"file": _file("Mail,Mobile,Fav\nanna@example.com,+48600100200,shoes\nbroken,,\n", "crm.csv")},
    )
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("customers:import-mapping", args=[job.pk])
    page = marketer_client.get(response["Location"])
    assert page.status_code == 200
    content = page.content.decode()
    assert 'name="map-0"' in content and "anna@example.com" in content  # select per column, preview rows

    check = marketer_client.post(reverse("customers:import-mapping-check", args=[job.pk]), {"map-0": "", "map-1": ""})
    assert "at least one column to an identity" in check.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        done = marketer_client.post(
            reverse("customers:import-mapping", args=[job.pk]),
            {"map-0": "email", "map-1": "phone", "map-2": "attributes.favourite"},
        )
    assert done["Location"] == reverse("customers:import-detail", args=[job.pk])
    progress = marketer_client.get(reverse("customers:import-progress", args=[job.pk])).content.decode()
    assert 'data-status="done"' in progress and "hx-trigger" not in progress  # finished: polling stops
    assert Customer.objects.get().attributes == {"favourite": "shoes"}
    download = marketer_client.get(reverse("customers:import-errors", args=[job.pk]))
    assert b"broken" in b"".join(download.streaming_content)


def test_progress_card_polls_while_the_import_is_queued_or_running(marketer_client):
    job = import_create(file=_file("email\na@example.com\n"), name="x.csv", start=True, enqueue=False)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING, total_rows=10, processed_rows=4)
    card = marketer_client.get(reverse("customers:import-progress", args=[job.pk])).content.decode()
    assert 'hx-trigger="every 1s"' in card
    assert 'aria-valuenow="4"' in card and "4 of 10 rows (40%)" in card


def test_upload_page_shows_why_a_file_was_refused(marketer_client):
    response = marketer_client.post(reverse("customers:import-list"), {"file": _file(b"\x00\x01\x02", "x.csv")})
    assert response.status_code == 400
    assert "binary" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_mapping_page_keeps_the_choices_and_explains_a_refused_mapping(marketer_client):
    job = import_create(file=_file("a,b\nanna@example.com,x\n"), name="x.csv")
    response = marketer_client.post(
        reverse("customers:import-mapping", args=[job.pk]), {"map-0": "email", "map-1": "email"}
    )
    assert response.status_code == 400
    assert "both map to email" in response.content.decode()
    job.refresh_from_db()
    assert job.status == ImportJob.Status.MAPPING


def test_analysts_see_past_imports_but_cannot_upload(client, roles):
    client.force_login(UserFactory(username="ada", role=ANALYST))
    page = client.get(reverse("customers:import-list"))
    assert page.status_code == 200 and 'data-testid="upload-form"' not in page.content.decode()
    assert client.post(reverse("customers:import-list"), {"file": _file("email\na@example.com\n")}).status_code == 403


# --- Management command ---------------------------------------------------------------------------------


def test_management_command_imports_synchronously_and_prints_the_counts(db, tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text("Email,Segment,Notes\nanna@example.com,b2b,hi\nbad,,\n")
    out = io.StringIO()
    call_command("chorus_import", str(path), "--map", "Segment=attributes.segment", "--map", "Notes=", "--sync",
                 stdout=out, stderr=io.StringIO())  # fmt: skip
    text = out.getvalue()
    assert "1 created, 0 updated, 1 rejected" in text
    assert "'Notes' -> (skipped)" in text
    assert Customer.objects.get().attributes == {"segment": "b2b"}


def test_management_command_refuses_a_bad_file_with_the_reason(db, tmp_path):
    path = tmp_path / "crm.csv"
    path.write_bytes("email\nzoë@example.com\n".encode("latin-1"))
    with pytest.raises(CommandError, match="not UTF-8"):
        call_command("chorus_import", str(path), "--sync", stdout=io.StringIO())
    with pytest.raises(CommandError, match="COLUMN=TARGET"):
        call_command("chorus_import", str(path), "--map", "email", stdout=io.StringIO())


def test_json_attributes_keep_types(db):
    run_import("email,n,f,b,z,s\na@example.com,42,-1.5,TRUE,007,1e5\n", mapping={c: f"attributes.{c}" for c in "nfbzs"})
    assert json.dumps(Customer.objects.get().attributes, sort_keys=True) == json.dumps(
        {"b": True, "f": -1.5, "n": 42, "s": "1e5", "z": "007"}, sort_keys=True
    )
