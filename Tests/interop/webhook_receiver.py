#!/usr/bin/env python3
"""A webhook endpoint for tests: verifies Depot's signature, answers 500 to the first
FAIL_FIRST requests, and appends one JSON line per accepted delivery to OUT.

Usage: webhook_receiver.py PORT_FILE OUT SECRET FAIL_FIRST
Signature: Depot-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(SECRET, "<t>.<body>")>."""
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

port_file, out, secret, fail_first = sys.argv[1], sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])
seen = {"requests": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        seen["requests"] += 1
        if seen["requests"] <= fail_first:
            self.send_response(500)
            self.end_headers()
            return
        parts = dict(p.split("=", 1) for p in self.headers.get("Depot-Signature", "").split(",") if "=" in p)
        expected = hmac.new(secret, (parts.get("t", "") + ".").encode() + body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(expected, parts.get("v1", "")) and abs(time.time() - int(parts.get("t", "0"))) < 300
        with open(out, "a") as f:
            f.write(json.dumps({"valid": valid, "event": self.headers.get("Depot-Event"),
                                "delivery": self.headers.get("Depot-Delivery"), "body": json.loads(body)}) + "\n")
        self.send_response(204 if valid else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
