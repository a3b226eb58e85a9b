#!/usr/bin/env python3
"""Tests for Nimbus's Python and Node.js Lambda runtimes (runtimes/*/bootstrap*).

Each test writes handler code to a temporary task root, starts the fake Runtime
API server (fake_runtime_api.py) on 127.0.0.1, runs the bootstrap as a
subprocess with the Lambda environment pointing at it, queues events and checks
what the runtime POSTs back. PythonClientTest instead drives the Python
bootstrap's HTTP client in-process against canned answers; NodeClientTest runs
the Node bootstrap against the same canned answers.

    python3 tests/runtimes/runtimes_test.py [--runtimes-dir DIR] [unittest args, e.g. -v]

--runtimes-dir (or $NIMBUS_RUNTIMES_DIR) defaults to <repo>/runtimes. The
interpreters are /usr/bin/python3 and /usr/bin/node unless $NIMBUS_TEST_PYTHON
or $NIMBUS_TEST_NODE say otherwise; the Node tests are skipped without node.
"""

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_runtime_api import DEFAULT_ARN, FakeRuntimeApi  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNTIMES_DIR = os.environ.get("NIMBUS_RUNTIMES_DIR", os.path.join(REPO, "runtimes"))
PYTHON = os.environ.get("NIMBUS_TEST_PYTHON", "/usr/bin/python3")
NODE = os.environ.get("NIMBUS_TEST_NODE", "/usr/bin/node")

FUNCTION_NAME = "my-function"
LOG_STREAM = "2024/01/01/[$LATEST]0123456789abcdef0123456789abcdef"
TRACE_ID = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
NESTED = {"ok": True, "n": 42, "f": 2.5, "none": None,
          "nested": {"list": [1, "two", {"three": [3]}, False], "empty": {}},
          "unicode": "h\u00e9llo \u2603"}
LARGE = 5 * 1024 * 1024


def node_json(value):
    """The bytes JSON.stringify produces for value (compact, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def python_json(value):
    """The bytes AWS's python3.11 runtime produces (json.dumps defaults)."""
    return json.dumps(value).encode("utf-8")


class RuntimeTestCase(unittest.TestCase):
    """Harness: a fake Runtime API, a task root and one runtime process per test."""

    command = None  # the bootstrap command line, set by subclasses
    base_env = {}

    def setUp(self):
        self.api = FakeRuntimeApi().start()
        self.task_root = tempfile.mkdtemp(prefix="nimbus-task-")
        self.log_dir = tempfile.mkdtemp(prefix="nimbus-logs-")
        self.proc = None

    def tearDown(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.api.close()
        shutil.rmtree(self.task_root, ignore_errors=True)
        shutil.rmtree(self.log_dir, ignore_errors=True)

    # ------------------------------------------------------------ helpers

    def restart_api(self, connection="keep-alive", **api_args):
        """Stop any runtime and replace the fake API with one using the given connection mode
        (and other FakeRuntimeApi arguments)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.api.close()
        self.api = FakeRuntimeApi(connection=connection, **api_args).start()

    def start(self, handler, files, env=None):
        """Write files into the task root and start the runtime with _HANDLER=handler."""
        for name, text in files.items():
            path = os.path.join(self.task_root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(textwrap.dedent(text))
        full_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": self.task_root,
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + FUNCTION_NAME,
            "AWS_LAMBDA_LOG_STREAM_NAME": LOG_STREAM,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        full_env.update(self.base_env)
        full_env.update(env or {})
        self.stdout_path = os.path.join(self.log_dir, "stdout")
        self.stderr_path = os.path.join(self.log_dir, "stderr")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command, env=full_env, cwd="/", stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err)

    def output(self, which):
        with open(self.stdout_path if which == "stdout" else self.stderr_path, encoding="utf-8") as f:
            return f.read()

    def _alive(self):
        return self.proc.poll() is None

    def invoke(self, event=None, **enqueue_args):
        """Queue one event and return the runtime's Report."""
        rid = self.api.enqueue(event, **enqueue_args)
        report = self.api.wait_report(rid, alive=self._alive)
        if report is None:
            self.fail("no report for %s (runtime exit status %s); stderr:\n%s"
                      % (rid, self.proc.poll(), self.output("stderr")))
        self.assertEqual(report.request_id, rid)
        return report

    def invoke_ok(self, event=None, **enqueue_args):
        report = self.invoke(event, **enqueue_args)
        self.assertEqual(report.kind, "response", "%r\nstderr:\n%s" % (report, self.output("stderr")))
        return report

    def invoke_error(self, event=None, **enqueue_args):
        report = self.invoke(event, **enqueue_args)
        self.assertEqual(report.kind, "error", report)
        body = report.json()
        self.assertEqual(report.headers.get("lambda-runtime-function-error-type"), body["errorType"])
        self.assertEqual(set(body), {"errorMessage", "errorType", "stackTrace"})
        self.assertIsInstance(body["stackTrace"], list)
        for line in body["stackTrace"]:
            self.assertIsInstance(line, str)
        return body

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail("runtime did not exit; stderr:\n" + self.output("stderr"))

    def expect_init_error(self, error_type):
        """The runtime must report an init error of error_type and exit non-zero without polling /next."""
        report = self.api.wait_init_error(alive=self._alive)
        if report is None:  # it may have exited right after POSTing
            report = self.api.wait_init_error(timeout=1)
        self.assertIsNotNone(report, "no init error; stderr:\n" + self.output("stderr"))
        body = report.json()
        self.assertEqual(body["errorType"], error_type, body)
        self.assertEqual(report.headers.get("lambda-runtime-function-error-type"), error_type)
        self.assertEqual(set(body), {"errorMessage", "errorType", "stackTrace"})
        self.assertNotEqual(self.wait_exit(), 0)
        self.assertEqual(self.api.next_calls, 0)
        return body


# ================================================================ HTTP client edge cases, every runtime


class HttpClientCases:
    """How a runtime's Runtime API client copes with answers shaped by the fake API.

    Mixed into each runtime's test case, which sets echo and slow_echo: (handler, files) of a
    handler returning its event, at once or after 50 ms.
    """

    echo = slow_echo = None

    def test_chunked_answers(self):
        self.restart_api(framing="chunked")
        self.start(*self.echo)
        for event in (1, "two", {"k": list(range(50))}, {"blob": "x" * 300000}):
            self.assertEqual(self.invoke_ok(event).json(), event)
        self.assertEqual(self.output("stderr"), "")

    def test_answers_arriving_byte_by_byte(self):
        for framing in ("length", "chunked"):
            with self.subTest(framing=framing):
                self.restart_api(framing=framing, write_size=1)
                self.start(*self.echo)
                for event in ({"a": [1, 2, {"b": None}]}, "text"):
                    self.assertEqual(self.invoke_ok(event, client_context={"custom": {"k": "v"}}).json(), event)
                self.assertEqual(self.output("stderr"), "")

    def test_answer_without_length_ends_at_close(self):
        self.restart_api(framing="close")
        self.start(*self.echo)
        for i in range(3):
            self.assertEqual(self.invoke_ok({"i": i}).json(), {"i": i})
        self.assertGreaterEqual(self.api.connections, 6)  # one per request
        self.assertEqual(self.output("stderr"), "")

    def test_connection_close_then_reconnect(self):
        self.restart_api("close")
        self.start(*self.echo)
        for i in range(3):
            self.assertEqual(self.invoke_ok(i).json(), i)
        self.assertGreaterEqual(self.api.connections, 6)  # every answer closed its connection
        self.assertEqual(self.output("stderr"), "")

    def test_idle_connection_closed_by_server_is_retried(self):
        # The server closes the kept-alive connection after each /next answer, without saying
        # so, while the handler runs: each POST fails on it and goes out again on a new one.
        self.restart_api("drop-idle")
        self.start(*self.slow_echo)
        for i in range(3):
            self.assertEqual(self.invoke_ok(i).json(), i)
        self.assertEqual([m for m, _ in self.api.requests].count("POST"), 3)
        self.assertGreaterEqual(self.api.connections, 4)
        self.assertEqual(self.output("stderr"), "")
        self.assertIsNone(self.proc.poll())

    def test_dropped_request_is_retried_only_once(self):
        self.start(*self.echo)
        self.invoke_ok(1)  # the runtime now waits in /next on a kept-alive connection
        self.api.abort = True
        self.api.enqueue(2)
        self.assertNotEqual(self.wait_exit(), 0)
        # Closed without an answer: the reused connection's /next, then the one retry on a new one.
        self.assertEqual(self.api.aborted, 2)


# ================================================================ Python


class PythonRuntimeTest(HttpClientCases, RuntimeTestCase):
    base_env = {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.11"}
    echo = ("app.handler", {"app.py": "def handler(event, context):\n    return event\n"})
    slow_echo = ("app.handler", {"app.py": "import time\ndef handler(event, context):\n    time.sleep(0.05)\n"
                                           "    return event\n"})

    @classmethod
    def setUpClass(cls):
        cls.command = [PYTHON, os.path.join(RUNTIMES_DIR, "python", "bootstrap.py")]

    def test_success_returns_nested_values(self):
        self.start("app.handler", {"app.py": """
            def handler(event, context):
                return %r
            """ % (NESTED,)})
        self.assertEqual(self.invoke_ok({}).body, python_json(NESTED))

    def test_echo_event(self):
        self.start("app.handler", {"app.py": """
            def handler(event, context):
                return event
            """})
        for event in (NESTED, [1, 2, 3], "text", 7, None):
            self.assertEqual(self.invoke_ok(event).body, python_json(event))

    def test_none_result_is_json_null(self):
        self.start("app.handler", {"app.py": """
            def handler(event, context):
                pass
            """})
        self.assertEqual(self.invoke_ok({}).body, b"null")

    def test_unicode_is_not_escaped_for_python312(self):
        self.start("app.handler", {"app.py": """
            def handler(event, context):
                return {"s": "h\\u00e9llo"}
            """}, env={"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"})
        self.assertEqual(self.invoke_ok({}).body, '{"s": "h\u00e9llo"}'.encode("utf-8"))

    def test_handler_output_passes_through_and_runtime_prints_nothing(self):
        self.start("app.handler", {"app.py": """
            import sys
            def handler(event, context):
                print("hello from handler")
                sys.stderr.write("to stderr\\n")
                return 1
            """})
        self.invoke_ok({})
        self.assertEqual(self.output("stdout"), "hello from handler\n")
        self.assertEqual(self.output("stderr"), "to stderr\n")

    def test_thrown_error(self):
        self.start("app.handler", {"app.py": """
            def handler(event, context):
                return helper(event)

            def helper(event):
                raise ValueError("boom: " + event["why"])
            """})
        body = self.invoke_error({"why": "because"})
        self.assertEqual(body["errorType"], "ValueError")
        self.assertEqual(body["errorMessage"], "boom: because")
        app = os.path.join(self.task_root, "app.py")
        self.assertEqual(len(body["stackTrace"]), 2, body["stackTrace"])
        self.assertEqual(body["stackTrace"][0],
                         '  File "%s", line 3, in handler\n    return helper(event)\n' % app)
        self.assertEqual(body["stackTrace"][1],
                         '  File "%s", line 6, in helper\n    raise ValueError("boom: " + event["why"])\n' % app)
        err = self.output("stderr")
        self.assertIn("[ERROR] ValueError: boom: because\nTraceback (most recent call last):\n", err)
        self.assertIn('line 6, in helper', err)

    def test_process_survives_handler_error(self):
        self.start("app.handler", {"app.py": """
            def handler(event, context):
                if event.get("fail"):
                    raise KeyError("k")
                return "fine"
            """})
        body = self.invoke_error({"fail": True})
        self.assertEqual((body["errorType"], body["errorMessage"]), ("KeyError", "'k'"))
        self.assertEqual(self.invoke_ok({}).body, b'"fine"')

    def test_unserializable_result_is_marshal_error(self):
        self.start("app.handler", {"app.py": """
            def handler(event, context):
                return {1, 2}
            """})
        body = self.invoke_error({})
        self.assertEqual(body["errorType"], "Runtime.MarshalError")
        self.assertTrue(body["errorMessage"].startswith("Unable to marshal response: "), body)

    def test_import_error_missing_module(self):
        self.start("nosuch.handler", {"app.py": "def handler(e, c): pass\n"})
        body = self.expect_init_error("Runtime.ImportModuleError")
        self.assertEqual(body["errorMessage"], "Unable to import module 'nosuch': No module named 'nosuch'")
        self.assertIn("[ERROR] Runtime.ImportModuleError: Unable to import module 'nosuch'", self.output("stderr"))

    def test_import_error_in_user_module(self):
        self.start("app.handler", {"app.py": "import not_installed_dependency\n"})
        body = self.expect_init_error("Runtime.ImportModuleError")
        self.assertEqual(body["errorMessage"],
                         "Unable to import module 'app': No module named 'not_installed_dependency'")

    def test_missing_handler_function(self):
        self.start("app.nope", {"app.py": "def handler(e, c): pass\n"})
        body = self.expect_init_error("Runtime.HandlerNotFound")
        self.assertEqual(body["errorMessage"], "Handler 'nope' missing on module 'app'")

    def test_syntax_error(self):
        self.start("app.handler", {"app.py": "def handler(event, context:\n    pass\n"})
        body = self.expect_init_error("Runtime.UserCodeSyntaxError")
        self.assertTrue(body["errorMessage"].startswith("Syntax error in module 'app': "), body)

    def test_exception_at_import_time(self):
        self.start("app.handler", {"app.py": "raise RuntimeError('bad config')\n"})
        body = self.expect_init_error("RuntimeError")
        self.assertEqual(body["errorMessage"], "bad config")
        self.assertEqual(len(body["stackTrace"]), 1, body)
        self.assertIn('app.py", line 1, in <module>', body["stackTrace"][0])

    def test_malformed_handler(self):
        self.start("nodot", {"app.py": "def handler(e, c): pass\n"})
        self.expect_init_error("Runtime.MalformedHandlerName")

    def test_context(self):
        self.start("app.handler", {"app.py": """
            import os
            def handler(event, context):
                cc = context.client_context
                return {
                    "aws_request_id": context.aws_request_id,
                    "function_name": context.function_name,
                    "function_version": context.function_version,
                    "memory_limit_in_mb": context.memory_limit_in_mb,
                    "invoked_function_arn": context.invoked_function_arn,
                    "log_group_name": context.log_group_name,
                    "log_stream_name": context.log_stream_name,
                    "remaining": context.get_remaining_time_in_millis(),
                    "client_installation_id": cc.client.installation_id,
                    "client_app_title": cc.client.app_title,
                    "custom": cc.custom,
                    "env": cc.env,
                    "cognito_identity_id": context.identity.cognito_identity_id,
                    "cognito_identity_pool_id": context.identity.cognito_identity_pool_id,
                    "cwd": os.getcwd(),
                }
            """})
        arn = "arn:aws:lambda:us-east-1:123456789012:function:%s:prod" % FUNCTION_NAME
        deadline = int(time.time() * 1000) + 5000
        report = self.invoke_ok(
            {}, deadline_ms=deadline, function_arn=arn,
            client_context={"client": {"installation_id": "inst-1", "app_title": "My App"},
                            "custom": {"k": "v"}, "env": {"platform": "test"}},
            cognito_identity={"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"})
        got = report.json()
        remaining = got.pop("remaining")
        self.assertTrue(0 < remaining <= 5000, remaining)
        self.assertEqual(got, {
            "aws_request_id": report.request_id,
            "function_name": FUNCTION_NAME,
            "function_version": "$LATEST",
            "memory_limit_in_mb": "128",  # a string, as in AWS's Python runtime
            "invoked_function_arn": arn,
            "log_group_name": "/aws/lambda/" + FUNCTION_NAME,
            "log_stream_name": LOG_STREAM,
            "client_installation_id": "inst-1",
            "client_app_title": "My App",
            "custom": {"k": "v"},
            "env": {"platform": "test"},
            "cognito_identity_id": "id-1",
            "cognito_identity_pool_id": "pool-1",
            "cwd": os.path.realpath(self.task_root),
        })

    def test_context_without_optional_headers(self):
        self.start("app.handler", {"app.py": """
            def handler(event, context):
                return [context.client_context, context.identity.cognito_identity_id,
                        context.get_remaining_time_in_millis()]
            """})
        self.assertEqual(self.invoke_ok({}, deadline_ms=int(time.time() * 1000) - 1000).json(), [None, None, 0])

    def test_invocations_reuse_the_process(self):
        self.start("app.handler", {"app.py": """
            import os
            COUNT = 0
            def handler(event, context):
                global COUNT
                COUNT += 1
                return [COUNT, os.getpid()]
            """})
        first = self.invoke_ok({}).json()
        second = self.invoke_ok({}).json()
        self.assertEqual(first, [1, self.proc.pid])
        self.assertEqual(second, [2, self.proc.pid])

    def test_large_event_and_response(self):
        self.start("app.handler", {"app.py": """
            def handler(event, context):
                return {"n": len(event["blob"]), "data": event["blob"]}
            """})
        blob = "x" * (LARGE - 100) + "end"
        report = self.invoke_ok({"blob": blob})
        self.assertEqual(report.body, python_json({"n": len(blob), "data": blob}))

    def test_trace_id_env(self):
        self.start("app.handler", {"app.py": """
            import os
            def handler(event, context):
                return os.environ.get("_X_AMZN_TRACE_ID")
            """})
        self.assertEqual(self.invoke_ok({}, trace_id=TRACE_ID).json(), TRACE_ID)
        other = TRACE_ID.replace("Sampled=1", "Sampled=0")
        self.assertEqual(self.invoke_ok({}, trace_id=other).json(), other)

    def test_handler_in_subdirectory(self):
        self.start("sub/dir/mod.handler", {"sub/dir/mod.py": """
            import helper
            def handler(event, context):
                return "sub:" + helper.NAME
            """, "helper.py": "NAME = 'root helper'\n"})
        self.assertEqual(self.invoke_ok({}).json(), "sub:root helper")

    def test_handler_in_package_dotted(self):
        self.start("pkg.mod.handler", {"pkg/__init__.py": "", "pkg/mod.py": """
            def handler(event, context):
                return __name__
            """})
        self.assertEqual(self.invoke_ok({}).json(), "pkg.mod")

    def test_logging_uses_aws_format(self):
        self.start("app.handler", {"app.py": """
            import logging
            logger = logging.getLogger()
            logger.setLevel(logging.INFO)
            def handler(event, context):
                logger.info("info line")
                return None
            """})
        report = self.invoke_ok({})
        line = self.output("stderr").strip()
        self.assertTrue(line.startswith("[INFO]\t"), line)
        self.assertTrue(line.endswith("\t%s\tinfo line" % report.request_id), line)

    def test_server_closing_connections(self):
        for mode in ("close", "drop"):
            with self.subTest(connection=mode):
                self.restart_api(mode)
                self.start("app.handler", {"app.py": "def handler(e, c): return e\n"})
                for i in range(5):
                    self.assertEqual(self.invoke_ok(i).body, str(i).encode())

    def test_exits_when_next_is_gone(self):
        self.start("app.handler", {"app.py": "def handler(e, c): return 1\n"})
        self.invoke_ok({})
        self.api.shutdown_next()
        self.assertNotEqual(self.wait_exit(), 0)

    def test_event_bodies_decode_as_json_loads_does(self):
        self.start("app.handler", {"app.py": "def handler(event, context):\n    return event\n"})
        for body in (b'{"a": "\xc3\xa9"}', b"\xef\xbb\xbf[1]", '["\u00e9"]'.encode("utf-16"),
                     '"\u00e9"'.encode("utf-16-le"), '{"k": 2}'.encode("utf-32-be"), b"7", b" \n[]"):
            with self.subTest(body=body):
                self.assertEqual(self.invoke_ok(body=body).json(), json.loads(body))
        for body in (b"{nope", b"", b'"\xc3(', b"\xef\xbb\xbf", b"\x00"):
            with self.subTest(body=body):
                with self.assertRaises(ValueError) as cm:
                    json.loads(body)
                error = self.invoke_error(body=body)
                self.assertEqual((error["errorType"], error["errorMessage"]),
                                 ("Runtime.UnmarshalError", "Unable to unmarshal input: %s" % cm.exception))

    def test_function_fields_of_the_context_include_changes_made_at_init(self):
        self.start("app.handler", {"app.py": """
            import os
            os.environ["AWS_LAMBDA_FUNCTION_VERSION"] = "7"
            def handler(event, context):
                return [context.function_name, context.function_version, context.memory_limit_in_mb]
            """})
        self.assertEqual(self.invoke_ok({}).json(), [FUNCTION_NAME, "7", "128"])

    def test_header_names_in_any_case(self):
        code = """
            import os
            def handler(event, context):
                cc = context.client_context
                return [context.aws_request_id, context.invoked_function_arn,
                        0 < context.get_remaining_time_in_millis() <= 5000, cc.custom, cc.client.installation_id,
                        context.identity.cognito_identity_pool_id, context.tenant_id, os.environ["_X_AMZN_TRACE_ID"]]
            """
        arn = DEFAULT_ARN + ":prod"
        for case in ("lower", "upper", "mixed"):
            with self.subTest(header_case=case):
                self.restart_api(header_case=case)
                self.start("app.handler", {"app.py": code})
                report = self.invoke_ok({}, function_arn=arn, trace_id=TRACE_ID,
                                        client_context={"client": {"installation_id": "inst-1"}, "custom": {"k": 1}},
                                        cognito_identity={"cognitoIdentityPoolId": "pool-1"},
                                        extra_headers={"Lambda-Runtime-Aws-Tenant-Id": "tenant-1"})
                self.assertEqual(report.json(), [report.request_id, arn, True, {"k": 1}, "inst-1", "pool-1",
                                                 "tenant-1", TRACE_ID])

    def test_default_socket_timeout_set_by_user_code_does_not_apply(self):
        # /next blocks until there is an event; the Runtime API says not to time it out. With
        # Connection: close every request needs a new socket, made after the timeout was set.
        self.restart_api("close")
        self.start("app.handler", {"app.py": """
            import socket
            socket.setdefaulttimeout(0.05)
            def handler(event, context):
                return event
            """})
        self.assertEqual(self.invoke_ok(1).json(), 1)
        time.sleep(0.3)
        self.assertEqual(self.invoke_ok(2).json(), 2)
        self.assertEqual(self.output("stderr"), "")


class RawServer:
    """A TCP server that answers each request it reads with the next of some canned answers.

    An answer is bytes (the connection stays open), ("close", bytes) (closed after it) or None
    (closed without answering). requests holds each request as received; connections counts.
    """

    def __init__(self, answers, host="127.0.0.1"):
        self.answers = list(answers)
        self.requests = []
        self.connections = 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, 0), family=family)
        port = self.sock.getsockname()[1]
        self.address = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept(); close() alone does not
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)

    def _serve(self):
        try:
            while self.answers:
                conn, _ = self.sock.accept()
                self.connections += 1
                with conn:
                    self._serve_connection(conn)
        except OSError:
            pass  # closed

    def _serve_connection(self, conn):
        buf = b""
        while self.answers:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
            length = int(length.group(1)) if length else 0
            while len(buf) < length:
                buf += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + buf[:length])
            buf = buf[length:]
            answer = self.answers.pop(0)
            if answer is None:
                return
            if isinstance(answer, tuple):
                conn.sendall(answer[1])
                return
            conn.sendall(answer)


class PythonClientTest(unittest.TestCase):
    """The Python bootstrap's HTTP client (RuntimeApiClient) against canned answers, in-process."""

    @classmethod
    def setUpClass(cls):
        spec = importlib.util.spec_from_file_location("nimbus_python_bootstrap",
                                                      os.path.join(RUNTIMES_DIR, "python", "bootstrap.py"))
        cls.bootstrap = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cls.bootstrap)

    def serve(self, *answers):
        server = RawServer(answers)
        self.addCleanup(server.close)
        client = self.bootstrap.RuntimeApiClient(server.address)
        self.addCleanup(client.close)
        return server, client

    def expect_fatal(self, call):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as cm:
            call()
        self.assertEqual(cm.exception.code, 1)
        return err.getvalue()

    def test_requests_on_the_wire(self):
        server, client = self.serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nLambda-Runtime-Aws-Request-Id: a/b c\r\n\r\n{}",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        headers, body = client.next_invocation()
        self.assertEqual((headers.get("lambda-runtime-aws-request-id"), body), ("a/b c", b"{}"))
        client.post_response("a/b c", b'{"r": 1}')
        client.post_error("a/b c", {"errorMessage": "m", "errorType": "Bad\u00e9Type", "stackTrace": []})
        client.post_init_error({"errorMessage": "m", "errorType": "Runtime.X", "stackTrace": []})
        common = (b" HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: identity\r\nUser-Agent: nimbus-python-runtime/1.0 "
                  b"(python/%d.%d.%d)\r\n" % ((server.address.encode(),) + tuple(sys.version_info[:3])))
        error = json.dumps({"errorMessage": "m", "errorType": "Bad\u00e9Type", "stackTrace": []}).encode()
        init_error = json.dumps({"errorMessage": "m", "errorType": "Runtime.X", "stackTrace": []}).encode()
        self.assertEqual(server.requests, [
            b"GET /2018-06-01/runtime/invocation/next" + common + b"\r\n",
            b"POST /2018-06-01/runtime/invocation/a%2Fb%20c/response" + common
            + b"Content-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"r\": 1}",
            b"POST /2018-06-01/runtime/invocation/a%2Fb%20c/error" + common
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(error)
            + b"Lambda-Runtime-Function-Error-Type: Bad%C3%A9Type\r\n\r\n" + error,
            b"POST /2018-06-01/runtime/init/error" + common
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(init_error)
            + b"Lambda-Runtime-Function-Error-Type: Runtime.X\r\n\r\n" + init_error,
        ])
        self.assertEqual(server.connections, 1)

    def test_headers(self):
        _, client = self.serve(
            b"HTTP/1.1 200 OK\r\nx-ODD-case:  first \t\r\nX-Odd-Case: second\r\nFolded: one\r\n  two\r\n"
            b"\ttwo-b\r\nEmpty:\r\nCONTENT-LENGTH: 1\r\n\r\nx")
        headers, body = client.next_invocation()
        self.assertEqual(body, b"x")
        for name in ("X-Odd-Case", "x-odd-case", "X-ODD-CASE"):
            self.assertEqual(headers.get(name), "first")  # the first of repeated headers, as HTTPMessage
            self.assertEqual(headers[name], "first")
            self.assertIn(name, headers)
        self.assertEqual(headers.get("Folded"), "one two two-b")
        self.assertEqual(headers.get("Empty"), "")
        self.assertIsNone(headers.get("Missing"))
        self.assertEqual(headers.get("Missing", "d"), "d")
        self.assertNotIn("Missing", headers)

    def test_interim_answer_is_skipped(self):
        _, client = self.serve(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual(client.next_invocation()[1], b"abc")

    def test_http10_answers_close_unless_kept_alive(self):
        server, client = self.serve(
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na",
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nb",
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nc",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nd")
        self.assertEqual([client.next_invocation()[1] for _ in range(4)], [b"a", b"b", b"c", b"d"])
        self.assertEqual(server.connections, 3)

    def test_body_framed_by_chunks_or_close(self):
        server, client = self.serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\n"
            b"T: 1\r\n\r\n",
            ("close", b"HTTP/1.1 200 OK\r\n\r\nuntil the end"),
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual([client.next_invocation()[1] for _ in range(3)], [b"abc0123456789", b"until the end", b""])
        self.assertEqual(server.connections, 2)

    def test_post_status_handling(self):
        _, client = self.serve(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 7\r\n\r\ntoo big",
                               b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            client.post_response("id", b"{}")  # logged; the loop carries on
        self.assertEqual(err.getvalue(),
                         "nimbus python runtime: POST /invocation/id/response returned HTTP 413: too big\n")
        self.assertEqual(self.expect_fatal(lambda: client.post_response("id", b"{}")),
                         "nimbus python runtime: POST /invocation/id/response returned HTTP 500: oops\n")

    def test_truncated_answer_is_fatal(self):
        _, client = self.serve(("close", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
        self.assertEqual(self.expect_fatal(client.next_invocation),
                         "nimbus python runtime: GET /runtime/invocation/next failed: "
                         "connection closed after 3 of 10 body bytes\n")

    def test_no_answer_on_a_new_connection_is_not_retried(self):
        server, client = self.serve(None, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertIn("Remote end closed connection without response", self.expect_fatal(client.next_invocation))
        self.assertEqual(server.connections, 1)

    def test_split_host_port(self):
        split = self.bootstrap.split_host_port
        self.assertEqual(split("127.0.0.1:9001"), ("127.0.0.1", 9001))
        self.assertEqual(split("[::1]:9001"), ("::1", 9001))
        self.assertEqual(split("[::1]"), ("::1", 80))
        self.assertEqual(split("localhost"), ("localhost", 80))
        self.assertEqual(split("localhost:"), ("localhost", 80))
        with self.assertRaises(ValueError):
            split("localhost:http")


# ================================================================ Node.js


@unittest.skipUnless(os.access(NODE, os.X_OK), "node not found at %s" % NODE)
class NodeRuntimeTest(HttpClientCases, RuntimeTestCase):
    echo = ("index.handler", {"index.js": "exports.handler = async (event) => event;\n"})
    slow_echo = ("index.handler", {"index.js": """
        exports.handler = async (event) => { await new Promise((r) => setTimeout(r, 50)); return event; };
        """})

    @classmethod
    def setUpClass(cls):
        cls.command = [NODE, os.path.join(RUNTIMES_DIR, "node", "bootstrap.mjs")]

    def test_commonjs_success_returns_nested_values(self):
        self.start("index.handler", {"index.js": """
            exports.handler = async (event, context) => (%s);
            """ % json.dumps(NESTED)})
        self.assertEqual(self.invoke_ok({}).body, node_json(NESTED))

    def test_commonjs_module_exports(self):
        self.start("index.handler", {"index.js": """
            module.exports = { handler: async (event) => ({ kind: typeof require, event }) };
            """})
        self.assertEqual(self.invoke_ok([1]).body, node_json({"kind": "function", "event": [1]}))

    def test_echo_event(self):
        self.start("index.handler", {"index.js": "exports.handler = async (event) => event;\n"})
        for event in (NESTED, [1, 2, 3], "text", 7, None):
            self.assertEqual(self.invoke_ok(event).body, node_json(event))

    def test_undefined_result_is_json_null(self):
        self.start("index.handler", {"index.js": "exports.handler = async () => {};\n"})
        self.assertEqual(self.invoke_ok({}).body, b"null")

    def test_sync_handler_plain_return_value(self):
        self.start("index.handler", {"index.js": "exports.handler = (event) => ({ sync: event.v });\n"})
        self.assertEqual(self.invoke_ok({"v": 1}).body, b'{"sync":1}')

    def test_async_handler_awaits(self):
        self.start("index.handler", {"index.js": """
            const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
            exports.handler = async (event) => { await sleep(50); return { slept: true, v: event.v }; };
            """})
        self.assertEqual(self.invoke_ok({"v": 2}).body, b'{"slept":true,"v":2}')

    def test_callback_handler(self):
        self.start("index.handler", {"index.js": """
            exports.handler = function (event, context, callback) {
              setTimeout(() => callback(null, { via: 'callback', v: event.v }), 20);
              return 'ignored';
            };
            """})
        self.assertEqual(self.invoke_ok({"v": 3}).body, b'{"via":"callback","v":3}')

    def test_callback_error(self):
        self.start("index.handler", {"index.js": """
            exports.handler = (event, context, callback) => callback(new TypeError('bad input'));
            """})
        body = self.invoke_error({})
        self.assertEqual((body["errorType"], body["errorMessage"]), ("TypeError", "bad input"))

    def test_callback_waits_for_empty_event_loop(self):
        self.start("index.handler", {"index.js": """
            exports.handler = (event, context, callback) => {
              setTimeout(() => console.log('timer fired'), 300);
              callback(null, 'done');
            };
            """})
        self.assertEqual(self.invoke_ok({}).body, b'"done"')
        self.assertEqual(self.output("stdout"), "timer fired\n")

    def test_callback_without_waiting_for_event_loop(self):
        self.start("index.handler", {"index.js": """
            exports.handler = (event, context, callback) => {
              context.callbackWaitsForEmptyEventLoop = false;
              setTimeout(() => console.log('timer fired'), 3000);
              callback(null, 'early');
            };
            """})
        self.assertEqual(self.invoke_ok({}).body, b'"early"')
        self.assertEqual(self.output("stdout"), "")

    def test_legacy_context_succeed(self):
        self.start("index.handler", {"index.js": """
            exports.handler = function (event, context, callback) {
              setTimeout(() => context.succeed({ legacy: true }), 10);
            };
            """})
        self.assertEqual(self.invoke_ok({}).body, b'{"legacy":true}')

    def test_event_loop_drained_without_result_returns_null(self):
        self.start("index.handler", {"index.js": "exports.handler = () => new Promise(() => {});\n"})
        self.assertEqual(self.invoke_ok({}).body, b"null")

    def test_es_module_mjs(self):
        self.start("app.handler", {"app.mjs": """
            import { createHash } from 'node:crypto';
            const started = await Promise.resolve('tla');
            export const handler = async (event) => ({ esm: true, started, sha: createHash('sha1').update('a').digest('hex').slice(0, 8) });
            """})
        self.assertEqual(self.invoke_ok({}).body, b'{"esm":true,"started":"tla","sha":"86f7e437"}')

    def test_es_module_js_with_type_module(self):
        self.start("index.handler", {"package.json": '{"type": "module"}', "index.js": """
            export async function handler(event) { return { esmJs: typeof require }; }
            """})
        self.assertEqual(self.invoke_ok({}).body, b'{"esmJs":"undefined"}')

    def test_commonjs_cjs(self):
        self.start("lib.handler", {"lib.cjs": "exports.handler = async () => ({ cjs: typeof module });\n"})
        self.assertEqual(self.invoke_ok({}).body, b'{"cjs":"object"}')

    def test_js_preferred_over_mjs(self):
        self.start("index.handler", {"index.js": "exports.handler = async () => 'js';\n",
                                     "index.mjs": "export const handler = async () => 'mjs';\n"})
        self.assertEqual(self.invoke_ok({}).body, b'"js"')

    def test_handler_in_subdirectory_and_nested_export(self):
        self.start("src/handlers/app.api.get", {"src/handlers/app.js": """
            exports.api = { get: async () => 'nested' };
            """})
        self.assertEqual(self.invoke_ok({}).body, b'"nested"')

    def test_handler_output_passes_through_and_runtime_prints_nothing(self):
        self.start("index.handler", {"index.js": """
            exports.handler = async () => { console.log('hello from handler'); console.error('to stderr'); return 1; };
            """})
        self.invoke_ok({})
        self.assertEqual(self.output("stdout"), "hello from handler\n")
        self.assertEqual(self.output("stderr"), "to stderr\n")

    def test_thrown_error(self):
        self.start("index.handler", {"index.js": """
            exports.handler = async (event) => {
              throw new Error('boom: ' + event.why);
            };
            """})
        body = self.invoke_error({"why": "because"})
        self.assertEqual(body["errorType"], "Error")
        self.assertEqual(body["errorMessage"], "boom: because")
        self.assertEqual(body["stackTrace"][0], "Error: boom: because")
        self.assertIn(os.path.join(self.task_root, "index.js") + ":3:", body["stackTrace"][1])
        err = self.output("stderr")
        self.assertIn("\tERROR\tInvoke Error \t", err)
        self.assertIn('{"errorType":"Error","errorMessage":"boom: because","stack":["Error: boom: because"', err)
        # The process survives and serves the next invocation.
        self.assertEqual(self.invoke_error({"why": "again"})["errorMessage"], "boom: again")

    def test_sync_throw_and_custom_error_name(self):
        self.start("index.handler", {"index.js": """
            class ValidationError extends Error {
              constructor(m) { super(m); this.name = 'ValidationError'; }
            }
            exports.handler = (event, context, callback) => { throw new ValidationError('nope'); };
            """})
        body = self.invoke_error({})
        self.assertEqual((body["errorType"], body["errorMessage"]), ("ValidationError", "nope"))
        self.assertTrue(body["stackTrace"], body)

    def test_thrown_non_error_value(self):
        self.start("index.handler", {"index.js": "exports.handler = async () => { throw 'plain string'; };\n"})
        body = self.invoke_error({})
        self.assertEqual(body, {"errorType": "string", "errorMessage": "plain string", "stackTrace": []})

    def test_uncaught_exception_fails_invocation_and_exits(self):
        self.start("index.handler", {"index.js": """
            exports.handler = (event, context, callback) => {
              setTimeout(() => { throw new RangeError('async boom'); }, 10);
            };
            """})
        body = self.invoke_error({})
        self.assertEqual((body["errorType"], body["errorMessage"]), ("RangeError", "async boom"))
        self.assertEqual(self.wait_exit(), 129)

    def test_unserializable_result(self):
        self.start("index.handler", {"index.js": """
            exports.handler = async () => { const o = {}; o.self = o; return o; };
            """})
        body = self.invoke_error({})
        self.assertEqual(body["errorType"], "Runtime.MarshalError")

    def test_import_error_missing_module(self):
        self.start("nosuch.handler", {"index.js": "exports.handler = async () => 1;\n"})
        body = self.expect_init_error("Runtime.ImportModuleError")
        self.assertTrue(body["errorMessage"].startswith("Error: Cannot find module 'nosuch'"), body)
        self.assertIn("\tERROR\tUncaught Exception \t", self.output("stderr"))

    def test_import_error_in_user_module(self):
        self.start("index.handler", {"index.js": "require('not-installed-dependency');\n"})
        body = self.expect_init_error("Runtime.ImportModuleError")
        self.assertTrue(body["errorMessage"].startswith("Error: Cannot find module 'not-installed-dependency'"),
                        body)

    def test_missing_handler_function(self):
        self.start("index.nope", {"index.js": "exports.handler = async () => 1;\n"})
        body = self.expect_init_error("Runtime.HandlerNotFound")
        self.assertEqual(body["errorMessage"], "index.nope is undefined or not exported")

    def test_handler_not_a_function(self):
        self.start("index.handler", {"index.js": "exports.handler = 42;\n"})
        body = self.expect_init_error("Runtime.HandlerNotFound")
        self.assertEqual(body["errorMessage"], "index.handler is not a function")

    def test_syntax_error(self):
        self.start("index.handler", {"index.js": "exports.handler = async () => {;\n"})
        body = self.expect_init_error("Runtime.UserCodeSyntaxError")
        self.assertTrue(body["errorMessage"].startswith("SyntaxError: "), body)

    def test_esm_syntax_error(self):
        self.start("index.handler", {"index.mjs": "export const handler = ;\n"})
        self.expect_init_error("Runtime.UserCodeSyntaxError")

    def test_exception_at_module_load(self):
        self.start("index.handler", {"index.js": "throw new Error('bad config');\n"})
        body = self.expect_init_error("Error")
        self.assertEqual(body["errorMessage"], "bad config")

    def test_malformed_handler(self):
        self.start("nodot", {"index.js": "exports.handler = async () => 1;\n"})
        self.expect_init_error("Runtime.MalformedHandlerName")

    def test_two_init_errors_at_once_go_out_one_after_the_other(self):
        # The module fails to load and a timer it set throws while that init error is on its
        # way: the second report waits for the first answer on the one connection.
        self.start("index.handler", {"index.js": """
            setTimeout(() => { throw new Error('from a timer'); }, 0);
            throw new Error('bad config');
            """})
        # The load error's report is answered first, and the runtime exits as after any
        # failed load (1; an uncaught exception's own report would end it with 129).
        self.assertEqual(self.wait_exit(), 1, self.output("stderr"))
        self.assertGreaterEqual(len(self.api.init_errors), 1)
        self.assertEqual(self.api.init_errors[0].json()["errorMessage"], "bad config")
        for report in self.api.init_errors[1:]:
            self.assertEqual(report.json()["errorMessage"], "from a timer")
        self.assertNotIn("nimbus node runtime", self.output("stderr"))
        self.assertEqual(self.api.next_calls, 0)

    def test_context(self):
        self.start("index.handler", {"index.js": """
            exports.handler = async (event, context) => ({
              awsRequestId: context.awsRequestId,
              functionName: context.functionName,
              functionVersion: context.functionVersion,
              memoryLimitInMB: context.memoryLimitInMB,
              invokedFunctionArn: context.invokedFunctionArn,
              logGroupName: context.logGroupName,
              logStreamName: context.logStreamName,
              remaining: context.getRemainingTimeInMillis(),
              clientContext: context.clientContext,
              identity: context.identity,
              callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
              legacy: [typeof context.done, typeof context.succeed, typeof context.fail],
              cwd: process.cwd(),
            });
            """})
        arn = "arn:aws:lambda:us-east-1:123456789012:function:%s:prod" % FUNCTION_NAME
        client_context = {"client": {"installation_id": "inst-1"}, "custom": {"k": "v"}, "env": {}}
        identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
        report = self.invoke_ok({}, deadline_ms=int(time.time() * 1000) + 5000, function_arn=arn,
                                client_context=client_context, cognito_identity=identity)
        got = report.json()
        remaining = got.pop("remaining")
        self.assertTrue(0 < remaining <= 5000, remaining)
        self.assertEqual(got, {
            "awsRequestId": report.request_id,
            "functionName": FUNCTION_NAME,
            "functionVersion": "$LATEST",
            "memoryLimitInMB": "128",
            "invokedFunctionArn": arn,
            "logGroupName": "/aws/lambda/" + FUNCTION_NAME,
            "logStreamName": LOG_STREAM,
            "clientContext": client_context,
            "identity": identity,
            "callbackWaitsForEmptyEventLoop": True,
            "legacy": ["function", "function", "function"],
            "cwd": os.path.realpath(self.task_root),
        })

    def test_invocations_reuse_the_process(self):
        self.start("index.handler", {"index.js": """
            let count = 0;
            exports.handler = async () => [++count, process.pid];
            """})
        self.assertEqual(self.invoke_ok({}).json(), [1, self.proc.pid])
        self.assertEqual(self.invoke_ok({}).json(), [2, self.proc.pid])
        self.assertEqual(self.invoke_ok({}).json(), [3, self.proc.pid])

    def test_large_event_and_response(self):
        self.start("index.handler", {"index.js": """
            exports.handler = async (event) => ({ n: event.blob.length, data: event.blob });
            """})
        blob = "x" * (LARGE - 100) + "end"
        report = self.invoke_ok({"blob": blob})
        self.assertEqual(report.body, node_json({"n": len(blob), "data": blob}))

    def test_trace_id_env(self):
        self.start("index.handler", {"index.js": "exports.handler = async () => process.env._X_AMZN_TRACE_ID;\n"})
        self.assertEqual(self.invoke_ok({}, trace_id=TRACE_ID).json(), TRACE_ID)
        other = TRACE_ID.replace("Sampled=1", "Sampled=0")
        self.assertEqual(self.invoke_ok({}, trace_id=other).json(), other)

    def test_server_closing_connections(self):
        for mode in ("close", "drop"):
            with self.subTest(connection=mode):
                self.restart_api(mode)
                self.start("index.handler", {"index.js": "exports.handler = async (e) => e;\n"})
                for i in range(5):
                    self.assertEqual(self.invoke_ok(i).body, str(i).encode())

    def test_exits_when_next_is_gone(self):
        self.start("index.handler", {"index.js": "exports.handler = async () => 1;\n"})
        self.invoke_ok({})
        self.api.shutdown_next()
        self.assertNotEqual(self.wait_exit(), 0)



@unittest.skipUnless(os.access(NODE, os.X_OK), "node not found at %s" % NODE)
class NodeClientTest(RuntimeTestCase):
    """The Node bootstrap's HTTP client against canned answers (RawServer): the whole runtime
    runs, with a handler that returns the event and what the context read from the headers."""

    HANDLER = ("index.handler", {"index.js": """
        exports.handler = async (event, context) =>
          ({ event, id: context.awsRequestId, arn: context.invokedFunctionArn });
        """})
    ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"

    @classmethod
    def setUpClass(cls):
        cls.command = [NODE, os.path.join(RUNTIMES_DIR, "node", "bootstrap.mjs")]

    def serve(self, *answers, handler=None, host="127.0.0.1"):
        server = RawServer(answers, host)
        self.addCleanup(server.close)
        self.start(*(handler or self.HANDLER), env={"AWS_LAMBDA_RUNTIME_API": server.address})
        return server

    def wait_requests(self, server, n, timeout=15.0):
        end = time.monotonic() + timeout
        while len(server.requests) < n and time.monotonic() < end and self.proc.poll() is None:
            time.sleep(0.01)
        self.assertGreaterEqual(len(server.requests), n, "stderr:\n" + self.output("stderr"))
        return server.requests

    def posted(self, request):
        """The JSON body of a POST the runtime sent."""
        return json.loads(request.partition(b"\r\n\r\n")[2])

    def next_answer(self, body, request_id="id-1", extra=b""):
        return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nLambda-Runtime-Aws-Request-Id: %s\r\n%s\r\n%s"
                % (len(body), request_id.encode(), extra, body))

    def test_requests_on_the_wire(self):
        server = self.serve(self.next_answer(b'{"k": 1}', "a/b c"), self.ACCEPTED,
                            self.next_answer(b"{", "id-2"), self.ACCEPTED)
        requests = self.wait_requests(server, 4)
        node_version = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()
        common = (b" HTTP/1.1\r\nHost: %s\r\nUser-Agent: nimbus-node-runtime/1.0 (node/%s)\r\n"
                  % (server.address.encode(), node_version.lstrip("v").encode()))
        response = node_json({"event": {"k": 1}, "id": "a/b c"})
        self.assertEqual(requests[0], b"GET /2018-06-01/runtime/invocation/next" + common + b"\r\n")
        self.assertEqual(requests[1], b"POST /2018-06-01/runtime/invocation/a%2Fb%20c/response" + common
                         + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(response)
                         + response)
        self.assertEqual(requests[2], requests[0])
        head, _, body = requests[3].partition(b"\r\n\r\n")
        self.assertEqual(head, b"POST /2018-06-01/runtime/invocation/id-2/error" + common
                         + b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
                         + b"Lambda-Runtime-Function-Error-Type: Runtime.UnmarshalError")
        self.assertEqual(json.loads(body)["errorType"], "Runtime.UnmarshalError")
        self.assertEqual(server.connections, 1)

    @unittest.skipUnless(socket.has_ipv6, "no IPv6")
    def test_ipv6_address(self):
        try:
            server = self.serve(self.next_answer(b"[6]"), self.ACCEPTED, host="::1")
        except OSError as e:
            self.skipTest("cannot listen on ::1: %s" % e)
        requests = self.wait_requests(server, 2)
        self.assertIn(b"\r\nHost: %s\r\n" % server.address.encode(), requests[0])
        self.assertTrue(server.address.startswith("[::1]:"))
        self.assertEqual(self.posted(requests[1])["event"], [6])

    def test_headers_in_any_case_repeated_and_folded(self):
        server = self.serve(
            b"HTTP/1.1 200 OK\r\nlambda-RUNTIME-aws-request-id:  first \t\r\nLambda-Runtime-Aws-Request-Id: second\r\n"
            b"Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:1:function:\r\n  f\r\n"
            b"Empty:\r\nCONTENT-LENGTH: 1\r\n\r\n7", self.ACCEPTED)
        requests = self.wait_requests(server, 2)
        self.assertTrue(requests[1].startswith(b"POST /2018-06-01/runtime/invocation/first/response "))
        self.assertEqual(self.posted(requests[1]),
                         {"event": 7, "id": "first", "arn": "arn:aws:lambda:us-east-1:1:function: f"})

    def test_interim_answer_is_skipped(self):
        server = self.serve(b"HTTP/1.1 100 Continue\r\n\r\n" + self.next_answer(b'"abc"'), self.ACCEPTED)
        self.assertEqual(self.posted(self.wait_requests(server, 2)[1])["event"], "abc")

    def test_http10_answers_close_unless_kept_alive(self):
        server = self.serve(
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nLambda-Runtime-Aws-Request-Id: a\r\n\r\n1",
            b"HTTP/1.0 202 Accepted\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            self.next_answer(b"2", "b", b"Connection: keep-alive, Close\r\n"), self.ACCEPTED,
            self.next_answer(b"3", "c"), self.ACCEPTED)
        requests = self.wait_requests(server, 6)
        self.assertEqual([self.posted(r)["event"] for r in requests[1::2]], [1, 2, 3])
        self.assertEqual(server.connections, 3)

    def test_body_framed_by_chunks_or_close(self):
        server = self.serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nLambda-Runtime-Aws-Request-Id: a\r\n\r\n"
            b"3;x=y\r\n\"ab\r\nA\r\nc01234567\"\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",  # no body, whatever the framing headers say
            ("close", b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: b\r\n\r\n\"until the end\""),
            self.ACCEPTED, self.next_answer(b"", "c"), self.ACCEPTED)
        requests = self.wait_requests(server, 6)
        self.assertEqual(self.posted(requests[1])["event"], "abc01234567")
        self.assertEqual(self.posted(requests[3]), {"event": "until the end", "id": "b"})
        # An empty event body is no JSON: the invocation fails with Runtime.UnmarshalError.
        self.assertTrue(requests[5].startswith(b"POST /2018-06-01/runtime/invocation/c/error "))
        self.assertEqual(self.posted(requests[5])["errorType"], "Runtime.UnmarshalError")
        self.assertEqual(server.connections, 2)
        self.assertNotIn("nimbus node runtime", self.output("stderr"))  # no complaint about any answer

    def test_truncated_answer_is_fatal(self):
        self.serve(("close", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
        self.assertEqual(self.wait_exit(), 1)
        self.assertEqual(self.output("stderr"), "nimbus node runtime: GET /runtime/invocation/next failed: "
                                                "connection closed after 3 of 10 body bytes\n")

    def test_malformed_answers_are_fatal(self):
        for answer, message in (
                (b"HTTP/2 200 OK\r\n\r\n", 'bad status line "HTTP/2 200 OK"'),
                (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", 'bad header line "no colon"'),
                (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 'bad Content-Length "-1"'),
                (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 'bad chunk size line "zz"'),
                (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                 "chunk data not followed by CRLF")):
            with self.subTest(answer=answer):
                self.serve(answer, self.ACCEPTED)
                self.assertEqual(self.wait_exit(), 1)
                self.assertEqual(self.output("stderr"),
                                 "nimbus node runtime: GET /runtime/invocation/next failed: %s\n" % message)

    def test_no_answer_on_a_new_connection_is_not_retried(self):
        server = self.serve(None, self.next_answer(b"1"))
        self.assertEqual(self.wait_exit(), 1)
        self.assertIn("Remote end closed connection without response", self.output("stderr"))
        self.assertEqual(server.connections, 1)

    def test_large_event_in_many_pieces(self):
        event = {"blob": "x" * (6 * 1024 * 1024 - 100)}
        body = json.dumps(event).encode()
        server = self.serve(self.next_answer(body), self.ACCEPTED)
        requests = self.wait_requests(server, 2, timeout=30)
        self.assertEqual(self.posted(requests[1])["event"], event)


def main():
    global RUNTIMES_DIR
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runtimes-dir", default=RUNTIMES_DIR)
    args, rest = parser.parse_known_args()
    RUNTIMES_DIR = os.path.abspath(args.runtimes_dir)
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()
