"""The unmodified centrifuge-python client (PyPI, 0.7) against edgelive.

Run by tests/real_clients.rs with EDGELIVE_URL (a daemon pinging every second) and
EDGELIVE_LIMITED_URL (max_connections = 1). Exits non-zero on any failure.
"""

import asyncio
import os
import sys

from centrifuge import (
    Client,
    ClientEventHandler,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    SubscriptionEventHandler,
)

URL = os.environ["EDGELIVE_URL"]
LIMITED_URL = os.environ["EDGELIVE_LIMITED_URL"]
CHANNEL = "grafana/broadcast/py-room"


class Events(SubscriptionEventHandler):
    def __init__(self):
        self.pubs = []
        self.joins = []
        self.leaves = []

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.pubs.append(ctx.pub.data)

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info.client)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.append(ctx.info.client)


class ClientEvents(ClientEventHandler):
    def __init__(self):
        self.disconnects = []

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnects.append((ctx.code, ctx.reason))


async def eventually(pred, what, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out: {what}")


async def pub_sub_presence():
    ev_a, ev_b = ClientEvents(), ClientEvents()
    a = Client(URL, events=ev_a, timeout=5.0)
    b = Client(URL, events=ev_b, timeout=5.0)
    sa_events, sb_events = Events(), Events()
    sa = a.new_subscription(CHANNEL, events=sa_events, join_leave=True)
    sb = b.new_subscription("1/" + CHANNEL, events=sb_events, join_leave=True)
    await a.connect()
    await sa.subscribe()
    await sa.ready(timeout=5.0)
    await b.connect()
    await sb.subscribe()
    await sb.ready(timeout=5.0)
    await eventually(lambda: len(sa_events.joins) == 2, "a sees its own and b's join")

    await sa.publish({"from": "a"})
    await b.publish("1/" + CHANNEL, {"from": "b"})
    await eventually(lambda: len(sa_events.pubs) == 2 and len(sb_events.pubs) == 2, "both publications")
    assert sa_events.pubs == [{"from": "a"}, {"from": "b"}], sa_events.pubs
    assert sb_events.pubs == sa_events.pubs, sb_events.pubs

    presence = await sa.presence()
    assert len(presence.clients) == 2, presence
    stats = await sb.presence_stats()
    assert (stats.num_clients, stats.num_users) == (2, 1), stats

    await sb.unsubscribe()
    await eventually(lambda: len(sa_events.leaves) == 1, "a sees b leave")
    stats = await a.presence_stats(CHANNEL)
    assert stats.num_clients == 1, stats

    # Pings every second; the client answers and stays connected.
    await asyncio.sleep(3.5)
    assert ev_a.disconnects == [], ev_a.disconnects
    await a.disconnect()
    await b.disconnect()


async def connection_limit_is_terminal():
    first = Client(LIMITED_URL, timeout=5.0)
    await first.connect()
    await first.ready(timeout=5.0)
    ev = ClientEvents()
    second = Client(LIMITED_URL, events=ev, timeout=5.0)
    await second.connect()
    await eventually(lambda: len(ev.disconnects) >= 1, "second is refused")
    assert ev.disconnects[0] == (3504, "connection limit"), ev.disconnects
    await asyncio.sleep(1.5)
    assert second.state.value == "disconnected", second.state
    assert len(ev.disconnects) == 1, ev.disconnects
    await first.disconnect()


async def main():
    await pub_sub_presence()
    print("ok pub/sub, presence, join/leave, unsubscribe, pings")
    await connection_limit_is_terminal()
    print("ok 3504 connection limit is terminal")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
