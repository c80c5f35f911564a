from django.urls import path

from channels import webhooks

app_name = "webhooks"
urlpatterns = [
    path("sendgrid/events", webhooks.sendgrid_events, name="sendgrid-events"),
    path("twilio/status", webhooks.twilio_status, name="twilio-status"),
    path("twilio/inbound", webhooks.twilio_inbound, name="twilio-inbound"),
]
