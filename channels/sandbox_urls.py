from django.urls import path

from channels import sandbox

app_name = "sandbox"
urlpatterns = [
    path("sendgrid/v3/mail/send", sandbox.sendgrid_mail_send, name="sendgrid-mail-send"),
    path(
        "twilio/2010-04-01/Accounts/<str:account_sid>/Messages.json",
        sandbox.twilio_messages_create,
        name="twilio-messages",
    ),
]
