"""A fake AWS Lambda Runtime API server (the platform side), for testing runtimes.

Standard library only. The server hands out queued events and records what the
runtime sends back:

  GET  /2018-06-01/runtime/invocation/next          blocks until an event is queued, then
                                                     answers 200 with the event as body and the
                                                     Lambda-Runtime-* headers
  POST /2018-06-01/runtime/invocation/{id}/response  records a response; 202
  POST /2018-06-01/runtime/invocation/{id}/error     records an invocation error; 202
  POST /2018-06-01/runtime/init/error                records an init error; 202

Unknown request ids and second reports for one invocation get 400; unknown
paths 404. After close() (or shutdown_next()) /next answers 410 Gone.
Connections are kept alive unless FakeRuntimeApi(connection="close"|"drop"|
"drop-idle"). Other keyword arguments shape the answers to exercise a runtime's
HTTP client: framing="chunked"|"close", write_size=1 (answers trickle out in
tiny writes), header_case="lower"|"upper"|"mixed"; setting api.abort = True
makes the server close connections instead of answering.

Use from tests:

    api = FakeRuntimeApi()                 # binds 127.0.0.1 on a free port
    api.start()
    env["AWS_LAMBDA_RUNTIME_API"] = api.address
    rid = api.enqueue({"key": "value"})
    report = api.wait_report(rid)          # Report(kind="response"|"error", body, headers)
    api.close()

Run it directly to poke at a runtime by hand: it prints its address, reads one
event JSON per stdin line and prints what the runtime answered.
"""

import argparse
import http.server
import itertools
import json
import re
import sys
import threading
import time
import uuid

PREFIX = "/2018-06-01/runtime"
DEFAULT_ARN = "arn:aws:lambda:us-east-1:123456789012:function:f"


class Report:
    """What the runtime POSTed: kind is "response", "error" or "init_error"."""

    def __init__(self, kind, request_id, body, headers):
        self.kind = kind
        self.request_id = request_id
        self.body = body  # bytes, exactly as received
        self.headers = headers  # dict, lower-case names

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Report(%s, %s, %r)" % (self.kind, self.request_id, self.body[:300])


class _Invocation:
    def __init__(self, request_id, body, headers):
        self.request_id = request_id
        self.body = body
        self.headers = headers


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A runtime killed mid-request is routine in tests; report anything else.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeRuntimeApi:
    def __init__(self, host="127.0.0.1", port=0, connection="keep-alive", framing="length", write_size=None,
                 header_case=None):
        """connection: "keep-alive" (HTTP/1.1 default), "close" (answer with Connection: close and
        close), "drop" (close after each answer without saying so, as an idle timeout would) or
        "drop-idle" (the same, but only after answers to /next: the runtime finds the connection
        closed when it POSTs the result, as after an idle timeout during a long invocation).

        framing: how answer bodies are delimited: "length" (Content-Length), "chunked"
        (Transfer-Encoding: chunked, the body in several chunks, with a chunk extension and a
        trailer) or "close" (no length: the body ends when the server closes the connection).
        write_size: None writes each answer at once; n writes it n bytes at a time, each write
        sent on its own (TCP_NODELAY) after a short pause, so the runtime receives it in pieces.
        header_case: None sends header names as written here; "lower", "upper" or "mixed"
        (aLtErNaTiNg) rewrites every answer header name, framing headers included."""
        self.connection = connection
        self.framing = framing
        self.write_size = write_size
        self.header_case = header_case
        self.abort = False  # when True: close connections instead of answering
        self.aborted = 0  # requests closed on without an answer
        self.connections = 0  # connections accepted
        self._cond = threading.Condition()
        self._queue = []  # _Invocation waiting for /next
        self._issued = {}  # request id -> _Invocation handed out by /next
        self._reports = {}  # request id -> Report
        self.init_errors = []  # Report
        self.requests = []  # (method, path) in arrival order
        self.next_calls = 0
        self._gone = False
        self._server = _Server((host, port), self._make_handler())
        self._thread = None

    @property
    def address(self):
        host, port = self._server.server_address[:2]
        return "%s:%d" % (host, port)

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def close(self):
        self.shutdown_next()
        self._server.shutdown()
        self._server.server_close()

    def shutdown_next(self):
        """From now on /next (including calls already waiting) answers 410 Gone."""
        with self._cond:
            self._gone = True
            self._cond.notify_all()

    # ---------------------------------------------------------------- test side

    def enqueue(self, event=None, *, body=None, request_id=None, deadline_ms=None, timeout_ms=5000,
                function_arn=DEFAULT_ARN, trace_id=None, client_context=None, cognito_identity=None,
                extra_headers=None):
        """Queue an invocation; returns its request id. body (bytes/str) overrides json.dumps(event)."""
        request_id = request_id or str(uuid.uuid4())
        if body is None:
            body = json.dumps(event)
        if isinstance(body, str):
            body = body.encode("utf-8")
        if deadline_ms is None:
            deadline_ms = int(time.time() * 1000) + timeout_ms
        if trace_id is None:
            trace_id = "Root=1-%08x-%s;Parent=%s;Sampled=0" % (int(time.time()), uuid.uuid4().hex[:24],
                                                              uuid.uuid4().hex[:16])
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": function_arn,
            "Lambda-Runtime-Trace-Id": trace_id,
        }
        if client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = json.dumps(client_context)
        if cognito_identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = json.dumps(cognito_identity)
        headers.update(extra_headers or {})
        with self._cond:
            self._queue.append(_Invocation(request_id, body, headers))
            self._cond.notify_all()
        return request_id

    def wait_report(self, request_id, timeout=15.0, alive=None):
        """The runtime's response or error for request_id; None on timeout.

        alive, if given, is polled; waiting stops early once it returns False.
        """
        return self._wait(lambda: self._reports.get(request_id), timeout, alive)

    def wait_init_error(self, timeout=15.0, alive=None):
        return self._wait(lambda: self.init_errors[0] if self.init_errors else None, timeout, alive)

    def _wait(self, probe, timeout, alive):
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                found = probe()
                if found is not None:
                    return found
                left = end - time.monotonic()
                if left <= 0 or (alive is not None and not alive()):
                    return None
                self._cond.wait(min(left, 0.05))

    # ---------------------------------------------------------------- server side

    def _next(self):
        with self._cond:
            self.next_calls += 1
            while not self._queue and not self._gone:
                self._cond.wait()
            if self._gone:
                return None
            inv = self._queue.pop(0)
            self._issued[inv.request_id] = inv
            return inv

    def _record(self, kind, request_id, body, headers):
        """Returns an HTTP status for the POST."""
        with self._cond:
            report = Report(kind, request_id, body, headers)
            if kind == "init_error":
                self.init_errors.append(report)
            elif request_id not in self._issued:
                return 400
            elif request_id in self._reports:
                return 400
            else:
                self._reports[request_id] = report
            self._cond.notify_all()
            return 202

    def _make_handler(self):
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per answer and no Nagle: otherwise delayed ACKs add ~40 ms per request.
            disable_nagle_algorithm = True
            wbufsize = 1 << 16

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with api._cond:
                    api.connections += 1

            def _aborting(self):
                """In abort mode: close the connection without answering."""
                with api._cond:
                    if not api.abort:
                        return False
                    api.aborted += 1
                self.close_connection = True
                return True

            def _send(self, status, body=b"", headers=None):
                if self._aborting():
                    return
                headers = dict(headers or {})
                headers.setdefault("Content-Type", "application/json")
                if api.framing == "chunked":
                    headers["Transfer-Encoding"] = "chunked"
                    body = _chunked(body)
                elif api.framing == "length":
                    headers["Content-Length"] = str(len(body))
                if api.connection == "close":
                    headers["Connection"] = "close"
                head = "HTTP/1.1 %d %s\r\n" % (status, self.responses.get(status, ("Unknown",))[0])
                head += "".join("%s: %s\r\n" % (_header_name(k, api.header_case), v) for k, v in headers.items())
                data = (head + "\r\n").encode("latin-1") + body
                if api.write_size:
                    for i in range(0, len(data), api.write_size):
                        self.wfile.write(data[i:i + api.write_size])
                        self.wfile.flush()
                        time.sleep(0.0002)
                else:
                    self.wfile.write(data)
                if (api.connection in ("close", "drop") or api.framing == "close"
                        or api.connection == "drop-idle" and self.command == "GET"):
                    self.close_connection = True

            def _read_body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                with api._cond:
                    api.requests.append(("GET", self.path))
                if self._aborting():
                    return
                if self.path != PREFIX + "/invocation/next":
                    return self._send(404, b'{"errorType":"NotFound"}')
                inv = api._next()
                if inv is None:
                    return self._send(410, b'{"errorMessage":"sandbox is shutting down","errorType":"Gone"}')
                self._send(200, inv.body, inv.headers)

            def do_POST(self):
                body = self._read_body()
                with api._cond:
                    api.requests.append(("POST", self.path))
                if self._aborting():
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                m = re.fullmatch(re.escape(PREFIX) + r"/invocation/([^/]+)/(response|error)", self.path)
                if m:
                    status = api._record(m.group(2), m.group(1), body, headers)
                elif self.path == PREFIX + "/init/error":
                    status = api._record("init_error", None, body, headers)
                else:
                    return self._send(404, b'{"errorType":"NotFound"}')
                if status == 202:
                    self._send(202, b'{"status":"OK"}')
                else:
                    self._send(status, b'{"errorMessage":"unknown or already reported request id",'
                                       b'"errorType":"InvalidRequestID"}')

        return Handler


def _chunked(body):
    """body in chunked transfer coding: chunks of 7, 1, 300 and 70,000 bytes in turn (the last
    larger than a typical socket read), the first with a chunk extension; then a trailer."""
    out = []
    i = 0
    for n in itertools.cycle((7, 1, 300, 70000)):
        if i >= len(body):
            break
        piece = body[i:i + n]
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), b";ext=1" if i == 0 else b"", piece))
        i += n
    return b"".join(out) + b"0\r\nX-Trailer: done\r\n\r\n"


def _header_name(name, case):
    if case == "lower":
        return name.lower()
    if case == "upper":
        return name.upper()
    if case == "mixed":
        return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(name))
    return name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    api = FakeRuntimeApi(port=args.port).start()
    print("AWS_LAMBDA_RUNTIME_API=%s  (one event JSON per line on stdin)" % api.address, flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            rid = api.enqueue(body=line.strip())
            report = api.wait_report(rid, timeout=3600)
            print("%s %s %s" % (report.kind, report.headers.get("lambda-runtime-function-error-type", ""),
                                report.body.decode("utf-8", "replace")), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        api.close()


if __name__ == "__main__":
    main()
