#!/usr/bin/python3
"""A real BitTorrent peer (Debian's python3-libtorrent) for the sniff tests.

  peer.py seed  DIR IP PORT MODE SECONDS          makes DIR/data and DIR/t.torrent, seeds
  peer.py leech DIR IP PORT MODE SECONDS PEER_IP PEER_PORT
                                                  downloads DIR/t.torrent from the peer

MODE is "tcp" (uTP off) or "utp" (TCP off). DHT is on, bootstrapped from
the other peer only; LSD, UPnP and NAT-PMP are off: nothing leaves the
test's namespaces. Ends after SECONDS, or once the download is complete
(the leecher prints "complete").
"""
import os
import sys
import time

import libtorrent as lt

role, folder, ip, port, mode, seconds = sys.argv[1:7]
port, seconds = int(port), float(seconds)
peer = (sys.argv[7], int(sys.argv[8])) if role == "leech" else None

settings = {
    "listen_interfaces": f"{ip}:{port}",
    "enable_dht": True,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "dht_bootstrap_nodes": f"{peer[0]}:{peer[1]}" if peer else "",
    "enable_outgoing_utp": mode == "utp",
    "enable_incoming_utp": mode == "utp",
    "enable_outgoing_tcp": mode == "tcp",
    "enable_incoming_tcp": mode == "tcp",
    "outgoing_interfaces": ip,
    "alert_mask": 0,
    "allow_multiple_connections_per_ip": True,
}
ses = lt.session(settings)
torrent_path = os.path.join(folder, "t.torrent")

if role == "seed":
    data = os.path.join(folder, "data")
    with open(data, "wb") as f:
        f.write(os.urandom(6 * 1024 * 1024))
    fs = lt.file_storage()
    lt.add_files(fs, data)
    ct = lt.create_torrent(fs, 16 * 1024)
    lt.set_piece_hashes(ct, folder)
    with open(torrent_path + ".tmp", "wb") as f:
        f.write(lt.bencode(ct.generate()))
    os.rename(torrent_path + ".tmp", torrent_path)
    h = ses.add_torrent({"ti": lt.torrent_info(torrent_path), "save_path": folder, "flags": lt.torrent_flags.seed_mode})
else:
    deadline = time.time() + 10
    while not os.path.exists(torrent_path) and time.time() < deadline:
        time.sleep(0.05)
    out = os.path.join(folder, "got")
    os.makedirs(out, exist_ok=True)
    h = ses.add_torrent({"ti": lt.torrent_info(torrent_path), "save_path": out})
    h.connect_peer(peer)
    ses.add_dht_node(peer)

print("ready", flush=True)
end = time.time() + seconds
done = False
while time.time() < end:
    s = h.status()
    if role == "leech" and s.is_seeding and not done:
        done = True
        print("complete", flush=True)
    if role == "leech" and not done and s.num_peers == 0 and peer:
        h.connect_peer(peer)
    time.sleep(0.1)
