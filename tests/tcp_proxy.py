"""`python tests/tcp_proxy.py LISTEN_PORT TARGET_PORT`: forwards TCP on 127.0.0.1, a thread per
direction. Stopped with SIGSTOP it is a hung server: connections are accepted by the kernel and
bytes go in, but nothing ever answers."""

from __future__ import annotations

import socket
import sys
import threading


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main() -> None:
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    server = socket.create_server(("127.0.0.1", listen_port), backlog=64)
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", target_port))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
