#!/usr/bin/env python3
"""A classgrid REST client for course platforms, standard library only.

Usage as a library:

    cg = Classgrid("http://127.0.0.1:7080", token="cg_...")
    lesson = cg.book_lesson(school_site="school-a", start="2030-09-01T08:00:00+08:00",
                            seats=45, seat={"cpu_millis": 500, "memory_mib": 2048},
                            workload={"command": "jupyter", "args": ["lab", "--port", "$(PORT)"]},
                            idempotency_key="timetable-7-2-2030-09-01")
    for l in cg.watch(lesson["id"]):          # Server-Sent Events
        ...
    cg.cancel(lesson["id"], reason="class moved")

As a program it books a lesson, watches it until its seats run, reads the
endpoints, and cancels it (what CI runs against a real broker).
"""

import argparse
import datetime
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid


class ClassgridError(Exception):
    """An RFC 9457 problem: .status, .code, .errors [{field, rule}]."""

    def __init__(self, problem):
        self.problem = problem
        self.status = problem.get("status")
        self.code = problem.get("code")
        self.errors = problem.get("errors", [])
        super().__init__(f"{self.status} {self.code}: {problem.get('detail')}")


class Classgrid:
    def __init__(self, base_url, token, ca_file=None, timeout=30):
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def _request(self, method, path, body=None, idempotency_key=None):
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return urllib.request.Request(self.base + path, data=data, method=method, headers=headers)

    def _call(self, method, path, body=None, idempotency_key=None):
        req = self._request(method, path, body, idempotency_key)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {"status": e.code, "code": "http", "detail": raw.decode(errors="replace")}
            raise ClassgridError(problem) from None

    def book_lesson(self, idempotency_key=None, **booking):
        # Without a key of its own, one per call: a retry of *this* call is safe.
        return self._call("POST", "/v1/lessons", booking, idempotency_key or str(uuid.uuid4()))

    def lesson(self, lesson_id):
        return self._call("GET", f"/v1/lessons/{lesson_id}")

    def lessons(self, school=None, start_from=None, to=None, page_size=50):
        token = ""
        while True:
            q = {"page_size": page_size}
            for k, v in (("school", school), ("from", start_from), ("to", to), ("page_token", token)):
                if v:
                    q[k] = v
            page = self._call("GET", "/v1/lessons?" + urllib.parse.urlencode(q))
            yield from page["lessons"]
            token = page["next_page_token"]
            if not token:
                return

    def explain(self, lesson_id):
        return self._call("GET", f"/v1/lessons/{lesson_id}/explain")

    def cancel(self, lesson_id, reason=""):
        q = "?" + urllib.parse.urlencode({"reason": reason}) if reason else ""
        return self._call("DELETE", f"/v1/lessons/{lesson_id}{q}")

    def watch(self, lesson_id):
        """Yields the lesson on every change, until it ends or is cancelled."""
        req = self._request("GET", f"/v1/lessons/{lesson_id}/events")
        req.add_header("Accept", "text/event-stream")
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx)
        except urllib.error.HTTPError as e:
            raise ClassgridError(json.loads(e.read())) from None
        with resp:
            data = []
            for raw in resp:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif line == "" and data:
                    yield json.loads("\n".join(data))
                    data = []

    def submit_job(self, idempotency_key=None, **job):
        return self._call("POST", "/v1/jobs", job, idempotency_key or str(uuid.uuid4()))

    def job(self, job_id):
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id):
        return self._call("DELETE", f"/v1/jobs/{job_id}")

    def sites(self):
        return self._call("GET", "/v1/sites")["sites"]

    def nodes(self, site=None):
        q = "?" + urllib.parse.urlencode({"site": site}) if site else ""
        return self._call("GET", "/v1/nodes" + q)["nodes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--site", required=True)
    ap.add_argument("--seats", type=int, default=2)
    ap.add_argument("--ca-file")
    a = ap.parse_args()
    cg = Classgrid(a.url, a.token, a.ca_file)

    # Bad input comes back as a problem naming the field.
    try:
        cg.book_lesson(school_site=a.site, seats=0)
        sys.exit("a booking with 0 seats was accepted")
    except ClassgridError as e:
        assert e.status == 400 and "seats" in [x["field"] for x in e.errors], e.problem

    start = (datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8)))
             + datetime.timedelta(seconds=2)).isoformat(timespec="seconds")
    key = f"rest-client-{uuid.uuid4()}"
    booking = dict(school_site=a.site, title="python rest client", start=start, duration_seconds=120,
                   seats=a.seats, seat={"cpu_millis": 100, "memory_mib": 64},
                   workload={"command": "python3",
                             "args": ["-m", "http.server", "--bind", "127.0.0.1", "$(PORT)"]})
    lesson = cg.book_lesson(idempotency_key=key, **booking)
    again = cg.book_lesson(idempotency_key=key, **booking)
    assert again["id"] == lesson["id"], "a retried booking made a second lesson"
    print(f"booked {lesson['id']}: {lesson['state']}, {len(lesson['seats'])} seats")

    endpoints = []
    for l in cg.watch(lesson["id"]):
        states = [s["state"] for s in l["seats"]]
        print(f"  {l['state']}: {states}")
        if states and all(s == "running" and seat["endpoint"] for s, seat in zip(states, l["seats"])):
            endpoints = [s["endpoint"] for s in l["seats"]]
            break
    assert endpoints, "the lesson ended before its seats ran"
    for e in endpoints:
        with urllib.request.urlopen(e + "/", timeout=10) as r:
            assert r.status == 200, (e, r.status)
        print(f"  seat endpoint {e} answers")
    done = cg.cancel(lesson["id"], reason="client test done")
    assert done["state"] == "cancelled", done
    print("rest client: ok")


if __name__ == "__main__":
    main()
