"""Test sends: a template's rendered content sent to seed-list recipients through the channel's adapter.

A test send goes through the same adapter (real SDK, the sandbox in
development) as a campaign's messages, but it is not a campaign message: no
``Message`` row, no customer timeline, no consent or suppression check (seed
recipients are the team's own addresses). The provider is told message id 0,
so its webhooks find no message and change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from campaigns.content.render import render_template
from campaigns.models import Campaign, ContentChannel, Template
from channels.adapters import ChannelError, Outbound, adapter_for
from channels.ratelimit import send_throttled
from customers.identity import normalize_bluesky, normalize_email, normalize_mastodon, normalize_phone

logger = logging.getLogger(__name__)

MAX_RECIPIENTS = 20
TEST_SEND_MESSAGE_ID = 0  # matches no Message: webhooks about a test send are recorded and ignored
SUBJECT_PREFIX = "[Test] "

# What a recipient of each channel looks like, and the example shown when one does not.
_RECIPIENT_KINDS = {
    ContentChannel.EMAIL: (normalize_email, "an email address"),
    ContentChannel.SMS: (normalize_phone, "a phone number in international form, e.g. +48600100200"),
    ContentChannel.WHATSAPP: (normalize_phone, "a phone number in international form, e.g. +48600100200"),
    ContentChannel.MASTODON: (normalize_mastodon, "a Mastodon handle, e.g. @anna@mastodon.social"),
    ContentChannel.BLUESKY: (normalize_bluesky, "a Bluesky handle, e.g. anna.bsky.social"),
}


class TestSendError(ValueError):
    """The test send could not be attempted at all; the message says why and what to do."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class TestSendResult:
    """What happened to the test send to one recipient."""

    __test__ = False

    recipient: str
    ok: bool
    provider_message_id: str = ""
    error: str = ""


def _normalized(channel: str, value: str) -> str | None:
    normalize, _ = _RECIPIENT_KINDS[channel]
    try:
        return normalize(value)
    except ValidationError:
        return None


def seed_recipients(template: Template, *, brand=None) -> list[str]:
    """The seed-list entries of ``brand`` (the template's) that are addresses on the template's channel."""
    seeds = []
    for seed in (brand or template.brand).seeds:
        address = _normalized(template.channel, seed)
        if address and address not in seeds:
            seeds.append(address)
    return seeds


def recipients_parse(channel: str, raw: str | Iterable[str]) -> list[str]:
    """Recipients typed by a person (one per line or comma-separated), normalized for ``channel``.

    ``ValidationError`` names every entry that is not an address on the channel.
    """
    if isinstance(raw, str):
        raw = raw.replace(",", "\n").splitlines()
    entries = [str(entry).strip() for entry in raw if str(entry).strip()]
    _, example = _RECIPIENT_KINDS[channel]
    recipients, bad = [], []
    for entry in entries:
        address = _normalized(channel, entry)
        if address is None:
            bad.append(entry)
        elif address not in recipients:
            recipients.append(address)
    if bad:
        names = ", ".join(f"“{entry}”" for entry in bad)
        raise ValidationError(f"{names}: not {example}.")
    if len(recipients) > MAX_RECIPIENTS:
        raise ValidationError(f"A test goes to at most {MAX_RECIPIENTS} recipients; {len(recipients)} were given.")
    return recipients


def test_send(
    *, template: Template, recipients: list[str], by, persona=None, customer=None, campaign: Campaign | None = None
) -> list[TestSendResult]:
    """Send ``template`` rendered for ``customer`` (or ``persona``'s sample customer) to ``recipients``.

    ``recipients`` are addresses on the template's channel (see
    ``recipients_parse``); empty means the brand's seed list. ``campaign``
    (optional) renders it as that campaign's step: its name, brand and UTM. Raises
    ``TestSendError`` when nothing can be sent: no adapter for the channel, no
    sender identity, no recipients, or content that does not render. A failure
    for one recipient (e.g. the provider refuses the number) is in its result.
    """
    channel = template.channel
    brand = campaign.brand if campaign is not None else template.brand
    try:
        adapter = adapter_for(channel)
    except ChannelError as exc:
        raise TestSendError(
            f"{exc.message} Test sends on {ContentChannel(channel).label} need a provider set up first."
        ) from None
    if not recipients:
        recipients = seed_recipients(template, brand=brand)
        if not recipients:
            raise TestSendError(
                f"{brand.name}'s seed list has no {ContentChannel(channel).label} recipients; "
                "type some, or add them to the brand's seed list."
            )
    try:
        recipients = recipients_parse(channel, recipients)
    except ValidationError as exc:
        raise TestSendError(exc.messages[0]) from None
    if channel == ContentChannel.EMAIL and not brand.email_from_address:
        raise TestSendError(f"{brand.name} has no email sender address; set one on the brand first.")

    # Short links are stored so the test message's links work when clicked.
    rendered = render_template(
        template, brand=brand, campaign=campaign, customer=customer, persona=persona, store_links=True
    )
    if rendered.problems:
        problem = rendered.problems[0]
        raise TestSendError(f"The content does not render: {problem.message}")

    outbound = [
        Outbound(
            message_id=TEST_SEND_MESSAGE_ID,
            to=address,
            sender=brand.sender_for(channel),
            sender_name=brand.email_from_name,
            reply_to=brand.email_reply_to,
            subject=f"{SUBJECT_PREFIX}{rendered.subject}" if rendered.subject else "",
            body=rendered.text,
            html=rendered.html,
            categories=("test-send",),
            headers=dict(rendered.headers),
        )
        for address in recipients
    ]
    try:
        sent = send_throttled(adapter, outbound)
    except ChannelError as exc:
        # The provider refused the whole call (credentials, outage): every recipient failed alike.
        results = [TestSendResult(address, ok=False, error=exc.message) for address in recipients]
    else:
        results = [
            TestSendResult(
                address,
                ok=result.ok,
                provider_message_id=result.provider_message_id or "",
                error=result.error.message if result.error else "",
            )
            for address, result in zip(recipients, sent, strict=True)
        ]
    logger.info(
        "Test send of template %s (%s) by %s to %d recipients: %d sent",
        template.pk,
        channel,
        by,
        len(recipients),
        sum(result.ok for result in results),
    )
    return results


test_send.__test__ = False  # a service named for what it does, not a pytest test
