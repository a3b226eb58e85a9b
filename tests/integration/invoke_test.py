"""Integration test of synchronous Invoke: a real nimbusd (running functions in
real sandboxes, so it needs root) driven by Debian's AWS CLI v2 and curl
--aws-sigv4, checking what comes back.

Run: python3 invoke_test.py --nimbusd build/bin/nimbusd --test-runtime build/tests/test_runtime
"""

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nimbus_harness import (DEV_ACCOUNT, Node, TempDir, error_name,  # noqa: E402
                            make_zip, sandbox_skip_reason)

NIMBUSD = None
TEST_RUNTIME = None
ROLE = "arn:aws:iam::123456789012:role/lambda-role"

PY_APP = """
import os, time
calls = 0
def handler(event, context):
    global calls
    calls += 1
    print("py log line", calls)
    if event.get("fail"):
        raise ValueError("asked to fail")
    if event.get("client_context"):
        cc = context.client_context
        return {"custom": cc.custom, "env": cc.env, "installation_id": cc.client.installation_id} if cc else None
    if event.get("sleep"):
        start = time.time()
        time.sleep(event["sleep"])
        return {"start": start, "end": time.time()}
    return {"echo": event, "calls": calls, "stage": os.environ.get("STAGE"),
            "request_id": context.aws_request_id, "function": context.function_name,
            "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 30000}
"""

NODE_APP = """
let calls = 0;
export const handler = async (event, context) => {
  calls += 1;
  console.log("node log line", calls);
  if (event.client_context) return { clientContext: context.clientContext ?? null };
  return { echo: event, calls, function: context.functionName };
};
"""


@unittest.skipIf(sandbox_skip_reason(), sandbox_skip_reason() or "")
class Invoke(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        # A short control-plane timeout (it follows the [api] listen line),
        # to show that invocations are bounded by the function's timeout only.
        # The keep-alive is short for test_cold_start_after_keep_alive, but
        # long enough that back-to-back CLI calls (each a second or two on a
        # loaded machine) find the environment still warm.
        cls.node = Node(NIMBUSD, cls.tmp.path,
                        extra="request_timeout_ms = 1500\n[worker]\nkeep_alive_seconds = 6\n")
        cls.node.start()
        cls.files = {}
        for name, data in {
            "py.zip": make_zip({"app.py": PY_APP, "broken.py": "import not_a_module\n"}),
            "node.zip": make_zip({"index.mjs": NODE_APP}),
        }.items():
            path = os.path.join(cls.tmp.path, name)
            with open(path, "wb") as f:
                f.write(data)
            cls.files[name] = path
        # The C runtime as the bootstrap of a provided function.
        import io
        import zipfile
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            info = zipfile.ZipInfo("bootstrap")
            info.external_attr = 0o100755 << 16
            with open(TEST_RUNTIME, "rb") as f:
                z.writestr(info, f.read())
        cls.files["c.zip"] = os.path.join(cls.tmp.path, "c.zip")
        with open(cls.files["c.zip"], "wb") as f:
            f.write(buf.getvalue())
        for name, runtime, handler, zf, extra in [
            ("py", "python3.11", "app.handler", "py.zip", ["--timeout", "30"]),
            ("pyslow", "python3.11", "app.handler", "py.zip", ["--timeout", "1"]),
            ("pylimit", "python3.11", "app.handler", "py.zip", ["--timeout", "30"]),
            ("pybroken", "python3.11", "broken.handler", "py.zip", []),
            ("node", "nodejs20.x", "index.handler", "node.zip", []),
            ("c", "provided.al2023", "bootstrap", "c.zip", []),
        ]:
            rc, cfg, err = cls.node.aws("create-function", "--function-name", name, "--runtime", runtime,
                                        "--role", ROLE, "--handler", handler,
                                        "--zip-file", "fileb://" + cls.files[zf], *extra)
            assert rc == 0, err

    @classmethod
    def tearDownClass(cls):
        try:
            cls.node.stop()
        finally:
            cls.tmp.close()

    def invoke(self, name, payload=None, *extra, expect_ok=True):
        out = os.path.join(self.tmp.path, "out-%d.json" % threading.get_ident())
        args = ["invoke", "--function-name", name, out, "--cli-binary-format", "raw-in-base64-out"]
        if payload is not None:
            args += ["--payload", payload]
        rc, meta, err = self.node.aws(*args, *extra)
        body = None
        if rc == 0 and os.path.exists(out):
            with open(out) as f:
                text = f.read()
            body = json.loads(text) if text else None
            os.remove(out)
        if expect_ok:
            self.assertEqual(rc, 0, err)
        return rc, meta, body, err

    def test_python_echo_and_warm_reuse(self):
        rc, meta, body, _ = self.invoke("py", '{"k": "v"}')
        self.assertEqual(meta["StatusCode"], 200)
        self.assertEqual(meta["ExecutedVersion"], "$LATEST")
        self.assertNotIn("FunctionError", meta)
        self.assertEqual(body["echo"], {"k": "v"})
        self.assertEqual(body["function"], "py")
        self.assertTrue(body["remaining_ok"])
        self.assertRegex(body["request_id"], r"^[0-9a-f-]{36}$")
        first_calls = body["calls"]
        # The second invoke is served by the same (warm) environment.
        _, _, body2, _ = self.invoke("py", '{"k": 2}')
        self.assertEqual(body2["calls"], first_calls + 1)
        self.assertNotEqual(body2["request_id"], body["request_id"])

    def test_node_and_c_runtimes(self):
        _, meta, body, _ = self.invoke("node", '{"n": 1}')
        # calls depends on whether an earlier test's environment is still warm.
        self.assertEqual(body["echo"], {"n": 1})
        self.assertEqual(body["function"], "node")
        self.assertIsInstance(body["calls"], int)
        _, meta, body, _ = self.invoke("c", '{"action": "echo", "x": [1, 2]}')
        self.assertEqual(body, {"action": "echo", "x": [1, 2]})
        # No payload: the function gets {}.
        _, meta, body, _ = self.invoke("c")
        self.assertEqual(body, {})

    def test_log_tail(self):
        _, meta, body, _ = self.invoke("py", '{"tail": true}', "--log-type", "Tail")
        log = base64.b64decode(meta["LogResult"]).decode()
        self.assertRegex(log, r"START RequestId: [0-9a-f-]{36} Version: \$LATEST")
        self.assertIn("py log line", log)
        self.assertRegex(log, r"END RequestId: [0-9a-f-]{36}")
        self.assertRegex(log, r"REPORT RequestId: [0-9a-f-]{36}\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms"
                              r"\tMemory Size: 128 MB\tMax Memory Used: \d+ MB")
        # Stored per function, readable through the logs endpoint.
        p = subprocess.run(["curl", "-s", "--aws-sigv4", "aws:amz:us-east-1:lambda", "--user",
                            "%s:%s" % (DEV_ACCOUNT["access_key_id"], DEV_ACCOUNT["secret_access_key"]),
                            self.node.endpoint + "/nimbus/logs/py?Tail=100000"],
                           capture_output=True, text=True, timeout=30)
        self.assertIn("py log line", p.stdout)
        self.assertIn("REPORT RequestId:", p.stdout)

    def test_function_error_timeout_and_init_error(self):
        _, meta, body, _ = self.invoke("py", '{"fail": true}')
        self.assertEqual(meta["FunctionError"], "Unhandled")
        self.assertEqual(body["errorType"], "ValueError")
        self.assertEqual(body["errorMessage"], "asked to fail")
        start = time.time()
        _, meta, body, _ = self.invoke("pyslow", '{"sleep": 5}')
        self.assertLess(time.time() - start, 4.5)
        self.assertEqual(meta["FunctionError"], "Unhandled")
        self.assertIn("Task timed out after 1.00 seconds", body["errorMessage"])
        _, meta, body, _ = self.invoke("pybroken", "{}")
        self.assertEqual(meta["FunctionError"], "Unhandled")
        self.assertEqual(body["errorType"], "Runtime.ImportModuleError")

    def test_dry_run_qualifier_and_bad_payloads(self):
        _, meta, _, _ = self.invoke("py", "{}", "--invocation-type", "DryRun")
        self.assertEqual(meta["StatusCode"], 204)
        _, meta, body, _ = self.invoke("py", '{"q": 1}', "--qualifier", "$LATEST")
        self.assertEqual(body["echo"], {"q": 1})
        rc, _, _, err = self.invoke("py", "{}", "--qualifier", "7", expect_ok=False)
        self.assertEqual(error_name(err), "ResourceNotFoundException")
        rc, _, _, err = self.invoke("nope", "{}", expect_ok=False)
        self.assertEqual(error_name(err), "ResourceNotFoundException")
        rc, _, _, err = self.invoke("py", "this is not json", expect_ok=False)
        self.assertEqual(error_name(err), "InvalidRequestContentException")
        # Asynchronous: accepted with 202 and an empty body (async_test.py tests the rest).
        rc, meta, body, err = self.invoke("py", "{}", "--invocation-type", "Event")
        self.assertEqual(meta["StatusCode"], 202)
        self.assertIsNone(body)
        rc, _, _, err = self.invoke("py", "{}", "--invocation-type", "Sideways", expect_ok=False)
        self.assertEqual(error_name(err), "InvalidParameterValueException")
        # Over 6 MB: refused from Content-Length, before the body is read.
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
            s.sendall(b"POST /2015-03-31/functions/py/invocations HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 6291457\r\n\r\n")
            data = s.recv(4096)
        self.assertTrue(data.startswith(b"HTTP/1.1 413"), data[:100])
        self.assertIn(b"RequestTooLargeException", data)

    def test_client_context_reaches_the_function(self):
        # A pretty-printed context (line breaks, indentation, non-ASCII): the
        # runtime receives it in a header, so the node passes it compacted.
        context = {"client": {"installation_id": "inst-1", "app_title": "Mein Gerät \U0001F680"},
                   "custom": {"k": "v\x7f", "nested": {"n": [1, 2]}}, "env": {"locale": "de_DE"}}
        pretty = base64.b64encode(json.dumps(context, indent=2, ensure_ascii=False).encode()).decode()
        self.assertIn(b"\n", base64.b64decode(pretty))
        _, meta, body, _ = self.invoke("py", '{"client_context": true}', "--client-context", pretty)
        self.assertNotIn("FunctionError", meta)
        self.assertEqual(body, {"custom": context["custom"], "env": context["env"],
                                "installation_id": "inst-1"})
        _, meta, body, _ = self.invoke("node", '{"client_context": true}', "--client-context", pretty)
        self.assertEqual(body, {"clientContext": context})
        # Without one, the function sees none.
        _, _, body, _ = self.invoke("py", '{"client_context": true}')
        self.assertIsNone(body)
        # Not a base64-encoded JSON object, or too large: refused before anything runs.
        for bad in [base64.b64encode(b"not json").decode(), base64.b64encode(b"[1, 2]").decode(),
                    "%%%not-base64%%%",
                    base64.b64encode(json.dumps({"custom": {"pad": "x" * 3600}}).encode()).decode()]:
            rc, _, _, err = self.invoke("py", '{"client_context": true}', "--client-context", bad,
                                        expect_ok=False)
            self.assertNotEqual(rc, 0)
            self.assertEqual(error_name(err), "InvalidRequestContentException", bad[:20])

    def test_reserved_concurrency_throttles(self):
        rc, res, err = self.node.aws("put-function-concurrency", "--function-name", "node",
                                     "--reserved-concurrent-executions", "0")
        self.assertEqual(rc, 0, err)
        self.assertEqual(res, {"ReservedConcurrentExecutions": 0})
        rc, _, _, err = self.invoke("node", "{}", expect_ok=False)
        self.assertEqual(error_name(err), "TooManyRequestsException")
        # With its default retry policy the CLI retries the throttle, then fails.
        out = os.path.join(self.tmp.path, "throttled.json")
        rc, _, err = self.node.aws("invoke", "--function-name", "node", out, retries=True)
        self.assertNotEqual(rc, 0)
        self.assertEqual(error_name(err), "TooManyRequestsException")
        self.assertIn("reached max retries", err)
        rc, res, err = self.node.aws("get-function", "--function-name", "node")
        self.assertEqual(res["Concurrency"], {"ReservedConcurrentExecutions": 0})
        rc, res, err = self.node.aws("delete-function-concurrency", "--function-name", "node")
        self.assertEqual(rc, 0, err)
        _, meta, body, _ = self.invoke("node", '{"again": 1}')
        self.assertEqual(body["echo"], {"again": 1})
        rc, res, err = self.node.aws("put-function-concurrency", "--function-name", "node",
                                     "--reserved-concurrent-executions", "950")
        self.assertEqual(error_name(err), "InvalidParameterValueException")

    def curl_invoke(self, name, payload, max_time=60):
        """A signed invoke through curl --aws-sigv4 (much faster to start than
        the CLI): (HTTP status or 0 when curl gave up, body, response headers)."""
        p = subprocess.run(["curl", "-s", "-D", "-", "--max-time", str(max_time),
                            "--aws-sigv4", "aws:amz:us-east-1:lambda", "--user",
                            "%s:%s" % (DEV_ACCOUNT["access_key_id"], DEV_ACCOUNT["secret_access_key"]),
                            "--data-binary", payload,
                            self.node.endpoint + "/2015-03-31/functions/%s/invocations" % name],
                           capture_output=True, text=True, timeout=max_time + 30)
        head, _, body = p.stdout.partition("\n\n")  # text mode turned CRLF into LF
        m = re.match(r"HTTP/1\.1 (\d+)", head)
        return (int(m.group(1)) if m and p.returncode == 0 else 0), body, head

    def test_leases_return_after_errors_timeouts_and_disconnects(self):
        # One lease (reserved concurrency 1): any invoke that kept it would
        # throttle every later one.
        rc, _, err = self.node.aws("create-function", "--function-name", "pylease", "--runtime",
                                   "python3.11", "--role", ROLE, "--handler", "app.handler",
                                   "--zip-file", "fileb://" + self.files["py.zip"], "--timeout", "3")
        self.assertEqual(rc, 0, err)
        rc, _, err = self.node.aws("put-function-concurrency", "--function-name", "pylease",
                                   "--reserved-concurrent-executions", "1")
        self.assertEqual(rc, 0, err)
        status, body, head = self.curl_invoke("pylease", '{"fail": true}')
        self.assertEqual(status, 200)
        self.assertIn("X-Amz-Function-Error: Unhandled", head)
        status, body, head = self.curl_invoke("pylease", '{"sleep": 5}')
        self.assertEqual(status, 200)
        self.assertIn("Task timed out after 3.00 seconds", body, head)
        status, body, _ = self.curl_invoke("pylease", '{"n": 1}')
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["echo"], {"n": 1})
        # The client hangs up while the function sleeps: the invocation runs
        # on and keeps its lease until it ends, then returns it.
        t0 = time.time()
        status, _, _ = self.curl_invoke("pylease", '{"sleep": 2.5}', max_time=1)
        self.assertEqual(status, 0)
        status, body, head = self.curl_invoke("pylease", '{"n": 2}')
        if time.time() - t0 < 2.5:
            self.assertEqual(status, 429, head)
            self.assertIn("TooManyRequestsException", head)
            self.assertEqual(json.loads(body)["Reason"],
                             "ReservedFunctionConcurrentInvocationLimitExceeded")
        deadline = time.time() + 30
        while status != 200 and time.time() < deadline:
            time.sleep(0.5)
            status, body, _ = self.curl_invoke("pylease", '{"n": 3}')
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["echo"], {"n": 3})
        self.assertGreaterEqual(time.time() - t0, 2.5)
        # A throttle tells the client when to come back.
        rc, _, err = self.node.aws("put-function-concurrency", "--function-name", "pylease",
                                   "--reserved-concurrent-executions", "0")
        self.assertEqual(rc, 0, err)
        status, body, head = self.curl_invoke("pylease", '{"n": 4}')
        self.assertEqual(status, 429, head)
        self.assertRegex(head, r"(?im)^x-amzn-errortype: TooManyRequestsException")
        self.assertRegex(head, r"(?im)^Retry-After: 1$")
        self.assertEqual(json.loads(body)["Reason"], "ReservedFunctionConcurrentInvocationLimitExceeded")

    def test_lam7_overlap_never_exceeds_reserved(self):
        rc, _, err = self.node.aws("put-function-concurrency", "--function-name", "pylimit",
                                   "--reserved-concurrent-executions", "2")
        self.assertEqual(rc, 0, err)
        results = []

        def one():
            results.append(self.invoke("pylimit", '{"sleep": 1.5}', expect_ok=False))

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = [body for rc, meta, body, err in results if rc == 0]
        throttled = [err for rc, meta, body, err in results if rc != 0]
        self.assertGreaterEqual(len(ok), 1)
        self.assertGreaterEqual(len(throttled), 1)
        for err in throttled:
            self.assertEqual(error_name(err), "TooManyRequestsException", err)
        # Overlap of the successful invocations never exceeds 2.
        events = sorted([(b["start"], 1) for b in ok] + [(b["end"], -1) for b in ok],
                        key=lambda e: (e[0], e[1]))
        current = peak = 0
        for _, delta in events:
            current += delta
            peak = max(peak, current)
        self.assertLessEqual(peak, 2)

    def test_lam9_updates_never_reuse_old_environments(self):
        _, _, body, _ = self.invoke("py", '{"before": 1}')
        self.assertIsNone(body["stage"])
        rc, cfg, err = self.node.aws("update-function-configuration", "--function-name", "py",
                                     "--environment", "Variables={STAGE=two}")
        self.assertEqual(rc, 0, err)
        _, _, body, _ = self.invoke("py", '{"after": 1}')
        self.assertEqual(body["stage"], "two")
        self.assertEqual(body["calls"], 1)  # a fresh environment

    def test_cold_start_after_keep_alive(self):
        _, _, body, _ = self.invoke("c", '{"action": "echo"}')
        _, _, body, _ = self.invoke("node", '{"w": 1}')
        first = body["calls"]
        _, _, body, _ = self.invoke("node", '{"w": 2}')
        self.assertEqual(body["calls"], first + 1)
        time.sleep(9)  # keep_alive_seconds = 6, swept every second
        _, _, body, _ = self.invoke("node", '{"w": 3}')
        self.assertEqual(body["calls"], 1)

    def test_invocation_longer_than_the_api_request_timeout(self):
        # api.request_timeout_ms is 1.5 s: it bounds control-plane calls, never
        # an invocation, which may run up to the function's timeout (30 s).
        t0 = time.time()
        _, _, body, _ = self.invoke("py", '{"sleep": 7}')
        self.assertGreaterEqual(time.time() - t0, 7)
        self.assertGreaterEqual(body["end"] - body["start"], 7)

    def test_metrics_count_invocations(self):
        self.invoke("c", '{"action": "echo"}')
        import urllib.request
        with urllib.request.urlopen(self.node.endpoint + "/metrics", timeout=10) as r:
            text = r.read().decode()
        self.assertRegex(text, r"nimbus_invocations_total [1-9]")
        self.assertRegex(text, r"nimbus_cold_starts_total [1-9]")
        self.assertIn("nimbus_invoke_duration_seconds_bucket", text)
        self.assertRegex(text, r'nimbus_environments\{state="idle"\} [1-9]')
        self.assertIn('nimbus_environments{state="busy"}', text)

    def test_metrics_count_the_invocations_of_every_io_thread(self):
        # The node runs a frontend per io thread (io_threads = 2), and each
        # AWS CLI call is a new connection, handed to the io threads in turn:
        # the counts are the node's, not one frontend's.
        import urllib.request

        def invocations():
            with urllib.request.urlopen(self.node.endpoint + "/metrics", timeout=10) as r:
                text = r.read().decode()
            return int(re.search(r"^nimbus_invocations_total (\d+)$", text, re.M).group(1))

        before = invocations()
        for i in range(4):
            _, meta, body, _ = self.invoke("c", '{"action": "echo", "i": %d}' % i)
            self.assertEqual(body, {"action": "echo", "i": i})
        self.assertEqual(invocations() - before, 4)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nimbusd", required=True)
    parser.add_argument("--test-runtime", required=True)
    args, rest = parser.parse_known_args()
    NIMBUSD = os.path.abspath(args.nimbusd)
    TEST_RUNTIME = os.path.abspath(args.test_runtime)
    unittest.main(argv=[sys.argv[0], "-v"] + rest)
