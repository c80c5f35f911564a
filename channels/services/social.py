"""Social networks: a campaign's Mastodon or Bluesky step publishes one post, and engagement comes back.

Publishing: when dispatch reaches a social step of a run it creates the step's
``SocialPost`` (unique per step and run) and enqueues one publish task after
commit; the task claims the post, renders the template for no particular
customer (brand and campaign context, links with UTM and short links) and
publishes it with its image and alt text through the network's adapter.
Transient errors retry with backoff; permanent ones fail the post with the
provider's reason.

Engagement: a periodic task reads the counts of the posts published in the
last ``CHORUS_SOCIAL_POLL_DAYS`` days and the replies and mentions the account
received. Each reply or mention is stored once as a ``ProviderEvent`` (dedupe
key: the status id or post URI); when its author's handle is a customer's, it
lands on that customer's timeline (``message.replied`` or ``social.mentioned``).
"""

from __future__ import annotations

import logging
import mimetypes
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.content.liquid import ContentError
from campaigns.content.render import render_template
from campaigns.models import ContentChannel
from channels.adapters import ChannelError, adapter_for
from channels.adapters.social import Mention, Post, SocialAdapter
from channels.models import Message, ProviderEvent, SocialPost
from channels.services.sending import TransientSendError
from customers.identity import normalize_bluesky, normalize_mastodon
from customers.models import Activity, Channel, Customer
from customers.services.activities import activity_record

logger = logging.getLogger(__name__)
NETWORKS = (ContentChannel.MASTODON, ContentChannel.BLUESKY)
# While a post is publishing, ``published_at`` is when the current attempt claimed it. A worker
# that died mid-call leaves the claim; after this long another attempt may take the post over.
PUBLISH_LEASE = timedelta(minutes=5)
_HANDLE_FIELD = {ContentChannel.MASTODON: "mastodon_handle", ContentChannel.BLUESKY: "bluesky_handle"}
_NORMALIZE = {ContentChannel.MASTODON: normalize_mastodon, ContentChannel.BLUESKY: normalize_bluesky}
_ACTIVITY = {"reply": Activity.Kind.MESSAGE_REPLIED, "mention": Activity.Kind.SOCIAL_MENTIONED}


# --- publishing ----------------------------------------------------------------------


def social_posts_create(*, pairs: Iterable[tuple[int, int, str]], now: datetime) -> list[int]:
    """Create the posts of (step id, run id, network) not created yet and enqueue their publishing after commit.

    Runs inside dispatch's transaction; another batch of the same run reaching
    the step finds its post already there (the unique constraint) and enqueues nothing.
    """
    from channels.tasks import social_post_publish

    pairs = set(pairs)
    if not pairs:
        return []
    SocialPost.objects.bulk_create(
        [
            SocialPost(step_id=step_id, run_id=run_id, network=network, created_at=now)
            for step_id, run_id, network in pairs
        ],
        ignore_conflicts=True,
    )
    created = list(
        SocialPost.objects.filter(
            created_at=now, step_id__in={p[0] for p in pairs}, run_id__in={p[1] for p in pairs}
        ).values_list("pk", flat=True)
    )
    transaction.on_commit(lambda: [social_post_publish.delay(pk) for pk in created])
    return created


def _social_adapter(network: str) -> SocialAdapter:
    adapter = adapter_for(network)
    if not isinstance(adapter, SocialAdapter):
        raise ChannelError(f"The {network} adapter ({adapter.provider}) does not publish posts.", permanent=True)
    return adapter


def _claim(post_id: int, now: datetime) -> bool:
    """Take the post for this attempt: one attempt at a time, and never once it is published or failed."""
    return bool(
        SocialPost.objects.filter(pk=post_id, status=SocialPost.Status.PUBLISHING)
        .filter(Q(published_at__isnull=True) | Q(published_at__lt=now - PUBLISH_LEASE))
        .update(published_at=now)
    )


def _image(template) -> tuple[bytes | None, str, str]:
    if not template.image:
        return None, "", ""
    try:
        with template.image.open("rb") as file:
            data = file.read()
    except OSError as exc:
        raise ChannelError(f"The post's image {template.image.name!r} cannot be read: {exc}", permanent=True) from exc
    name = os.path.basename(template.image.name)
    return data, mimetypes.guess_type(name)[0] or "application/octet-stream", name


def social_post_render(post: SocialPost) -> Post:
    """The post's content: the template rendered for no particular customer, in the campaign's context."""
    step = post.step
    rendered = render_template(step.template, campaign=step.campaign, customer=Customer(), store_links=True)
    rendered.raise_for_problems()
    image, image_type, image_name = _image(step.template)
    return Post(
        key=f"chorus-post-{post.pk}",
        text=rendered.text,
        image=image,
        image_type=image_type,
        image_name=image_name,
        image_alt=rendered.image_alt,
    )


def social_post_publish(*, post_id: int, final_attempt: bool = False) -> SocialPost | None:
    """Publish the post once. Returns it, or None when another attempt holds it or it is already done.

    A transient error releases the claim and raises ``TransientSendError`` (the
    task retries), unless this is the final attempt, which fails the post.
    """
    now = timezone.now()
    if not _claim(post_id, now):
        return None
    post = SocialPost.objects.select_related("step__template", "step__campaign__brand").get(pk=post_id)
    mine = SocialPost.objects.filter(pk=post_id, status=SocialPost.Status.PUBLISHING, published_at=now)
    content = None
    try:
        content = social_post_render(post)
        adapter = _social_adapter(post.network)
        try:
            published = adapter.publish(content)
        finally:
            adapter.close()
    except (ChannelError, ContentError) as exc:
        error = f"Content error in {exc}" if isinstance(exc, ContentError) else exc.message
        permanent = isinstance(exc, ContentError) or exc.permanent
        if permanent or final_attempt:
            mine.update(
                status=SocialPost.Status.FAILED,
                account=post.step.campaign.brand.sender_for(post.network),
                text=content.text if content else "",
                error=error[:2000],
            )
            logger.warning("Social post %s failed: %s", post_id, error)
            return SocialPost.objects.get(pk=post_id)
        mine.update(published_at=None, error=error[:2000])
        raise TransientSendError(f"Social post {post_id}: {error}", retry_after=exc.retry_after) from exc
    mine.update(
        status=SocialPost.Status.PUBLISHED,
        account=post.step.campaign.brand.sender_for(post.network),
        text=content.text,
        provider_post_id=published.post_id,
        provider_cid=published.cid,
        url=published.url,
        error="",
        published_at=timezone.now(),
    )
    return SocialPost.objects.get(pk=post_id)


# --- engagement ---------------------------------------------------------------------------


@dataclass
class PollResult:
    posts_updated: int = 0
    mentions_recorded: int = 0
    on_timelines: int = 0
    errors: list[str] | None = None


def _customer_for(network: str, handle: str) -> Customer | None:
    try:
        normalized = _NORMALIZE[network](handle)
    except ValidationError:
        return None
    if not normalized:
        return None
    return Customer.objects.live().filter(**{_HANDLE_FIELD[network]: normalized}).first()


def _mention_record(network: str, mention: Mention, posts: dict[str, SocialPost], messages: dict[str, Message]) -> int:
    """Store one reply or mention (once per dedupe key) and put it on its author's timeline.

    Returns 0 if it was already stored, 1 if stored, 2 if also on a timeline.
    """
    post = posts.get(mention.in_reply_to)
    message = messages.get(mention.in_reply_to)
    with transaction.atomic():
        try:
            with transaction.atomic():
                event = ProviderEvent.objects.create(
                    provider=network,
                    kind=mention.kind,
                    dedupe_key=mention.id[:200],
                    payload=mention.payload,
                    message=message,
                    processed_at=timezone.now(),
                )
        except IntegrityError:
            return 0
        customer = _customer_for(network, mention.author)
        if customer is None:
            ProviderEvent.objects.filter(pk=event.pk).update(error=f"No customer has the handle {mention.author!r}.")
            return 1
        campaign_id = post.step.campaign_id if post else (message.step.campaign_id if message else None)
        activity_record(
            customer=customer,
            kind=_ACTIVITY[mention.kind],
            channel=Channel.SOCIAL,
            campaign_id=campaign_id,
            message=message,
            occurred_at=mention.at,
            properties={
                "network": network,
                "text": mention.text[:1600],
                "url": mention.url,
                "provider_event": event.pk,
            },
        )
    return 2


def _network_poll(network: str, since: datetime, now: datetime, result: PollResult) -> None:
    recent = SocialPost.objects.filter(network=network, status=SocialPost.Status.PUBLISHED, published_at__gte=since)
    posts = {p.provider_post_id: p for p in recent.select_related("step")}
    direct = (
        network == ContentChannel.MASTODON and Message.objects.filter(provider=network, sent_at__gte=since).exists()
    )
    if not posts and not direct:
        return  # nothing out there to engage with: no network call, no login
    adapter = _social_adapter(network)
    try:
        engagement = adapter.engagement(list(posts))
        mentions = adapter.mentions(since=since)
    finally:
        adapter.close()
    for post_id, counts in engagement.items():
        result.posts_updated += SocialPost.objects.filter(pk=posts[post_id].pk).update(
            likes=counts.likes, reposts=counts.reposts, replies=counts.replies, engagement_checked_at=now
        )
    # What the replies answer: our posts (also older ones) and direct messages, looked up by id.
    answered = {m.in_reply_to for m in mentions if m.in_reply_to}
    older = SocialPost.objects.filter(network=network, provider_post_id__in=answered - set(posts))
    posts.update((p.provider_post_id, p) for p in older.select_related("step"))
    messages = {
        m.provider_message_id: m
        for m in Message.objects.filter(provider=network, provider_message_id__in=answered).select_related("step")
    }
    for mention in mentions:
        outcome = _mention_record(network, mention, posts, messages)
        result.mentions_recorded += outcome > 0
        result.on_timelines += outcome == 2


def social_engagement_poll(*, now: datetime | None = None) -> PollResult:
    """Fetch counts, replies and mentions for what was published in the last ``CHORUS_SOCIAL_POLL_DAYS`` days.

    A network that fails is logged and left for the next poll; the other is still polled.
    """
    now = now or timezone.now()
    since = now - timedelta(days=settings.CHORUS_SOCIAL_POLL_DAYS)
    result = PollResult(errors=[])
    for network in NETWORKS:
        try:
            _network_poll(network, since, now, result)
        except ChannelError as exc:
            logger.warning("Polling %s engagement failed: %s", network, exc.message)
            result.errors.append(f"{network}: {exc.message}")
    return result
