#!/usr/bin/python3
"""Ordinary traffic for the sniff tests, which must not be taken for
BitTorrent.

  traffic.py serve IP      HTTP on 8080, DNS-like UDP on 53, SSH-like TCP on
                           2222, QUIC-like UDP on 4433 (until killed)
  traffic.py talk IP N     N rounds of each against a server at IP

DNS query ids start at 0x4100 (a uTP ST_SYN's first bytes) and QUIC-like
datagrams start with 0x41 or 0xc3; every loop is bounded.
"""
import http.server
import os
import socket
import sys
import threading
import urllib.request

role, ip = sys.argv[1], sys.argv[2]

if role == "serve":
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer((ip, 8080), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def udp(port, answer):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, port))
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(answer(data), peer)

    # A DNS answer: the query's id, flags 0x8180, the question echoed.
    threading.Thread(target=udp, args=(53, lambda q: q[:2] + b"\x81\x80" + q[4:6] + b"\x00\x01\x00\x00\x00\x00" + q[12:]), daemon=True).start()
    threading.Thread(target=udp, args=(4433, lambda q: bytes([0x45]) + os.urandom(len(q) - 1)), daemon=True).start()

    ssh = socket.socket()
    ssh.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ssh.bind((ip, 2222))
    ssh.listen(16)

    def session(c):
        with c:
            c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
            c.settimeout(2)
            try:
                while data := c.recv(4096):
                    c.sendall(data)
            except OSError:
                pass

    print("ready", flush=True)
    while True:
        conn, _ = ssh.accept()
        threading.Thread(target=session, args=(conn,), daemon=True).start()
else:
    rounds = int(sys.argv[3])
    for k in range(rounds):
        urllib.request.urlopen(f"http://{ip}:8080/", timeout=2).read()
        d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        d.settimeout(2)
        qid = 0x4100 + k
        d.sendto(qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01", (ip, 53))
        d.recvfrom(2048)
        q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        q.settimeout(2)
        for first in (0xc3, 0x41, 0x41):
            q.sendto(bytes([first]) + os.urandom(60), (ip, 4433))
            q.recvfrom(2048)
        with socket.create_connection((ip, 2222), timeout=2) as s:
            s.recv(256)
            s.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n" + os.urandom(200))
            s.recv(4096)
    print("done", flush=True)
