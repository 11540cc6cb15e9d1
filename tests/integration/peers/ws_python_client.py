# ws_python_client.py — drives ringbeatd with the Python `websockets` library (Debian
# python3-websockets): run it with /usr/bin/python3 PORT; prints one JSON object of what it saw.
"""A real WebSocket client for test_ws_clients.py; every step is bounded by a timeout."""

import asyncio
import json
import sys
import time

import websockets
from websockets.frames import Opcode

PORT = int(sys.argv[1])
URL = "ws://127.0.0.1:%d" % PORT
out = {}


async def client_mode():
    uri = URL + "/py?mode=client&interval=1s&timeout=3s&id=py%20client"
    async with websockets.connect(uri, max_size=None, ping_interval=None, open_timeout=5) as ws:
        out["headers"] = {k.lower(): v for k, v in ws.response_headers.items()}
        pongs = []
        for payload in (b"first", b"", b"x" * 125):
            t0 = time.monotonic()
            waiter = await ws.ping(payload)  # the library matches the Pong by its payload
            await asyncio.wait_for(waiter, 2)
            pongs.append([len(payload), time.monotonic() - t0])
        out["pongs"] = pongs
        await ws.send(["frag-1 ", "frag-2 ", "frag-3"])  # one text message in three frames
        out["fragmented_echo"] = await asyncio.wait_for(ws.recv(), 2)
        blob = bytes(range(256)) * 234  # 59,904 bytes
        await ws.send(blob)
        got = await asyncio.wait_for(ws.recv(), 5)
        out["large_echo_ok"] = got == blob
        await ws.send([b"\x01" * 30000, b"\x02" * 29000])  # a fragmented binary message
        got = await asyncio.wait_for(ws.recv(), 5)
        out["fragmented_binary_ok"] = got == b"\x01" * 30000 + b"\x02" * 29000
        await asyncio.wait_for(ws.close(1000, "done"), 3)
        out["close"] = [ws.close_code, ws.close_reason]  # the code the server answered with


async def closed_with(send):
    async with websockets.connect(URL + "/?mode=client&interval=1s", max_size=None,
                                  ping_interval=None, open_timeout=5) as ws:
        await send(ws)
        try:
            await asyncio.wait_for(ws.recv(), 3)
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(ws.wait_closed(), 3)
        return [ws.close_code, ws.close_reason]


async def server_mode():
    # Server mode: ringbeatd pings every second; the library answers by itself.
    async with websockets.connect(URL + "/?interval=1s&timeout=2500ms", ping_interval=None,
                                  open_timeout=5) as ws:
        await asyncio.sleep(4.0)
        out["server_mode_open_after_4s"] = ws.open
        await ws.close()


async def main():
    await client_mode()
    out["invalid_utf8"] = await closed_with(lambda ws: ws.write_frame(True, Opcode.TEXT, b"ok\xff"))
    out["oversized"] = await closed_with(lambda ws: ws.send(b"z" * 60001))
    await server_mode()


asyncio.run(asyncio.wait_for(main(), 30))
print(json.dumps(out))
