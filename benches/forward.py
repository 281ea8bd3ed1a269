#!/usr/bin/env python3
"""[[forward]] benchmarks, driven by benches/forward.sh (which builds the release binary).

1. Points/s forwarded by one edge pinned to one core, gzip off and on: the edge's queue is
   filled while its target is down, then a sink (this script, on the other core, answering 204)
   or a central edgelive comes up and the drain is timed; the edge's CPU time per point is read
   from /proc.
2. Catch-up after a 10-minute outage at 1,000 points/s: 600,000 points queued (filled faster
   than real time: the queue holds the same either way), then the central comes back while
   1,000 points/s keep arriving; the time until the queue is empty.
3. Disk bytes per queued point: the store's growth and the queue's own count.

Every server runs on a free loopback port with its own temp dir and is stopped at the end.
"""

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.abspath("target/release/edgelive")
CLK = os.sysconf("SC_CLK_TCK")
POINTS = int(os.environ.get("POINTS", "200000"))
OUTAGE_POINTS = int(os.environ.get("OUTAGE_POINTS", "600000"))
RATE = 1000
BATCH = int(os.environ.get("BATCH", "1000"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


class Daemon:
    def __init__(self, name, config, cpu, port=None):
        self.dir = tempfile.mkdtemp(prefix=f"fwd-{name}-")
        self.port = port or free_port()
        path = os.path.join(self.dir, "edgelive.toml")
        with open(path, "w") as f:
            f.write(config)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), BIN, "--config", path,
             "--listen", f"127.0.0.1:{self.port}", "--data-dir", os.path.join(self.dir, "data")],
            stderr=self.log, env={**os.environ, "EDGELIVE_LOG_LEVEL": "warn"})
        for _ in range(200):
            try:
                self.get("/api/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name} did not start")

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def get(self, path):
        c = self.conn()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return json.loads(body)

    def forward(self):
        return self.get("/api/status")["forward"][0]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Sink(http.server.BaseHTTPRequestHandler):
    """A central that takes everything: reads the body, answers 204."""
    protocol_version = "HTTP/1.1"
    points = 0

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def start_sink(port):
    os.sched_setaffinity(0, {1})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv


def fill(edge, points, per_body=100):
    """Pushes `points` points to stream plant1 in bodies of `per_body` lines."""
    c = edge.conn()
    base = 1_700_000_000_000_000_000
    for start in range(0, points, per_body):
        body = "".join(
            f"env,room=r{i % 8},sensor=s{i % 32} temp={20 + (i % 100) / 10},rh={40 + i % 20}i {base + i * 1000}\n"
            for i in range(start, start + per_body))
        c.request("POST", "/api/live/push/plant1", body)
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
    c.close()


def wait_drained(edge, limit=900):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        f = edge.forward()
        if f["queue_points"] == 0:
            return time.monotonic() - t0, f
        time.sleep(0.05)
    raise RuntimeError(f"not drained: {edge.forward()}")


def edge_config(port, gzip, extra=""):
    return (f'[storage]\ncache_capacity_mib = 32\n[[forward]]\nname = "central"\n'
            f'url = "http://127.0.0.1:{port}/api/live/push/{{stream}}"\n'
            f'gzip = {"true" if gzip else "false"}\nretry_min = "50ms"\nretry_max = "200ms"\n'
            f'max_queue = "1GiB"\nbatch_size = {BATCH}\n{extra}')


CENTRAL = ('[push]\nmax_body_size = 16777216\n[[history]]\npattern = "stream/**"\n'
           'size = 100\nttl = "10m"\n')


def throughput():
    rows = []
    for target in ["sink", "edgelive"]:
        for gzip in [False, True]:
            port = free_port()
            edge = Daemon("edge", edge_config(port, gzip), cpu=0)
            cpu_in = cpu_seconds(edge.proc.pid)
            fill(edge, POINTS)
            assert edge.forward()["queue_points"] == POINTS
            cpu0 = cpu_seconds(edge.proc.pid)
            accept_us = (cpu0 - cpu_in) / POINTS * 1e6
            if target == "sink":
                central = start_sink(port)
            else:
                central = Daemon("central", CENTRAL, cpu=1, port=port)
            secs, f = wait_drained(edge)
            cpu = cpu_seconds(edge.proc.pid) - cpu0
            rows.append((target, gzip, POINTS / secs, accept_us, cpu / POINTS * 1e6,
                         f["sent_requests"]))
            edge.stop()
            if target == "sink":
                central.shutdown()
            else:
                central.stop()
    print(f"\n### Forwarding throughput ({POINTS:,} queued points, edge pinned to one core)\n")
    print("| far side | gzip | points/s forwarded | edge CPU µs/point accepting (push, history,"
          " queue) | edge CPU µs/point forwarding | requests |")
    print("|---|---|---:|---:|---:|---:|")
    for target, gzip, rate, accept, us, reqs in rows:
        print(f"| {target} | {'on' if gzip else 'off'} | {rate:,.0f} | {accept:.2f} | {us:.2f} |"
              f" {reqs:,} |")


def store_growth(config, points):
    """Bytes the edge's data dir grew by while `points` were pushed."""
    d = Daemon("edge", config, cpu=0)
    before = du(os.path.join(d.dir, "data"))
    fill(d, points)
    grown = du(os.path.join(d.dir, "data")) - before
    d.stop()
    return grown


def catch_up():
    # The same pushes into an edge without [[forward]]: history and frames alone.
    baseline = store_growth("[storage]\ncache_capacity_mib = 32\n", OUTAGE_POINTS)
    port = free_port()
    edge = Daemon("edge", edge_config(port, True), cpu=0)
    data0 = du(os.path.join(edge.dir, "data"))
    fill(edge, OUTAGE_POINTS)
    f = edge.forward()
    data1 = du(os.path.join(edge.dir, "data"))
    disk_per_point = (data1 - data0) / OUTAGE_POINTS
    queue_per_point = f["queue_bytes"] / f["queue_points"]
    stop = threading.Event()
    pushed = [0]

    def live():
        c = edge.conn()
        base = 1_800_000_000_000_000_000
        nxt = time.monotonic()
        i = 0
        while not stop.is_set():
            body = "".join(f"live,sensor=s{k} v={i + k} {base + (i + k) * 1000}\n" for k in range(10))
            c.request("POST", "/api/live/push/plant1", body)
            r = c.getresponse()
            r.read()
            i += 10
            pushed[0] += 10
            nxt += 10 / RATE
            time.sleep(max(0, nxt - time.monotonic()))
        c.close()

    t = threading.Thread(target=live)
    t.start()
    time.sleep(1)
    central = Daemon("central", CENTRAL, cpu=1, port=port)
    secs, f = wait_drained(edge)
    stop.set()
    t.join()
    sent = f["sent_points"]
    time.sleep(2)
    data2 = du(os.path.join(edge.dir, "data"))
    central.stop()
    edge.stop()
    print(f"\n### Catch-up after an outage ({OUTAGE_POINTS:,} points queued = 10 min at 1,000/s; "
          f"1,000 points/s keep arriving; gzip on; batch_size {BATCH}; central edgelive)\n")
    print("| queued | caught up in | points sent | catch-up rate (points/s) |")
    print("|---:|---:|---:|---:|")
    print(f"| {OUTAGE_POINTS:,} | {secs:.1f} s | {sent:,} | {sent / secs:,.0f} |")
    print("\n### Disk per queued point (lines like `env,room=r1,sensor=s17 temp=21.3,rh=47i <ns>`,"
          " 100 per push)\n")
    print("| store growth with the queue, bytes/point | the same pushes without [[forward]] |"
          " the queue's share | the queue's own count (keys + values) | store after the drain vs. before |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {disk_per_point:.1f} | {baseline / OUTAGE_POINTS:.1f} | "
          f"{disk_per_point - baseline / OUTAGE_POINTS:.1f} | {queue_per_point:.1f} | "
          f"{(data2 - data0) / 2**20:+.1f} MiB |")


class Mosquitto:
    def __init__(self, name, port, extra, cpu):
        self.dir = tempfile.mkdtemp(prefix=f"fwd-mosq-{name}-")
        os.chmod(self.dir, 0o777)
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"persistence_location {self.dir}/\n{extra}")
        self.proc = subprocess.Popen(["taskset", "-c", str(cpu), "mosquitto", "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = port
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)


def mosquitto_lines(n, base=1_700_000_000_000_000_000):
    return "".join(
        f"env,room=r{i % 8},sensor=s{i % 32} temp={20 + (i % 100) / 10},rh={40 + i % 20}i {base + i * 1000}\n"
        for i in range(n))


def mqtt_publish(port, topic, lines, window=64):
    """Publishes each line as one QoS 1 message (MQTT 3.1.1 by hand, `window` in flight) and
    returns once the broker acknowledged every one (mosquitto_pub -l can leave before its last
    messages are acknowledged)."""
    def packet(kind, body):
        n, rl = len(body), bytearray()
        while True:
            b, n = n % 128, n // 128
            rl.append(b | (0x80 if n else 0))
            if not n:
                break
        return bytes([kind]) + bytes(rl) + body

    def mstr(b):
        return len(b).to_bytes(2, "big") + b

    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(packet(0x10, mstr(b"MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big")
                     + mstr(b"bench-pub")))
    buf = bytearray()

    def read_packets():
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("broker closed the connection")
        buf.extend(chunk)
        out = []
        while len(buf) >= 2:
            n, mult, i = 0, 1, 1
            while True:
                if i >= len(buf):
                    return out
                b = buf[i]
                n += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if len(buf) < i + n:
                return out
            out.append((buf[0], bytes(buf[i:i + n])))
            del buf[:i + n]
        return out

    while not any(k == 0x20 for k, _ in read_packets()):
        pass
    t = mstr(topic.encode())
    inflight, pid, sent = 0, 0, 0
    for line in lines:
        pid = pid % 65535 + 1
        s.sendall(packet(0x32, t + pid.to_bytes(2, "big") + line.encode()))
        inflight += 1
        sent += 1
        while inflight >= window:
            inflight -= sum(1 for k, _ in read_packets() if k == 0x40)
    while inflight > 0:
        inflight -= sum(1 for k, _ in read_packets() if k == 0x40)
    s.sendall(bytes([0xE0, 0]))
    s.close()
    return sent


def settle(out, sub, t0):
    """Lines `sub` wrote to `out` once nothing more came for 5 s, and the seconds from `t0` to
    the last one."""
    last, size = time.monotonic(), 0
    # The first message may take a bridge reconnect (restart_timeout) to come.
    while (time.monotonic() - last < 5 or (size == 0 and time.monotonic() - t0 < 30)) \
            and time.monotonic() - t0 < 900:
        time.sleep(0.2)
        now = os.fstat(out.fileno()).st_size
        if now != size:
            size, last = now, time.monotonic()
    sub.terminate()
    sub.wait()
    out.seek(0)
    return sum(1 for _ in out), max(last - t0, 1e-3)


def mosquitto_peer():
    """The peer a user would chain instead: a Mosquitto bridge from the device's broker to a
    central broker, one point per message at QoS 1, with Debian 12's Mosquitto (2.0.11)."""
    rows = []
    for label, tuning in [
        ("defaults (max_queued_messages 1000)", ""),
        ("tuned (max_queued_messages 0, persistence)", "max_queued_messages 0\npersistence true\n"),
    ]:
        # Throughput: the central up, one subscriber there counting.
        cport, eport = free_port(), free_port()
        bridge = (f"connection central\naddress 127.0.0.1:{cport}\ntopic plant/# out 1\n"
                  f"cleansession false\nrestart_timeout 2\n")
        central = Mosquitto("central", cport, "max_queued_messages 0\n", cpu=1)
        edge = Mosquitto("edge", eport, tuning + bridge, cpu=0)
        time.sleep(1)
        n = POINTS
        out = tempfile.TemporaryFile()
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(cport), "-t", "plant/#", "-q", "1"],
                               stdout=out)
        time.sleep(0.5)
        cpu0 = cpu_seconds(edge.proc.pid)
        t0 = time.monotonic()
        mqtt_publish(eport, "plant/1", mosquitto_lines(n).splitlines())
        got, secs = settle(out, sub, t0)
        cpu = cpu_seconds(edge.proc.pid) - cpu0
        rate, us = got / secs, cpu / max(got, 1) * 1e6
        edge.stop()
        central.stop()
        # Outage: the central is down while the points arrive, then comes back.
        cport, eport = free_port(), free_port()
        bridge = (f"connection central\naddress 127.0.0.1:{cport}\ntopic plant/# out 1\n"
                  f"cleansession false\nrestart_timeout 3\n")
        edge = Mosquitto("edge", eport, tuning + bridge, cpu=0)
        mqtt_publish(eport, "plant/1", mosquitto_lines(OUTAGE_POINTS).splitlines())
        rss = edge.rss_kib()
        central = Mosquitto("central", cport, "max_queued_messages 0\n", cpu=1)
        out = tempfile.TemporaryFile()
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(cport), "-t", "plant/#", "-q", "1"],
                               stdout=out)
        received, _ = settle(out, sub, time.monotonic())
        edge.stop()
        central.stop()
        rows.append((label, rate, us, got, received, rss))
    print(f"\n### The peer: a Mosquitto bridge (Debian's 2.0.11), QoS 1, one point per message\n")
    print(f"| Mosquitto bridge | of {POINTS:,} published, central up, arrived | messages/s |"
          f" edge CPU µs/point | of {OUTAGE_POINTS:,} sent during the outage, arrived |"
          f" edge RSS holding them |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, rate, us, got, received, rss in rows:
        print(f"| {label} | {got:,} | {rate:,.0f} | {us:.2f} | {received:,} | {rss / 1024:.0f} MiB |")


if __name__ == "__main__":
    what = sys.argv[1:] or ["throughput", "catchup", "mosquitto"]
    if "throughput" in what:
        throughput()
    if "catchup" in what:
        catch_up()
    if "mosquitto" in what:
        mosquitto_peer()
