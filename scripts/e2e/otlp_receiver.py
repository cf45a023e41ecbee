#!/usr/bin/env python3
"""A minimal OpenTelemetry collector for the end-to-end scenarios: receives OTLP/HTTP trace
exports (protobuf, as Depot sends them by default) on 127.0.0.1, decodes them with the
OpenTelemetry project's own protobuf classes (PyPI `opentelemetry-proto`), and appends one JSON
object per span to a file, for the scenario to check:

  {"trace": hex, "span": hex, "parent": hex or "", "name": str, "kind": int,
   "service": str, "start_ns": int, "end_ns": int, "status": int, "attributes": {key: value}}

    otlp_receiver.py PORT OUT.jsonl      (runs until killed)
    otlp_receiver.py --check OUT.jsonl   (prints a summary: span names and counts)
"""
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def value(v):
    kind = v.WhichOneof("value")
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "string_value":
        return v.string_value
    return str(v)


lock = threading.Lock()


def make_handler(out_path):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length", "0"))
            if length > 64 << 20:
                self.send_error(413)
                return
            body = self.rfile.read(length)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception as e:  # a malformed export is the sender's bug: say so
                self.send_error(400, str(e))
                return
            lines = []
            for rs in request.resource_spans:
                service = ""
                for kv in rs.resource.attributes:
                    if kv.key == "service.name":
                        service = value(kv.value)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        lines.append(json.dumps({
                            "trace": s.trace_id.hex(), "span": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                            "name": s.name, "kind": s.kind, "service": service,
                            "start_ns": s.start_time_unix_nano, "end_ns": s.end_time_unix_nano,
                            "status": s.status.code,
                            "attributes": {kv.key: value(kv.value) for kv in s.attributes},
                        }))
            with lock, open(out_path, "a") as f:  # exports arrive on several threads at once
                f.write("".join(line + "\n" for line in lines))
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    return Handler


def main():
    if sys.argv[1] == "--check":
        counts = {}
        for line in open(sys.argv[2]):
            name = json.loads(line)["name"]
            counts[name] = counts.get(name, 0) + 1
        for name in sorted(counts):
            print(f"{counts[name]:6d} {name}")
        return
    port, out = int(sys.argv[1]), sys.argv[2]
    open(out, "a").close()
    ThreadingHTTPServer(("127.0.0.1", port), make_handler(out)).serve_forever()


if __name__ == "__main__":
    main()
