"""History with the unmodified centrifuge-python client: limit, since, reverse.

Run by tests/real_clients.rs with EDGELIVE_URL. Exits non-zero on any failure.
"""

import asyncio
import os

from centrifuge import Client, StreamPosition

URL = os.environ["EDGELIVE_URL"]
CHANNEL = "grafana/broadcast/py-history"


async def main():
    c = Client(URL, timeout=5.0)
    await c.connect()
    for n in range(1, 11):
        await c.publish(CHANNEL, {"n": n})

    top = await c.history(CHANNEL)  # limit 0: position only
    assert top.publications == [] and top.offset == 10 and len(top.epoch) == 8, top

    everything = await c.history(CHANNEL, limit=-1)
    assert [p.data["n"] for p in everything.publications] == list(range(1, 11))
    assert [p.offset for p in everything.publications] == list(range(1, 11))

    first3 = await c.history(CHANNEL, limit=3)
    assert [p.data["n"] for p in first3.publications] == [1, 2, 3]

    since = await c.history(CHANNEL, limit=4, since=StreamPosition(offset=5, epoch=top.epoch))
    assert [p.data["n"] for p in since.publications] == [6, 7, 8, 9], since

    newest = await c.history(CHANNEL, limit=2, reverse=True)
    assert [p.data["n"] for p in newest.publications] == [10, 9]

    before = await c.history(CHANNEL, limit=10, reverse=True, since=StreamPosition(offset=4, epoch=top.epoch))
    assert [p.data["n"] for p in before.publications] == [3, 2, 1], before

    try:
        await c.history(CHANNEL, limit=1, since=StreamPosition(offset=1, epoch="XXXXXXXX"))
        raise AssertionError("an epoch mismatch must fail")
    except Exception as e:  # centrifuge raises ReplyError with the code
        assert getattr(e, "code", None) == 112, repr(e)

    await c.disconnect()
    print("ok history limit/since/reverse and 112")


if __name__ == "__main__":
    asyncio.run(main())
