"""Mastodon and Bluesky through their real SDKs (Mastodon.py, atproto) against the sandbox over HTTP.

Posts with images and alt text, Mastodon direct messages, Bluesky link facets,
error mapping, publishing once per step and run, and engagement polling that
puts a customer's reply on their timeline exactly once.
"""

from __future__ import annotations

import django.apps
import pytest
from django.core.files.base import ContentFile
from django_celery_beat.models import PeriodicTask

from campaigns.models import CampaignRun, Enrollment, ShortLink
from campaigns.periodic import SOCIAL_POLL_NAME, SOCIAL_POLL_TASK, periodic_tasks_ensure
from campaigns.services import enrollments_dispatch
from channels.adapters import ChannelError, Outbound, adapter_for
from channels.adapters.bluesky import BlueskyAdapter
from channels.adapters.mastodon import MastodonAdapter
from channels.adapters.social import Post
from channels.models import Message, ProviderEvent, SandboxMessage, SocialPost
from channels.sandbox import engagement, sandbox_fault_set, sandbox_faults_clear
from channels.services import TransientSendError
from channels.services.social import social_engagement_poll, social_post_publish
from channels.tasks import social_post_publish as social_post_publish_task
from customers.models import Activity
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory, StepFactory, launch

pytestmark = pytest.mark.django_db(transaction=True)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
SALE = "https://northwind.example/sale"


@pytest.fixture(autouse=True)
def _no_faults():
    sandbox_faults_clear()
    yield
    sandbox_faults_clear()


def recorded(provider: str) -> list[SandboxMessage]:
    return list(SandboxMessage.objects.filter(provider=provider).order_by("pk"))


def social_step(network: str, body: str, *, image: bool = True):
    brand = BrandFactory(mastodon_account="@northwind@mastodon.social", bluesky_account="northwind.bsky.social")
    step = StepFactory(
        campaign=CampaignFactory(brand=brand),
        position=0,
        channel=network,
        template__body=body,
        template__image_alt="A red rain jacket on a hook",
    )
    if image:
        step.template.image.save("jacket.png", ContentFile(PNG))
    return step


def post_for(step) -> SocialPost:
    """The step's post of a run, as dispatch creates it (without publishing it)."""
    run = CampaignRun.objects.create(campaign=step.campaign, number=1)
    return SocialPost.objects.create(step=step, run=run, network=step.channel)


# --- Mastodon: request shape ---------------------------------------------------------------


def test_mastodon_post_is_public_with_the_image_and_its_alt_text(sandbox):
    published = MastodonAdapter().publish(
        Post(
            key="chorus-post-1",
            text=f"Spring sale: 20% off rain jackets {SALE}",
            image=PNG,
            image_type="image/png",
            image_name="jacket.png",
            image_alt="A red rain jacket on a hook",
        )
    )

    [status] = recorded("mastodon")
    assert status.provider_message_id == published.post_id
    assert status.to_address == "public"
    assert status.body == f"Spring sale: 20% off rain jackets {SALE}"
    assert status.request["visibility"] == "public"
    assert len(status.request["media_ids"]) == 1
    [media] = status.request["media"]
    assert (media["description"], media["mime"], media["type"]) == ("A red rain jacket on a hook", "image/png", "image")
    assert published.url == f"{sandbox.url}/sandbox/mastodon/@chorus/{published.post_id}"


def test_mastodon_direct_message_is_a_direct_status_mentioning_the_customer_once(sandbox):
    adapter = MastodonAdapter()
    dm = Outbound(message_id=41, to="@ana@mastodon.example", sender="@northwind@mastodon.social", body="Hi Ana 👋")

    first = adapter.send([dm])
    again = adapter.send([dm])  # a redelivered task: same idempotency key, same status

    assert first[0].ok and first[0].provider_message_id == again[0].provider_message_id
    [status] = recorded("mastodon")
    assert status.to_address == "@ana@mastodon.example"
    assert status.body == "@ana@mastodon.example Hi Ana 👋"
    assert status.request["visibility"] == "direct"
    assert status.request["idempotency_key"] == "chorus-message-41"


def test_mastodon_refuses_one_dm_over_500_characters_and_sends_the_rest(sandbox):
    long_dm = Outbound(message_id=2, to="@bo@mastodon.example", sender="", body="x" * 497)  # "@bo" counts 3: 501 in all
    results = MastodonAdapter().send(
        [Outbound(message_id=1, to="@ana@mastodon.example", sender="", body="Hi"), long_dm]
    )

    assert results[0].ok
    assert results[1].error.permanent and results[1].error.code == "422"
    assert "character limit of 500" in results[1].error.message
    assert [m.to_address for m in recorded("mastodon")] == ["@ana@mastodon.example"]


def test_mastodon_post_of_exactly_500_characters_with_a_long_link_is_accepted(sandbox):
    """Mastodon's count, not len(): the link counts 23 however long it is."""
    text = "x" * 476 + " " + SALE + "?utm_source=chorus&utm_medium=mastodon&utm_campaign=spring"
    MastodonAdapter().publish(Post(key="k", text=text))
    assert recorded("mastodon")[0].body == text


# --- Mastodon: error mapping ----------------------------------------------------------------


def test_mastodon_over_limit_post_is_a_permanent_error_and_nothing_is_posted(sandbox):
    with pytest.raises(ChannelError) as caught:
        MastodonAdapter().publish(Post(key="k", text="y" * 501))
    assert caught.value.permanent and caught.value.code == "422"
    assert "Text character limit of 500 exceeded" in caught.value.message
    assert not recorded("mastodon")


def test_mastodon_429_is_transient_with_the_providers_retry_after(sandbox):
    sandbox_fault_set(provider="mastodon", status=429, retry_after=7, count=1)
    with pytest.raises(ChannelError) as caught:
        MastodonAdapter().send([Outbound(message_id=1, to="@ana@mastodon.example", sender="", body="Hi")])
    assert not caught.value.permanent and caught.value.code == "429"
    assert caught.value.retry_after == 7


def test_mastodon_5xx_is_transient(sandbox):
    sandbox_fault_set(provider="mastodon", status=503, count=1)
    with pytest.raises(ChannelError) as caught:
        MastodonAdapter().publish(Post(key="k", text="Hello"))
    assert not caught.value.permanent and caught.value.code == "503"


def test_mastodon_bad_token_fails_the_whole_batch_permanently(sandbox):
    adapter = MastodonAdapter()
    adapter.client.access_token = "revoked"
    with pytest.raises(ChannelError) as caught:
        adapter.send([Outbound(message_id=1, to="@ana@mastodon.example", sender="", body="Hi")])
    assert caught.value.permanent and caught.value.code == "401"
    assert "access token is invalid" in caught.value.message


# --- Bluesky: request shape and errors ----------------------------------------------------------


def test_bluesky_post_has_link_facets_at_utf8_byte_offsets_and_the_image_alt(sandbox):
    text = f"Wiosna 🌸 w Krakowie — zniżki: {SALE}?utm_medium=bluesky. Więcej 👨‍👩‍👧: https://northwind.example/a"
    published = BlueskyAdapter().publish(
        Post(key="k", text=text, image=PNG, image_type="image/png", image_alt="A red rain jacket on a hook")
    )

    [post] = recorded("bluesky")
    record = post.request["record"]
    assert post.provider_message_id == published.post_id and published.post_id.startswith("at://did:plc:")
    assert published.cid.startswith("b")
    assert published.url == f"https://bsky.app/profile/chorus.bsky.social/post/{published.post_id.rsplit('/', 1)[1]}"
    assert record["text"] == text
    encoded = text.encode()
    links = [
        (encoded[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode(), f["features"][0]["uri"])
        for f in record["facets"]
    ]
    assert links == [
        (f"{SALE}?utm_medium=bluesky", f"{SALE}?utm_medium=bluesky"),  # the sentence's full stop is left out
        ("https://northwind.example/a", "https://northwind.example/a"),
    ]
    assert record["facets"][0]["index"]["byteStart"] > text.index("https")  # bytes, not characters
    [image] = record["embed"]["images"]
    assert record["embed"]["$type"] == "app.bsky.embed.images"
    assert image["alt"] == "A red rain jacket on a hook"
    assert image["image"]["mimeType"] == "image/png" and image["image"]["size"] == len(PNG)


def test_bluesky_takes_300_graphemes_and_refuses_301_as_a_permanent_error(sandbox):
    adapter = BlueskyAdapter()
    adapter.publish(Post(key="k", text="ż" * 300))
    with pytest.raises(ChannelError) as caught:
        adapter.publish(Post(key="k2", text="ż" * 301))
    assert caught.value.permanent and caught.value.code == "400"
    assert "InvalidRequest" in caught.value.message and "300 graphemes" in caught.value.message
    assert len(recorded("bluesky")) == 1


def test_bluesky_429_is_transient_with_the_providers_retry_after(sandbox):
    sandbox_fault_set(provider="bluesky", status=429, retry_after=9, count=1)
    with pytest.raises(ChannelError) as caught:
        BlueskyAdapter().publish(Post(key="k", text="Hello"))
    assert not caught.value.permanent and caught.value.code == "429"
    assert caught.value.retry_after == 9


def test_bluesky_5xx_is_transient(sandbox):
    sandbox_fault_set(provider="bluesky", status=500, count=1)
    with pytest.raises(ChannelError) as caught:
        BlueskyAdapter().publish(Post(key="k", text="Hello"))
    assert not caught.value.permanent


def test_bluesky_wrong_app_password_is_a_permanent_auth_error(sandbox):
    adapter = BlueskyAdapter()
    adapter.password = "not-the-app-password"
    with pytest.raises(ChannelError) as caught:
        adapter.publish(Post(key="k", text="Hello"))
    assert caught.value.permanent and caught.value.code == "401"
    assert "Invalid identifier or password" in caught.value.message
    assert not recorded("bluesky")


def test_bluesky_sends_no_direct_messages():
    [result] = adapter_for("bluesky").send([Outbound(message_id=3, to="ana.bsky.social", sender="", body="Hi")])
    assert result.error.permanent and result.error.code == "unsupported"


# --- Publishing a campaign's social step --------------------------------------------------------


def test_a_mastodon_step_publishes_one_post_and_direct_messages_customers_with_a_handle(sandbox):
    ana = CustomerFactory(first_name="Ana", mastodon_handle="@ana@mastodon.example", consents={"social": "opted_in"})
    bo = CustomerFactory(consents={"social": "opted_in"})  # no Mastodon handle
    cy = CustomerFactory(mastodon_handle="@cy@mastodon.example")  # never opted in
    step = social_step("mastodon", "{{ campaign.name }}: 20% off rain jackets " + SALE)
    run = launch(step.campaign)
    while enrollments_dispatch():
        pass

    post = SocialPost.objects.get(step=step, run=run)
    public = SandboxMessage.objects.get(provider="mastodon", to_address="public")
    assert (post.status, post.account, post.error) == ("published", "@northwind@mastodon.social", "")
    assert post.provider_post_id == public.provider_message_id and post.url.endswith(f"/{post.provider_post_id}")
    assert post.text == public.body and post.text.startswith(f"{step.campaign.name}: 20% off rain jackets ")
    link = ShortLink.objects.get(step__isnull=True)  # the post's link: UTM added, then shortened
    assert "utm_medium=mastodon" in link.url and f"/l/{link.code}" in post.text
    assert public.request["media"][0]["description"] == "A red rain jacket on a hook"

    messages = {m.customer_id: m for m in Message.objects.filter(run=run)}
    assert (messages[ana.pk].status, messages[ana.pk].channel, messages[ana.pk].provider) == (
        "sent",
        "mastodon",
        "mastodon",
    )
    assert (messages[bo.pk].status, messages[bo.pk].skip_reason) == ("skipped", "no_address")
    assert (messages[cy.pk].status, messages[cy.pk].skip_reason) == ("skipped", "no_consent")
    dm = SandboxMessage.objects.get(provider="mastodon", to_address="@ana@mastodon.example")
    assert dm.request["visibility"] == "direct" and dm.body.startswith(f"@ana@mastodon.example {step.campaign.name}")
    assert dm.provider_message_id == messages[ana.pk].provider_message_id

    social_post_publish_task.delay(post.pk)  # a duplicate task, and the service called again
    assert social_post_publish(post_id=post.pk) is None
    assert SandboxMessage.objects.filter(provider="mastodon", to_address="public").count() == 1


def test_a_bluesky_step_publishes_its_post_and_creates_no_messages(sandbox):
    CustomerFactory(bluesky_handle="ana.bsky.social", consents={"social": "opted_in"})
    CustomerFactory(consents={"social": "opted_in"})
    step = social_step("bluesky", "Rain jackets, 20% off: " + SALE)
    run = launch(step.campaign)
    while enrollments_dispatch():
        pass

    post = SocialPost.objects.get(step=step, run=run)
    [recorded_post] = recorded("bluesky")
    assert post.status == "published" and post.provider_post_id == recorded_post.provider_message_id
    assert post.provider_cid and post.url.startswith("https://bsky.app/profile/chorus.bsky.social/post/")
    assert recorded_post.request["record"]["facets"][0]["features"][0]["uri"] in post.text
    assert recorded_post.request["record"]["embed"]["images"][0]["alt"] == "A red rain jacket on a hook"
    assert not Message.objects.exists()
    assert set(Enrollment.objects.filter(run=run).values_list("state", flat=True)) == {"completed"}


def test_a_post_claimed_by_a_running_attempt_is_left_alone_until_its_lease_runs_out(sandbox):
    from datetime import timedelta

    from django.utils import timezone

    post = post_for(social_step("mastodon", "Rain jackets " + SALE, image=False))
    SocialPost.objects.filter(pk=post.pk).update(published_at=timezone.now())  # another worker is publishing

    assert social_post_publish(post_id=post.pk) is None
    assert not recorded("mastodon")

    SocialPost.objects.filter(pk=post.pk).update(published_at=timezone.now() - timedelta(minutes=6))  # it died
    assert social_post_publish(post_id=post.pk).status == "published"
    assert len(recorded("mastodon")) == 1


def test_a_429_releases_the_post_for_a_retry_after_the_providers_wait(sandbox):
    post = post_for(social_step("mastodon", "Rain jackets " + SALE))
    sandbox_fault_set(provider="mastodon", status=429, retry_after=30, count=1)

    with pytest.raises(TransientSendError) as caught:
        social_post_publish(post_id=post.pk)
    assert caught.value.retry_after == 30
    post.refresh_from_db()
    assert (post.status, post.published_at) == ("publishing", None)
    assert "Mastodon 429" in post.error

    assert social_post_publish(post_id=post.pk).status == "published"
    assert SocialPost.objects.get(pk=post.pk).error == ""


def test_an_outage_fails_the_post_with_the_providers_reason_after_the_last_attempt(sandbox):
    post = post_for(social_step("bluesky", "Rain jackets " + SALE, image=False))
    sandbox_fault_set(provider="bluesky", status=500)

    with pytest.raises(TransientSendError):
        social_post_publish(post_id=post.pk)  # the task retries this, with backoff
    social_post_publish(post_id=post.pk, final_attempt=True)

    post.refresh_from_db()
    assert post.status == "failed" and post.error.startswith("Bluesky 500")
    assert not recorded("bluesky")


def test_an_over_limit_post_fails_at_once_with_the_providers_reason(sandbox):
    post = post_for(social_step("bluesky", "ż" * 301, image=False))

    social_post_publish_task.delay(post.pk)

    post.refresh_from_db()
    assert post.status == "failed" and "must not be longer than 300 graphemes" in post.error
    assert post.text == "ż" * 301
    assert not recorded("bluesky")


# --- Engagement ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "field", "handle"),
    [("mastodon", "mastodon_handle", "@ana@mastodon.example"), ("bluesky", "bluesky_handle", "ana.bsky.social")],
)
def test_polling_counts_engagement_and_puts_a_customers_reply_on_their_timeline_once(sandbox, network, field, handle):
    ana = CustomerFactory(first_name="Ana", **{field: handle})
    step = social_step(network, "Rain jackets " + SALE, image=False)
    post = social_post_publish(post_id=post_for(step).pk)

    first, second = social_engagement_poll(), social_engagement_poll()

    post.refresh_from_db()
    sent = SandboxMessage.objects.get(provider=network)
    # Under a minute old: the sandbox's counts at age zero, and both of its first replies.
    assert (post.likes, post.reposts) == engagement.counts(post.provider_post_id, sent.created_at, sent.created_at)
    assert post.replies == 2 and post.engagement_checked_at is not None
    assert (first.mentions_recorded, first.on_timelines) == (2, 1)
    assert (second.mentions_recorded, second.on_timelines) == (0, 0)
    events = ProviderEvent.objects.filter(provider=network)
    assert sorted(events.values_list("kind", flat=True)) == ["reply", "reply"]
    [reply] = Activity.objects.filter(kind="message.replied")
    assert (reply.customer_id, reply.channel, reply.campaign_id) == (ana.pk, "social", step.campaign_id)
    assert reply.properties["network"] == network and reply.properties["url"].startswith("https://")
    assert reply.properties["text"].endswith(engagement.TEXTS)
    stranger = events.exclude(pk=reply.properties["provider_event"]).get()
    assert stranger.error.startswith("No customer has the handle")


def test_replies_to_direct_messages_land_on_the_replying_customers_timelines_with_the_message(sandbox):
    for i in range(8):
        CustomerFactory(mastodon_handle=f"@fan{i}@mastodon.example", consents={"social": "opted_in"})
    step = social_step("mastodon", "Your member price: 15% off " + SALE, image=False)
    run = launch(step.campaign)
    while enrollments_dispatch():
        pass

    social_engagement_poll()
    social_engagement_poll()

    dms = list(Message.objects.filter(run=run, status="sent"))
    assert len(dms) == 8
    # The sandbox's recipients answer one DM in two, chosen by the status id's seed.
    answered = {(m.customer_id, m.pk) for m in dms if engagement.seed(m.provider_message_id) % 2 == 0}
    replies = Activity.objects.filter(kind="message.replied", message__isnull=False)
    assert {(a.customer_id, a.message_id) for a in replies} == answered
    assert {a.campaign_id for a in replies} <= {step.campaign_id}


def test_the_sdks_read_a_posts_thread_and_counts_from_the_sandbox(sandbox):
    """Threads and counts as the SDKs parse them, beyond what the poll itself reads."""
    CustomerFactory(mastodon_handle="@ana@mastodon.example", bluesky_handle="ana.bsky.social")
    mastodon, bluesky = MastodonAdapter(), BlueskyAdapter()
    status_id = mastodon.publish(Post(key="k", text="Jackets")).post_id
    uri = bluesky.publish(Post(key="k", text="Jackets")).post_id

    context = mastodon.client.status_context(status_id)
    thread = bluesky._call(bluesky.client.get_post_thread, uri).thread

    first = context.descendants[0]
    assert (first.account.acct, first.in_reply_to_id) == ("ana@mastodon.example", status_id)
    assert len(context.descendants) == mastodon.client.status(status_id).replies_count == 2
    assert thread.post.uri == uri and thread.post.reply_count == len(thread.replies) == 2
    assert thread.replies[0].post.author.handle == "ana.bsky.social"
    assert thread.replies[0].post.record.reply.parent.uri == uri


def test_a_network_that_fails_to_answer_does_not_stop_the_other_from_being_polled(sandbox):
    bluesky = social_post_publish(post_id=post_for(social_step("bluesky", "Jackets", image=False)).pk)
    mastodon = social_post_publish(post_id=post_for(social_step("mastodon", "Jackets", image=False)).pk)
    sandbox_fault_set(provider="mastodon", status=503)

    result = social_engagement_poll()

    assert result.errors == ["mastodon: Mastodon 503: We're sorry, but something went wrong on our end."]
    assert SocialPost.objects.get(pk=bluesky.pk).engagement_checked_at is not None
    assert SocialPost.objects.get(pk=mastodon.pk).engagement_checked_at is None


def test_polling_with_nothing_published_calls_no_network(sandbox):
    sandbox_fault_set(provider="mastodon", status=503)
    sandbox_fault_set(provider="bluesky", status=503)
    assert social_engagement_poll().errors == []


def test_the_engagement_poll_is_scheduled_every_configured_seconds(settings):
    settings.CHORUS_SOCIAL_POLL_SECONDS = 120
    periodic_tasks_ensure(django.apps.apps, every_seconds=10)
    periodic_tasks_ensure(django.apps.apps, every_seconds=10)
    poll = PeriodicTask.objects.get(name=SOCIAL_POLL_NAME)
    assert (poll.task, poll.interval.every, poll.interval.period, poll.queue) == (
        SOCIAL_POLL_TASK,
        120,
        "seconds",
        "social",
    )
