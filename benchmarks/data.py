"""Deterministic synthetic data, produced as PostgreSQL ``COPY`` text chunks.

Contract:

* Every generator yields ``(text, rows)`` chunks of at most ``CHUNK_ROWS`` rows in
  COPY text format (tab separated, ``\\N`` for NULL, one row per line), so a
  loader can stream any volume with flat memory.
* Output depends only on ``(seed, customers, activities_per_customer, anchor)``:
  each fixed-size block of rows draws from its own ``random.Random`` seeded by the
  block's name, so the same arguments always produce byte-identical data.
* Ids are explicit and dense: customers ``1..N``, consents and activities
  ``1..M``; the loader moves the identity sequences past them afterwards.
* Customer ``id`` order is creation order: ``created_at`` runs from three years
  before ``anchor`` (id 1) to ``anchor`` (id N). Activities fall in the 365 days
  before ``anchor``, in id order, and never before their customer was created;
  older customers have more of them.
* Emails (``first.last<id>@domain``) and E.164 phones (country code + a national
  number that embeds the id) are unique by construction. About 95 % of customers
  have an email, 70 % a phone and 60 % an external id.
"""

from __future__ import annotations

import itertools
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

CHUNK_ROWS = 50_000
DAY = 86_400
CUSTOMER_SPAN = 3 * 365 * DAY
ACTIVITY_SPAN = 365 * DAY

CUSTOMER_COLUMNS = (
    "id",
    "email",
    "phone",
    "external_id",
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "country",
    "city",
    "attributes",
    "created_at",
    "updated_at",
)
CONSENT_COLUMNS = ("id", "customer_id", "channel", "status", "source", "occurred_at", "evidence")
ACTIVITY_COLUMNS = ("id", "customer_id", "occurred_at", "kind", "channel", "campaign_id", "message_id", "properties")


@dataclass(frozen=True)
class Country:
    """What a generated customer's country implies about the rest of the profile."""

    code: str
    weight: int
    locale: str
    timezone: str
    dial: str
    national_base: int  # first national number; the customer id is added to it
    cities: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    domains: tuple[str, ...]


# fmt: off
_EN_FIRST = ("Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Jack", "Mia", "Noah", "Emily", "Leo", "Grace")
_EN_LAST = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Evans", "Walker")
COUNTRIES: tuple[Country, ...] = (
    Country(
        "PL", 30, "pl-PL", "Europe/Warsaw", "48", 500_000_000,
        ("Warszawa", "Kraków", "Łódź", "Wrocław", "Poznań", "Gdańsk", "Szczecin", "Lublin"),
        ("Anna", "Piotr", "Katarzyna", "Krzysztof", "Małgorzata", "Tomasz", "Zofia", "Łukasz", "Agnieszka", "Michał"),
        ("Nowak", "Kowalski", "Wiśniewska", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowska", "Zieliński"),
        ("gmail.com", "wp.pl", "onet.pl", "o2.pl", "interia.pl"),
    ),
    Country(
        "DE", 18, "de-DE", "Europe/Berlin", "49", 15_100_000_000,
        ("Berlin", "Hamburg", "München", "Köln", "Frankfurt am Main", "Stuttgart", "Leipzig"),
        ("Lukas", "Lea", "Jonas", "Hannah", "Felix", "Jürgen", "Sophie", "Maximilian", "Anna", "Paul"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker"),
        ("gmail.com", "gmx.de", "web.de", "t-online.de"),
    ),
    Country(
        "GB", 12, "en-GB", "Europe/London", "44", 7_400_000_000,
        ("London", "Manchester", "Birmingham", "Leeds", "Glasgow", "Bristol", "Edinburgh"),
        _EN_FIRST, _EN_LAST, ("gmail.com", "outlook.com", "yahoo.co.uk", "icloud.com"),
    ),
    Country(
        "US", 10, "en-US", "America/New_York", "1", 2_025_000_000,
        ("New York", "Boston", "Chicago", "Austin", "Seattle", "Miami", "Denver"),
        _EN_FIRST, _EN_LAST, ("gmail.com", "outlook.com", "yahoo.com", "icloud.com"),
    ),
    Country(
        "FR", 9, "fr-FR", "Europe/Paris", "33", 600_000_000,
        ("Paris", "Lyon", "Marseille", "Toulouse", "Nantes", "Lille", "Bordeaux"),
        ("Léa", "Hugo", "Chloé", "Louis", "Inès", "Gabriel", "Manon", "Raphaël"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand"),
        ("gmail.com", "orange.fr", "free.fr", "laposte.net"),
    ),
    Country(
        "ES", 6, "es-ES", "Europe/Madrid", "34", 600_000_000,
        ("Madrid", "Barcelona", "Valencia", "Sevilla", "Bilbao", "Málaga"),
        ("Lucía", "Hugo", "Martina", "Mateo", "Sofía", "Martín", "Paula", "Alejandro"),
        ("García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez"),
        ("gmail.com", "hotmail.es", "yahoo.es"),
    ),
    Country(
        "IT", 5, "it-IT", "Europe/Rome", "39", 3_200_000_000,
        ("Roma", "Milano", "Napoli", "Torino", "Bologna", "Firenze"),
        ("Giulia", "Leonardo", "Sofia", "Francesco", "Aurora", "Alessandro", "Chiara", "Lorenzo"),
        ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo"),
        ("gmail.com", "libero.it", "virgilio.it"),
    ),
    Country(
        "NL", 4, "nl-NL", "Europe/Amsterdam", "31", 610_000_000,
        ("Amsterdam", "Rotterdam", "Den Haag", "Utrecht", "Eindhoven"),
        ("Daan", "Emma", "Sem", "Julia", "Lucas", "Tess", "Finn", "Sophie"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit"),
        ("gmail.com", "ziggo.nl", "kpnmail.nl"),
    ),
    Country(
        "SE", 3, "sv-SE", "Europe/Stockholm", "46", 700_000_000,
        ("Stockholm", "Göteborg", "Malmö", "Uppsala"),
        ("Alice", "William", "Maja", "Oscar", "Elsa", "Lucas", "Astrid", "Hugo"),
        ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson"),
        ("gmail.com", "telia.com", "outlook.com"),
    ),
    Country(
        "CZ", 3, "cs-CZ", "Europe/Prague", "420", 601_000_000,
        ("Praha", "Brno", "Ostrava", "Plzeň"),
        ("Jan", "Tereza", "Jakub", "Eliška", "Tomáš", "Anna", "Matěj", "Adéla"),
        ("Novák", "Svoboda", "Novotný", "Dvořák", "Černý", "Procházka"),
        ("seznam.cz", "gmail.com", "email.cz"),
    ),
)
# fmt: on
COUNTRY_CUM = tuple(itertools.accumulate(c.weight for c in COUNTRIES))

TIERS = ("bronze", "silver", "gold", "platinum", None)
TIER_CUM = tuple(itertools.accumulate((50, 25, 10, 3, 12)))
CATEGORIES = ("shoes", "outdoor", "beauty", "electronics", "home", "kids", "books")

# (kind, weight, is a message event sent on a channel)
ACTIVITY_KINDS = (
    ("message.sent", 300, True),
    ("message.delivered", 270, True),
    ("message.opened", 120, True),
    ("message.clicked", 40, True),
    ("message.bounced", 8, True),
    ("message.failed", 4, True),
    ("message.skipped", 10, True),
    ("message.replied", 5, True),
    ("message.unsubscribed", 3, True),
    ("message.complained", 1, True),
    ("consent.changed", 10, False),
    ("purchase", 30, False),
    ("page.viewed", 170, False),
    ("cart.abandoned", 29, False),
)
MESSAGE_CHANNELS = ("email", "sms", "whatsapp", "social")
MESSAGE_CHANNEL_WEIGHTS = (62, 25, 10, 3)
_PLAIN_KINDS = frozenset(k for k, _, _ in ACTIVITY_KINDS if k.startswith("message.")) - {
    "message.clicked",
    "message.bounced",
}


def _ascii_slug(name: str) -> str:
    """``"Łukasz Wiśniewska" -> "lukasz.wisniewska"``: what goes left of the @."""
    name = name.replace("ł", "l").replace("Ł", "L")
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return plain.lower().replace(" ", "")


def anchor_today() -> datetime:
    """The default time anchor: today's midnight in UTC (data is stable within a day)."""
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


class _Clock:
    """Formats "seconds before the anchor" as timestamptz COPY text, fast."""

    def __init__(self, anchor: datetime, span: int):
        self.anchor_epoch = int(anchor.timestamp())
        self.base_epoch = self.anchor_epoch - span - DAY
        first = datetime.fromtimestamp(self.base_epoch, UTC).replace(hour=0, minute=0, second=0)
        self.base_epoch = int(first.timestamp())
        days = (self.anchor_epoch - self.base_epoch) // DAY + 2
        self.days = [(first + timedelta(days=d)).strftime("%Y-%m-%d ") for d in range(days)]
        self.hm = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
        self.ss = [f"{s:02d}+00" for s in range(60)]

    def ago(self, seconds: int) -> str:
        d, s = divmod(self.anchor_epoch - seconds - self.base_epoch, DAY)
        m, s = divmod(s, 60)
        return self.days[d] + self.hm[m] + self.ss[s]


def customer_created_ago(customer_id: int, customers: int) -> int:
    """Seconds before the anchor at which customer ``customer_id`` was created."""
    return CUSTOMER_SPAN * (customers - customer_id) // customers + (customer_id * 7919) % 3600


def _traits(seed: int, block: int, start: int, stop: int) -> tuple[list[int], list[float], list[float]]:
    """Country index and two uniform draws (email, phone presence) for ids ``start..stop-1``.

    Customers and consents both call this, so a consent exists exactly for the
    channels a customer can be reached on, without keeping customers in memory.
    """
    rng = random.Random(f"{seed}:traits:{block}")
    n = stop - start
    countries = rng.choices(range(len(COUNTRIES)), cum_weights=COUNTRY_CUM, k=n)
    return countries, [rng.random() for _ in range(n)], [rng.random() for _ in range(n)]


def _blocks(total: int) -> Iterator[tuple[int, int, int]]:
    """``(block, first_id, stop_id)`` for ids ``1..total`` in CHUNK_ROWS blocks."""
    for block, start in enumerate(range(1, total + 1, CHUNK_ROWS)):
        yield block, start, min(start + CHUNK_ROWS, total + 1)


def customer_chunks(customers: int, *, seed: int, anchor: datetime) -> Iterator[tuple[str, int]]:
    """COPY text for ``customers`` rows of :data:`CUSTOMER_COLUMNS`."""
    clock = _Clock(anchor, CUSTOMER_SPAN)
    slugs: dict[str, str] = {}
    for block, start, stop in _blocks(customers):
        countries, email_draw, phone_draw = _traits(seed, block, start, stop)
        rng = random.Random(f"{seed}:customers:{block}")
        rand = rng.random
        tiers = rng.choices(TIERS, cum_weights=TIER_CUM, k=stop - start)
        lines = []
        for cid, ci, pe, pp, tier in zip(range(start, stop), countries, email_draw, phone_draw, tiers, strict=True):
            c = COUNTRIES[ci]
            first = c.first_names[int(rand() * len(c.first_names))]
            last = c.last_names[int(rand() * len(c.last_names))]
            if pe < 0.95:
                fs = slugs.get(first) or slugs.setdefault(first, _ascii_slug(first))
                ls = slugs.get(last) or slugs.setdefault(last, _ascii_slug(last))
                email = f"{fs}.{ls}{cid}@{c.domains[int(rand() * len(c.domains))]}"
            else:
                email = "\\N"
            phone = f"+{c.dial}{c.national_base + cid}" if pp < 0.7 else "\\N"
            external = f"crm-{cid:08d}" if cid % 5 < 3 else "\\N"
            orders = int(rand() ** 3 * 40)
            value = round(orders * (20 + int(rand() * 180)) + int(rand() * 100) / 100, 2) if orders else 0
            attrs = f'"orders": {orders}, "lifetime_value": {value}'
            if tier:
                attrs = f'"tier": "{tier}", {attrs}'
            if rand() < 0.6:
                attrs += f', "favourite_category": "{CATEGORIES[int(rand() * len(CATEGORIES))]}"'
            if rand() < 0.3:
                attrs += f', "newsletter": {"true" if rand() < 0.7 else "false"}'
            created_ago = customer_created_ago(cid, customers)
            created = clock.ago(created_ago)
            updated = clock.ago(int(created_ago * rand())) if orders else created
            lines.append(
                f"{cid}\t{email}\t{phone}\t{external}\t{first}\t{last}\t{c.locale}\t{c.timezone}\t{c.code}\t"
                f"{c.cities[int(rand() * len(c.cities))]}\t{{{attrs}}}\t{created}\t{updated}\n"
            )
        yield "".join(lines), len(lines)


_SOURCES_IN = ("form", "import", "api", "form", "import")
_EVIDENCE = {
    "form": '{"ip": "203.0.113.%d", "form": "checkout"}',
    "import": '{"file": "crm-export-%d.csv"}',
    "api": '{"request_id": "req-%d"}',
    "one_click": '{"event_id": "sg-%d"}',
    "sms_keyword": '{"keyword": "STOP", "event_id": "tw-%d"}',
    "admin": '{"note": "customer asked by phone", "ticket": %d}',
}


def consent_chunks(customers: int, *, seed: int, anchor: datetime) -> Iterator[tuple[str, int]]:
    """COPY text for the consent ledger: about 1.4 rows per customer.

    Every customer with an email has an email row (80 % opted in); 15 % of them
    later flip it (a second, newer row), so "latest row wins" matters. Customers
    with a phone get an SMS row half the time and a WhatsApp row 10 % of the time.
    """
    clock = _Clock(anchor, CUSTOMER_SPAN)
    next_id = 1
    for block, start, stop in _blocks(customers):
        _, email_draw, phone_draw = _traits(seed, block, start, stop)
        rng = random.Random(f"{seed}:consents:{block}")
        rand = rng.random
        rows: list[tuple[int, str, str, str, int]] = []  # customer, channel, status, source, seconds ago
        for cid, pe, pp in zip(range(start, stop), email_draw, phone_draw, strict=True):
            created_ago = customer_created_ago(cid, customers)
            signup_ago = max(created_ago - int(rand() * 600), 0)
            if pe < 0.95:
                opted_in = rand() < 0.8
                source = _SOURCES_IN[int(rand() * len(_SOURCES_IN))]
                rows.append((cid, "email", "opted_in" if opted_in else "opted_out", source, signup_ago))
                if rand() < 0.15:
                    flip = ("opted_out", "one_click") if opted_in else ("opted_in", "form")
                    rows.append((cid, "email", *flip, int(signup_ago * rand())))
            if pp < 0.7:
                if rand() < 0.5:
                    opted_in = rand() < 0.85
                    flip = ("opted_in", "form") if opted_in else ("opted_out", "sms_keyword")
                    rows.append((cid, "sms", *flip, signup_ago))
                if rand() < 0.1:
                    rows.append((cid, "whatsapp", "opted_in", "api", int(signup_ago * rand())))
        lines = [
            f"{consent_id}\t{cid}\t{channel}\t{status}\t{source}\t{clock.ago(ago)}\t"
            f"{_EVIDENCE[source] % int(1 + rand() * 249)}\n"
            for consent_id, (cid, channel, status, source, ago) in enumerate(rows, start=next_id)
        ]
        next_id += len(lines)
        yield "".join(lines), len(lines)


def activity_chunks(
    customers: int, per_customer: int, *, seed: int, anchor: datetime, first_id: int = 1, total: int | None = None
) -> Iterator[tuple[str, int]]:
    """COPY text for ``customers * per_customer`` activities (or ``total`` if given).

    Rows come in chronological order, as a live system appends them: row ``i``
    of ``total`` happens ``365 days * (total - i) / total`` before the anchor, so
    ``id`` and ``occurred_at`` correlate and "the last 30 days" is the tail of the
    table. Each row's customer is drawn among the customers that existed at that
    moment, skewed towards older ones (``id = existing * u**1.6``).
    ``campaign_id`` and ``message_id`` are NULL (the bench database has no
    campaigns). ``first_id`` offsets the ids. This is the hot loop of a 10M-row
    load, hence the precomputed line tails and the inlined clock.
    """
    total = customers * per_customer if total is None else total
    clock = _Clock(anchor, CUSTOMER_SPAN)
    days, hm, ss = clock.days, clock.hm, clock.ss
    now = clock.anchor_epoch - clock.base_epoch  # the anchor, in seconds after the clock's first day
    # One weighted draw picks (kind, channel); its tail is the rest of the line but the properties.
    outcomes: list[tuple[str, str]] = []
    weights: list[int] = []
    for kind, weight, is_message in ACTIVITY_KINDS:
        channels = zip(MESSAGE_CHANNELS, MESSAGE_CHANNEL_WEIGHTS, strict=True) if is_message else [("", 100)]
        for channel, channel_weight in channels:
            outcomes.append((kind, f"\t{kind}\t{channel}\t\\N\t\\N\t"))
            weights.append(weight * channel_weight)
    cum = list(itertools.accumulate(weights))
    step = ACTIVITY_SPAN / max(total, 1)  # seconds between consecutive rows
    per_second = customers / CUSTOMER_SPAN  # customers created per second
    slack = int(3600 * per_second) + 1  # customer_created_ago() adds up to an hour of jitter
    for block, start, stop in _blocks(total):
        rng = random.Random(f"{seed}:activities:{block}")
        rand = rng.random
        picks = rng.choices(outcomes, cum_weights=cum, k=stop - start)
        lines = []
        for row, (kind, tail) in zip(range(start, stop), picks, strict=True):
            ago = int((total - row + 1 - rand()) * step)
            existing = customers - int(ago * per_second) - slack  # created at least an hour before
            cid = int(existing * rand() ** 1.6) + 1 if existing > 1 else 1
            d, sec = divmod(now - ago, DAY)
            m, sec = divmod(sec, 60)
            aid = row + first_id - 1
            if kind in _PLAIN_KINDS:
                props = "{}"
            elif kind == "page.viewed":
                props = f'{{"path": "/p/{int(rand() * 5000)}"}}'
            elif kind == "message.clicked":
                props = f'{{"url": "https://shop.example.com/p/{int(rand() * 5000)}"}}'
            elif kind == "purchase":
                amount = int(500 + rand() * 49_500) / 100
                props = f'{{"order_id": "o-{aid}", "amount": {amount}, "items": {int(1 + rand() * 5)}}}'
            elif kind == "cart.abandoned":
                props = f'{{"value": {int(1000 + rand() * 89_000) / 100}}}'
            elif kind == "message.bounced":
                props = '{"type": "hard", "reason": "550 5.1.1 user unknown"}'
            else:  # consent.changed
                props = '{"channel": "email", "status": "opted_out"}'
            lines.append(f"{aid}\t{cid}\t{days[d]}{hm[m]}{ss[sec]}{tail}{props}\n")
        yield "".join(lines), len(lines)
