"""Channel writes: sending messages, and turning provider events into status and timeline.

``sending`` is the only caller of channel adapters; ``events`` applies provider
webhooks; ``status`` moves a message's status forward, never back; ``retry``
queues failed deliveries again by hand.
"""

from channels.services.events import provider_event_process, provider_events_record, twilio_help_reply
from channels.services.retry import messages_retry
from channels.services.sending import TransientSendError, messages_send, skip_reason
from channels.services.status import message_advance

__all__ = [
    "TransientSendError",
    "message_advance",
    "messages_retry",
    "messages_send",
    "provider_event_process",
    "provider_events_record",
    "skip_reason",
    "twilio_help_reply",
]
