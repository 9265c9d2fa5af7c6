"""A minimal OTLP/gRPC trace receiver for tests/traces.rs: it accepts
TraceService.Export on 127.0.0.1:PORT and appends one JSON line per span to
OUT (trace id, span id, parent span id in hex, name, service, and the
span's attributes as strings), so the test reads what a real OTLP exporter
sent over the wire.

Usage: otlp_receiver.py PORT OUT
"""

import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)


def attributes(span):
    """The span's attributes, each value as a string."""
    out = {}
    for attr in span.attributes:
        kind = attr.value.WhichOneof("value")
        out[attr.key] = str(getattr(attr.value, kind)) if kind else ""
    return out


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out = out

    def Export(self, request, context):
        with open(self.out, "a", encoding="utf-8") as f:
            for rs in request.resource_spans:
                service = ""
                for attr in rs.resource.attributes:
                    if attr.key == "service.name":
                        service = attr.value.string_value
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        f.write(
                            json.dumps(
                                {
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_span_id": span.parent_span_id.hex(),
                                    "name": span.name,
                                    "service": service,
                                    "attributes": attributes(span),
                                }
                            )
                            + "\n"
                        )
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    port, out = sys.argv[1], sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(out), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("otlp receiver listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
