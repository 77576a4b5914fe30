#!/usr/bin/env python3
"""A TCP relay that counts the bytes crossing it in each direction.

Every tool a benchmark compares talks to its server through one of these,
so Ferry and the anchor tools are measured the same way: bytes on the wire,
protocol and TLS overhead included.

Usage: byte_counter.py TARGET_HOST:PORT REPORT_FILE
Prints the port it listens on (loopback), then relays until killed. After
every relayed piece it rewrites REPORT_FILE as "UP DOWN" (client to server,
server to client) totals since start: a byte is counted before it is passed
on, so once a client has exited, everything it sent or received is in the
file.
"""

import asyncio
import os
import sys


class Totals:
    def __init__(self, path):
        self.path = path
        self.up = 0
        self.down = 0

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{self.up} {self.down}\n")
        os.replace(tmp, self.path)


async def pipe(reader, writer, totals, direction):
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            if direction == "up":
                totals.up += len(data)
            else:
                totals.down += len(data)
            totals.save()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    totals = Totals(sys.argv[2])
    totals.save()

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, server_writer, totals, "up"),
            pipe(server_reader, client_writer, totals, "down"),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
