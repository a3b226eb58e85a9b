#!/usr/bin/env python3
"""Tests for Nimbus's Python and Node.js Lambda runtimes (runtimes/*/bootstrap*).

Each test writes handler code to a temporary task root, starts the fake Runtime
API server (fake_runtime_api.py) on 127.0.0.1, runs the bootstrap as a
subprocess with the Lambda environment pointing at it, queues events and checks
what the runtime POSTs back.

    python3 tests/runtimes/runtimes_test.py [--runtimes-dir DIR] [unittest args, e.g. -v]

--runtimes-dir (or $NIMBUS_RUNTIMES_DIR) defaults to <repo>/runtimes. The
interpreters are /usr/bin/python3 and /usr/bin/node unless $NIMBUS_TEST_PYTHON
or $NIMBUS_TEST_NODE say otherwise; the Node tests are skipped without node.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
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

    def restart_api(self, connection):
        """Stop any runtime and replace the fake API with one using the given connection mode."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.api.close()
        self.api = FakeRuntimeApi(connection=connection).start()

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


# ================================================================ Python


class PythonRuntimeTest(RuntimeTestCase):
    base_env = {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.11"}

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


# ================================================================ Node.js


@unittest.skipUnless(os.access(NODE, os.X_OK), "node not found at %s" % NODE)
class NodeRuntimeTest(RuntimeTestCase):

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


def main():
    global RUNTIMES_DIR
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runtimes-dir", default=RUNTIMES_DIR)
    args, rest = parser.parse_known_args()
    RUNTIMES_DIR = os.path.abspath(args.runtimes_dir)
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()
