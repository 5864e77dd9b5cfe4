#!/usr/bin/env python3
"""A slow TCP link for the replication crash tests.

    slow_link.py LISTEN_PORT UPSTREAM_PORT BYTES_PER_SECOND DOWN_FILE

Relays 127.0.0.1:LISTEN_PORT to 127.0.0.1:UPSTREAM_PORT, with the client-to-upstream direction
limited to BYTES_PER_SECOND, so that an update takes long enough for a kill to land in the
middle of it. While DOWN_FILE exists, new connections are closed at once (the link is down).
"""
import os
import socket
import sys
import threading
import time

BURST = 256 * 1024


def pump(src, dst, rate):
    # A token bucket holding at most BURST bytes: an idle connection does not save up credit
    # for a later burst at full speed.
    credit, last = 0.0, time.monotonic()
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if rate:
                now = time.monotonic()
                credit = min(credit + (now - last) * rate, BURST) - len(data)
                last = now
                if credit < 0:
                    time.sleep(-credit / rate)
                    credit, last = 0.0, time.monotonic()
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(client, upstream_port, rate, down_file):
    if os.path.exists(down_file):
        client.close()
        return
    try:
        up = socket.create_connection(("127.0.0.1", upstream_port), timeout=5)
        up.settimeout(None)
    except OSError:
        client.close()
        return
    threading.Thread(target=pump, args=(client, up, rate), daemon=True).start()
    threading.Thread(target=pump, args=(up, client, 0), daemon=True).start()


def main():
    listen_port, upstream_port, rate = (int(a) for a in sys.argv[1:4])
    down_file = sys.argv[4]
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", listen_port))
    lsock.listen(16)
    while True:
        client, _ = lsock.accept()
        serve(client, upstream_port, rate, down_file)


if __name__ == "__main__":
    main()
