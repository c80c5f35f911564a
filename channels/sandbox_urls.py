from django.urls import path

from channels.sandbox import sendgrid, twilio

app_name = "sandbox"
urlpatterns = [
    path("sendgrid/v3/mail/send", sendgrid.sendgrid_mail_send, name="sendgrid-mail-send"),
    path(
        "twilio/2010-04-01/Accounts/<str:account_sid>/Messages.json",
        twilio.twilio_messages_create,
        name="twilio-messages",
    ),
]
