#!/usr/bin/env python3
"""A classgrid gRPC client for course platforms (grpcio), with stubs
generated from proto/ at run time by grpcio-tools.

As a program it books a lesson, watches it until its seats run, reads the
endpoints, and cancels it (what CI runs against a real broker).
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import urllib.request
import uuid


def generate(proto_dir, out_dir):
    """Compiles proto/classgrid/v1/*.proto into out_dir and imports it."""
    import grpc_tools
    from grpc_tools import protoc

    files = sorted(
        os.path.join("classgrid", "v1", f)
        for f in os.listdir(os.path.join(proto_dir, "classgrid", "v1"))
        if f.endswith(".proto")
    )
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", *files])
    if rc != 0:
        sys.exit(f"protoc failed ({rc}) for {files}")
    sys.path.insert(0, out_dir)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="host:port of the broker's gRPC address")
    ap.add_argument("--token", required=True)
    ap.add_argument("--site", required=True)
    ap.add_argument("--seats", type=int, default=2)
    ap.add_argument("--ca-file", help="the region CA; without it, plain text (--insecure-dev brokers)")
    ap.add_argument("--proto", default=os.path.join(os.path.dirname(__file__), "..", "..", "proto"))
    a = ap.parse_args()

    out = tempfile.mkdtemp(prefix="classgrid-py-")
    generate(os.path.abspath(a.proto), out)
    import grpc
    from google.protobuf import timestamp_pb2
    from classgrid.v1 import common_pb2, lesson_pb2, lesson_pb2_grpc

    if a.ca_file:
        creds = grpc.ssl_channel_credentials(open(a.ca_file, "rb").read())
        channel = grpc.secure_channel(a.target, creds)
    else:
        channel = grpc.insecure_channel(a.target)
    meta = [("authorization", f"Bearer {a.token}")]
    lessons = lesson_pb2_grpc.LessonServiceStub(channel)

    # Bad input: INVALID_ARGUMENT naming the field.
    try:
        lessons.Book(lesson_pb2.BookLessonRequest(school_site=a.site, seats=0), metadata=meta)
        sys.exit("a booking with 0 seats was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "seats" in e.details(), e

    start = timestamp_pb2.Timestamp()
    start.FromDatetime(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2))
    req = lesson_pb2.BookLessonRequest(
        request_id=f"grpc-client-{uuid.uuid4()}", school_site=a.site, title="python grpc client",
        start=start, duration_seconds=120, seats=a.seats,
        seat=common_pb2.SeatSpec(cpu_millis=100, memory_mib=64),
        workload=common_pb2.Workload(command="python3",
                                     args=["-m", "http.server", "--bind", "127.0.0.1", "$(PORT)"]))
    lesson = lessons.Book(req, metadata=meta)
    again = lessons.Book(req, metadata=meta)
    assert again.id == lesson.id, "a retried booking made a second lesson"
    print(f"booked {lesson.id}: {lesson.state}, {len(lesson.seats)} seats")

    endpoints = []
    for l in lessons.Watch(lesson_pb2.GetLessonRequest(id=lesson.id), metadata=meta, timeout=60):
        print(f"  {l.state}: {[s.state for s in l.seats]}")
        if l.seats and all(s.state == "running" and s.endpoint for s in l.seats):
            endpoints = [s.endpoint for s in l.seats]
            break
    assert endpoints, "the lesson ended before its seats ran"
    for e in endpoints:
        with urllib.request.urlopen(e + "/", timeout=10) as r:
            assert r.status == 200, (e, r.status)
        print(f"  seat endpoint {e} answers")
    done = lessons.Cancel(lesson_pb2.CancelLessonRequest(id=lesson.id, reason="client test done"), metadata=meta)
    assert done.state == "cancelled", done
    print("grpc client: ok")


if __name__ == "__main__":
    main()
