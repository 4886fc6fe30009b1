#!/usr/bin/env python3
"""Time from a task becoming TASK_RUNNING to its name resolving, end to end through a real
`flotilla dev` (issue 7: goal <= 10 ms p99).

The path measured: the agent's TASK_RUNNING reaches the master; the leading master writes the
task's discovery entry to the registry (a Raft commit, fsynced); the agent's discovery feed
receives it on the registry's watch stream; the DNS actor applies it; the name answers over
UDP.

For each of N apps (one instance each, created one after another), a poller asks the DNS
server for `<app>.marathon.mesos` A every POLL seconds from the moment the app is posted, and
records the wall-clock time of the first answer with an address. The start is the
`timestamp` of the app's `status_update_event` with `TASK_RUNNING` on /v2/events: the
scheduler's wall clock when it handled the update (same machine, same clock). That timestamp
has millisecond resolution and is cut, not rounded, so each latency is overstated by up to
1 ms (plus up to POLL): the figures are upper bounds.

Usage: benches/dns/running_to_resolvable.py FLOTILLA_BINARY [apps, default 200]
Standard library only.
"""

import datetime
import http.client
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

POLL = 0.0002  # seconds between two DNS questions for the same name
BOUND = 30.0  # seconds any one wait may take before the run fails


def start_dev(binary, data_dir):
    """`flotilla dev` on a free DNS port; returns (process, dns address, marathon host:port)."""
    env = dict(os.environ, FLOTILLA_DATA_DIR=data_dir, RUST_LOG="warn")
    proc = subprocess.Popen(
        [binary, "dev", "--dns-listen", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    dns = marathon = None
    deadline = time.time() + 120
    for line in proc.stdout:
        if line.startswith("dns: "):
            host, port = line.split()[1].rsplit(":", 1)
            dns = (host, int(port))
        if line.startswith("marathon: http://"):
            marathon = line.strip()[len("marathon: http://"):].rstrip("/")
        if line.startswith("flotilla dev: ready") or time.time() > deadline:
            break
    if dns is None or marathon is None:
        proc.kill()
        sys.exit("flotilla dev did not print its DNS and Marathon addresses")
    # Keep draining stdout so the node never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, dns, marathon


def query_a(name, qid):
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return header + labels + b"\0" + struct.pack(">HH", 1, 1)


def resolved_at(dns, name, deadline):
    """Wall-clock time of the first answer with an address for `name`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)
    qid = random.randrange(1, 0xFFFF)
    try:
        while time.time() < deadline:
            qid = qid % 0xFFFF + 1
            sock.sendto(query_a(name, qid), dns)
            try:
                while True:
                    reply = sock.recv(4096)
                    if struct.unpack(">H", reply[:2])[0] == qid:
                        break
            except socket.timeout:
                continue
            answers = struct.unpack(">H", reply[6:8])[0]
            if reply[3] & 0x0F == 0 and answers > 0:
                return time.time()
            time.sleep(POLL)
    finally:
        sock.close()
    raise SystemExit(f"{name} did not resolve within {BOUND} s")


class RunningEvents(threading.Thread):
    """Follows /v2/events; keeps each app's first TASK_RUNNING timestamp (epoch seconds)."""

    def __init__(self, marathon):
        super().__init__(daemon=True)
        self.marathon = marathon
        self.running = {}
        self.cond = threading.Condition()

    def run(self):
        conn = http.client.HTTPConnection(self.marathon, timeout=None)
        conn.request("GET", "/v2/events?event_type=status_update_event", headers={"Accept": "text/event-stream"})
        response = conn.getresponse()
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event.get("taskStatus") != "TASK_RUNNING":
                continue
            at = datetime.datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
            at = at.replace(tzinfo=datetime.timezone.utc).timestamp()
            with self.cond:
                self.running.setdefault(event["appId"], at)
                self.cond.notify_all()

    def wait_for(self, app_id, deadline):
        with self.cond:
            while app_id not in self.running:
                left = deadline - time.time()
                if left <= 0:
                    raise SystemExit(f"no TASK_RUNNING event for {app_id} within {BOUND} s")
                self.cond.wait(left)
            return self.running[app_id]


def post_app(marathon, app_id, deadline):
    """Creates the app; a 503 (no leader or scheduler yet, right after start) is retried."""
    body = json.dumps({"id": app_id, "cmd": "sleep 3600", "cpus": 0.01, "mem": 8, "instances": 1})
    while True:
        conn = http.client.HTTPConnection(marathon, timeout=BOUND)
        conn.request("POST", "/v2/apps", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status in (200, 201):
            return
        if response.status != 503 or time.time() > deadline:
            raise SystemExit(f"POST {app_id}: HTTP {response.status}")
        time.sleep(0.05)


def percentile(sorted_values, p):
    return sorted_values[round((len(sorted_values) - 1) * p)]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    apps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    data_dir = tempfile.mkdtemp(prefix="flotilla-propagation-")
    proc, dns, marathon = start_dev(binary, data_dir)
    try:
        events = RunningEvents(marathon)
        events.start()
        latencies = []
        for i in range(apps):
            app = f"prop{i}"
            deadline = time.time() + BOUND
            post_app(marathon, f"/{app}", deadline)
            resolved = resolved_at(dns, f"{app}.marathon.mesos", deadline)
            running = events.wait_for(f"/{app}", deadline)
            latencies.append((resolved - running) * 1000.0)
        latencies.sort()
        print(f"TASK_RUNNING -> resolvable over UDP, end to end through flotilla dev, {apps} apps:")
        print(
            "  p50 {:.2f} ms, p90 {:.2f} ms, p99 {:.2f} ms, max {:.2f} ms, min {:.2f} ms".format(
                percentile(latencies, 0.5),
                percentile(latencies, 0.9),
                percentile(latencies, 0.99),
                latencies[-1],
                latencies[0],
            )
        )
        print(f"  (upper bounds: start cut to the millisecond, poll every {POLL * 1000:.1f} ms)")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
