from django.urls import path

from channels.sandbox import bluesky, mastodon, sendgrid, twilio

app_name = "sandbox"
urlpatterns = [
    path("sendgrid/v3/mail/send", sendgrid.sendgrid_mail_send, name="sendgrid-mail-send"),
    path(
        "twilio/2010-04-01/Accounts/<str:account_sid>/Messages.json",
        twilio.twilio_messages_create,
        name="twilio-messages",
    ),
    path("mastodon/api/v1/instance", mastodon.mastodon_instance_v1, name="mastodon-instance"),
    path("mastodon/api/v1/instance/", mastodon.mastodon_instance_v1),  # Mastodon.py asks with the slash
    path("mastodon/api/v2/instance", mastodon.mastodon_instance_v2, name="mastodon-instance-v2"),
    path("mastodon/api/v2/instance/", mastodon.mastodon_instance_v2),
    path(
        "mastodon/api/v1/accounts/verify_credentials",
        mastodon.mastodon_verify_credentials,
        name="mastodon-verify-credentials",
    ),
    path("mastodon/api/v2/media", mastodon.mastodon_media_create, name="mastodon-media"),
    path("mastodon/api/v1/media/<str:media_id>", mastodon.mastodon_media_detail, name="mastodon-media-detail"),
    path("mastodon/api/v1/statuses", mastodon.mastodon_statuses, name="mastodon-statuses"),
    path("mastodon/api/v1/statuses/<str:status_id>", mastodon.mastodon_status_detail, name="mastodon-status"),
    path(
        "mastodon/api/v1/statuses/<str:status_id>/context",
        mastodon.mastodon_status_context,
        name="mastodon-status-context",
    ),
    path("mastodon/api/v1/notifications", mastodon.mastodon_notifications, name="mastodon-notifications"),
    path("bluesky/xrpc/<str:nsid>", bluesky.bluesky_xrpc, name="bluesky-xrpc"),
]
