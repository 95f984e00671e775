"""ASGI entry point: HTTP through Django, websockets through Channels (origin-checked, session auth)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediachat.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry loaded)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from mediachat.engine import get_engine  # noqa: E402
from mediachat.routing import websocket_urlpatterns  # noqa: E402

# The engine's imports (torch and transformers for the language-model engine) take seconds: done now,
# not by the first socket, which would stall the event loop and every other socket with it.
get_engine()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
