"""The sandbox: an emulator of the providers' HTTP APIs.

The real provider SDKs are pointed here (the embedded default, the demo and the
tests). It checks credentials and payloads like the provider, records what it
receives (the "Sandbox outbox"), then plays back signed webhooks to
``CHORUS_PUBLIC_URL`` exactly as the provider would.

One module per provider API (``sendgrid``, ``twilio``, ``mastodon``,
``bluesky``); ``faults`` makes any of them answer 429 or 5xx on demand;
``playback`` posts SendGrid's and Twilio's webhooks with the outcomes drawn from
``CHORUS_SANDBOX_PLAYBACK``; ``engagement`` makes up the likes, reposts, replies
and mentions the social networks report when polled.

Some outcomes are chosen by address, so demos and tests can ask for them:
email to a local part starting with ``bounce`` bounces; Twilio's magic test
numbers +15005550001 (invalid) and +15005550009 (not SMS-capable) are refused.

Faults can be injected per provider, to test and benchmark the retry path:
``CHORUS_SANDBOX_FAULTS`` answers an error status for a share of all requests;
``sandbox_fault_set`` (in-process, for tests) does the same, or for the next N
requests only. A 429 carries ``Retry-After`` (SendGrid's also ``X-RateLimit-Reset``).
"""

from channels.sandbox.faults import sandbox_fault_set, sandbox_faults_clear
from channels.sandbox.playback import sandbox_events_emit, twilio_signed_post
from channels.sandbox.twilio import TWILIO_REFUSED

__all__ = ["TWILIO_REFUSED", "sandbox_events_emit", "sandbox_fault_set", "sandbox_faults_clear", "twilio_signed_post"]
