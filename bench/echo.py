"""The benchmark's ASGI app: the platform as deployed, plus a bare Channels echo consumer on `/ws/echo/`.

Serving both from one process lets the benchmark compare the chat consumer with the cheapest
possible Channels consumer on the same server, loop and machine, in the same run.
"""

from channels.generic.websocket import AsyncWebsocketConsumer

from mediachat.asgi import application as platform

ECHO_PATH = "/ws/echo/"


class EchoConsumer(AsyncWebsocketConsumer):
    """Sends every frame straight back: the baseline cost of a Channels websocket round trip."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data, bytes_data=bytes_data)


echo = EchoConsumer.as_asgi()


async def application(scope, receive, send):
    if scope["type"] == "websocket" and scope["path"] == ECHO_PATH:
        return await echo(scope, receive, send)
    return await platform(scope, receive, send)
