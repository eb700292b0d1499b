"""A minimal OTLP/HTTP receiver for the tests: decodes each export with the official
opentelemetry-proto messages (protobuf, as collectors do) and appends it as one JSON line to a
file. A body that does not decode gets 400, as a collector answers, and is recorded as an error.

    python receiver.py PORT_FILE OUT_FILE
"""
import http.server
import json
import sys

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

KINDS = {
    "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "/v1/metrics": (metrics_service_pb2.ExportMetricsServiceRequest, metrics_service_pb2.ExportMetricsServiceResponse),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        kinds = KINDS.get(self.path)
        record = {"path": self.path, "content_type": self.headers.get("content-type")}
        status = 200
        if kinds is None:
            status, record["error"] = 404, "unknown path"
        else:
            request = kinds[0]()
            try:
                request.ParseFromString(body)
                record["body"] = MessageToDict(request)
            except DecodeError as e:
                status, record["error"] = 400, str(e)
        with open(sys.argv[2], "a") as out:
            out.write(json.dumps(record) + "\n")
        payload = kinds[1]().SerializeToString() if kinds and status == 200 else b""
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
