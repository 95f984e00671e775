from django.apps import AppConfig


class MediachatConfig(AppConfig):
    name = "mediachat"
    verbose_name = "Conversations"
