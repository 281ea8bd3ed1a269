"""The unmodified centrifuge-python client with credentials against edgelive: an API token with
the viewer role (subscribe yes, publish 103), and a short-lived JWT refreshed through get_token.

Run by tests/real_clients.rs with EDGELIVE_URL, EDGELIVE_VIEWER_TOKEN and EDGELIVE_JWT_SECRET;
the daemon closes unrefreshed connections 2 s after expiry. Exits non-zero on any failure.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time

from centrifuge import Client, ClientState, CentrifugeError, SubscriptionEventHandler

URL = os.environ["EDGELIVE_URL"]
VIEWER = os.environ["EDGELIVE_VIEWER_TOKEN"]
SECRET = os.environ["EDGELIVE_JWT_SECRET"].encode()


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(claims: dict) -> str:
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


async def viewer_can_subscribe_but_not_publish():
    c = Client(URL, token=VIEWER)
    await c.connect()
    sub = c.new_subscription("grafana/broadcast/py-auth", SubscriptionEventHandler())
    await sub.subscribe()
    await sub.ready()
    try:
        await sub.publish({"no": "way"})
        raise AssertionError("a viewer published")
    except CentrifugeError as e:
        assert getattr(e, "code", None) == 103, repr(e)
    await c.disconnect()
    print("ok viewer")


async def jwt_is_refreshed():
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return sign({"sub": "py", "exp": int(time.time()) + 2})

    c = Client(URL, get_token=get_token)
    await c.connect()
    await c.ready()
    await asyncio.sleep(7)
    assert c.state == ClientState.CONNECTED, c.state
    assert calls >= 3, calls
    await c.disconnect()
    print(f"ok refresh ({calls} tokens)")


async def main():
    await viewer_can_subscribe_but_not_publish()
    await jwt_is_refreshed()
    print("ok auth")


asyncio.run(main())
