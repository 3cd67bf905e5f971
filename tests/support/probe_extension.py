"""A test external extension: registers, subscribes to the Telemetry API and writes
everything it sees as JSON lines to $PROBE_OUT. Behaviour knobs come from PROBE_* variables."""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"]
OUT = os.environ["PROBE_OUT"]
NAME = os.path.basename(sys.argv[0])
_lock = threading.Lock()


def record(kind, **fields):
    with _lock, open(OUT, "a") as f:
        f.write(json.dumps({"kind": kind, "t": time.time(), **fields}) + "\n")


def call(method, path, body=None, headers=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(API + path, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=None if path.endswith("/event/next") else 5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


class Listener(BaseHTTPRequestHandler):
    def do_POST(self):
        batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        record("telemetry", batch=batch)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    events = os.environ.get("PROBE_EVENTS", "INVOKE,SHUTDOWN").split(",")
    schema = os.environ.get("PROBE_SCHEMA", "2022-12-13")
    if os.environ.get("PROBE_FIRST_TRY_EVENTS"):
        # A registration the platform may refuse, answered before the real one.
        tried = call("POST", "/2020-01-01/extension/register", {"events": os.environ["PROBE_FIRST_TRY_EVENTS"].split(",")}, {"Lambda-Extension-Name": NAME})
        record("first-try", status=tried[0], body=tried[2])
    status, headers, body = call("POST", "/2020-01-01/extension/register", {"events": [e for e in events if e]}, {"Lambda-Extension-Name": NAME, "Lambda-Extension-Accept-Feature": "accountId"})
    ext_id = headers.get("Lambda-Extension-Identifier")
    record("register", status=status, body=body, env=dict(os.environ), pid=os.getpid())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bad = {
        "no-schema": {"types": ["platform"], "destination": {"protocol": "HTTP", "URI": "http://sandbox:9/"}},
        "empty-types": {"schemaVersion": "2022-12-13", "types": [], "destination": {"protocol": "HTTP", "URI": "http://sandbox:9/"}},
        "bad-host": {"schemaVersion": "2022-12-13", "types": ["platform"], "destination": {"protocol": "HTTP", "URI": "http://example.com:9/"}},
        "no-port": {"schemaVersion": "2022-12-13", "types": ["platform"], "destination": {"protocol": "HTTP", "URI": "http://sandbox/"}},
        "small-buffer": {"schemaVersion": "2022-12-13", "types": ["platform"], "buffering": {"maxItems": 5}, "destination": {"protocol": "HTTP", "URI": "http://sandbox:9/"}},
    }
    if schema != "2022-12-13":
        bad["older-schema"] = {"schemaVersion": "2022-12-13", "types": ["platform"], "destination": {"protocol": "HTTP", "URI": "http://sandbox:9/"}}
    answers = {name: call("PUT", "/2022-07-01/telemetry", body, {"Lambda-Extension-Identifier": ext_id}) for name, body in bad.items()}
    answers["malformed"] = call("PUT", "/2022-07-01/telemetry", headers={"Lambda-Extension-Identifier": ext_id}, raw=b"{not json")
    record("bad-subscriptions", answers={k: [v[0], v[2]] for k, v in answers.items()})
    if os.environ.get("PROBE_SUBSCRIBE", "1") == "1":
        sub = {"schemaVersion": schema, "types": ["platform", "function", "extension"], "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25}, "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{server.server_address[1]}/"}}
        status, _, body = call("PUT", "/2022-07-01/telemetry", sub, {"Lambda-Extension-Identifier": ext_id})
        record("subscribe", status=status, body=body)
    print("probe extension ready", flush=True)
    first = True
    while True:
        status, _, event = call("GET", "/2020-01-01/extension/event/next", headers={"Lambda-Extension-Identifier": ext_id})
        record("event", status=status, event=event)
        if first:
            first = False
            # After init: registering again and subscribing must both be refused.
            late = call("POST", "/2020-01-01/extension/register", {"events": []}, {"Lambda-Extension-Name": NAME + "-late"})
            late_sub = call("PUT", "/2022-07-01/telemetry", {"schemaVersion": "2022-12-13", "types": ["platform"], "destination": {"protocol": "HTTP", "URI": "http://sandbox:1234/"}}, {"Lambda-Extension-Identifier": ext_id})
            record("late", register=[late[0], late[2]], subscribe=[late_sub[0], late_sub[2]])
        if status != 200:
            return 1
        if event["eventType"] == "INVOKE":
            if os.environ.get("PROBE_EXIT_ON_INVOKE"):
                return int(os.environ["PROBE_EXIT_ON_INVOKE"])  # dies mid-invocation
            delay = float(os.environ.get("PROBE_NEXT_DELAY", "0"))
            if delay:
                time.sleep(delay)
            record("invoke-done", requestId=event["requestId"])
        elif event["eventType"] == "SHUTDOWN":
            if os.environ.get("PROBE_IGNORE_SHUTDOWN") == "1":
                while True:
                    time.sleep(1)
            time.sleep(0.1)  # let the last telemetry batch land
            record("exit")
            return 0


if __name__ == "__main__":
    sys.exit(main())
