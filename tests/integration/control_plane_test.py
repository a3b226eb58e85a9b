"""Integration test of the Lambda control plane: a real nimbusd driven by
Debian's AWS CLI v2 (/usr/bin/aws) and curl --aws-sigv4, as a user would.

Run: python3 control_plane_test.py --nimbusd build/bin/nimbusd
"""

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nimbus_harness import (DEV_ACCOUNT, OTHER_ACCOUNT, Node, TempDir,  # noqa: E402
                            code_sha256, error_name, make_zip)

NIMBUSD = None
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:"


class ControlPlane(unittest.TestCase):
    """The tests run in name order and share one node."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.node = Node(NIMBUSD, cls.tmp.path)
        cls.node.start()
        cls.zip1 = make_zip({"app.py": "def handler(event, context):\n    return event\n"})
        cls.zip2 = make_zip({"app.py": "def handler(event, context):\n    return 2\n",
                             "lib/util.py": "X = 1\n"})
        cls.zip_path = os.path.join(cls.tmp.path, "f1.zip")
        with open(cls.zip_path, "wb") as f:
            f.write(cls.zip1)
        cls.zip2_path = os.path.join(cls.tmp.path, "f2.zip")
        with open(cls.zip2_path, "wb") as f:
            f.write(cls.zip2)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.node.stop()
        finally:
            cls.tmp.close()

    def aws(self, *args, **kw):
        return self.node.aws(*args, **kw)

    def create(self, name, *extra, zip_path=None):
        return self.aws("create-function", "--function-name", name, "--runtime", "python3.11",
                        "--role", ROLE, "--handler", "app.handler",
                        "--zip-file", "fileb://" + (zip_path or self.zip_path), *extra)

    def assert_error(self, result, name, fragment=None):
        rc, body, err = result
        self.assertNotEqual(rc, 0, "expected %s, got success %s" % (name, body))
        self.assertEqual(error_name(err), name, err)
        if fragment:
            self.assertIn(fragment, err)

    # -- create ---------------------------------------------------------------

    def test_01_create_returns_the_configuration(self):
        rc, cfg, err = self.create("f1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["FunctionName"], "f1")
        self.assertEqual(cfg["FunctionArn"], ARN + "f1")
        self.assertEqual(cfg["Runtime"], "python3.11")
        self.assertEqual(cfg["Role"], ROLE)
        self.assertEqual(cfg["Handler"], "app.handler")
        self.assertEqual(cfg["CodeSize"], len(self.zip1))
        self.assertEqual(cfg["CodeSha256"], code_sha256(self.zip1))
        self.assertEqual(cfg["Timeout"], 3)
        self.assertEqual(cfg["MemorySize"], 128)
        self.assertEqual(cfg["Version"], "$LATEST")
        self.assertEqual(cfg["State"], "Active")
        self.assertEqual(cfg["LastUpdateStatus"], "Successful")
        self.assertEqual(cfg["PackageType"], "Zip")
        self.assertEqual(cfg["Architectures"], ["x86_64"])
        self.assertEqual(cfg["EphemeralStorage"], {"Size": 512})
        self.assertRegex(cfg["LastModified"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")
        self.assertRegex(cfg["RevisionId"], r"^[0-9a-f-]{36}$")
        self.assertNotIn("Environment", cfg)

    def test_02_create_with_all_settings(self):
        rc, cfg, err = self.create(
            "f2", "--description", "second function", "--timeout", "60", "--memory-size", "1024",
            "--environment", "Variables={GREETING=hello,MODE=test}",
            "--ephemeral-storage", "Size=2048", "--architectures", "x86_64",
            zip_path=self.zip2_path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["Description"], "second function")
        self.assertEqual(cfg["Timeout"], 60)
        self.assertEqual(cfg["MemorySize"], 1024)
        self.assertEqual(cfg["Environment"], {"Variables": {"GREETING": "hello", "MODE": "test"}})
        self.assertEqual(cfg["EphemeralStorage"], {"Size": 2048})
        self.assertEqual(cfg["CodeSha256"], code_sha256(self.zip2))

    def test_03_create_errors(self):
        self.assert_error(self.create("f1"), "ResourceConflictException", "Function already exist: f1")
        # The CLI checks the central directory itself; an archive whose local
        # header disagrees with it passes the CLI and must fail on the server.
        broken = bytearray(make_zip({"app.py": "x = 1\n"}))
        self.assertEqual(broken[30:36], b"app.py")
        broken[30:36] = b"evil.p"
        bad = os.path.join(self.tmp.path, "bad.zip")
        with open(bad, "wb") as f:
            f.write(bytes(broken))
        self.assert_error(self.create("bad1", zip_path=bad), "InvalidParameterValueException",
                          "Could not unzip uploaded file")
        # Bytes that are not a zip at all, sent around the CLI's own check.
        body = json.dumps({"FunctionName": "bad2", "Runtime": "python3.11", "Role": ROLE,
                           "Handler": "app.handler",
                           "Code": {"ZipFile": base64.b64encode(b"not a zip").decode()}})
        p = subprocess.run(["curl", "-s", "-i", "--aws-sigv4", "aws:amz:us-east-1:lambda",
                            "--user", "%s:%s" % (DEV_ACCOUNT["access_key_id"], DEV_ACCOUNT["secret_access_key"]),
                            "-H", "Content-Type: application/json", "--data-binary", body,
                            self.node.endpoint + "/2015-03-31/functions"],
                           capture_output=True, text=True, timeout=30)
        self.assertIn("HTTP/1.1 400", p.stdout)
        self.assertIn("x-amzn-ErrorType: InvalidParameterValueException", p.stdout)
        self.assertIn("Could not unzip uploaded file", p.stdout)
        # A body that is not JSON.
        p = subprocess.run(["curl", "-s", "-i", "--aws-sigv4", "aws:amz:us-east-1:lambda",
                            "--user", "%s:%s" % (DEV_ACCOUNT["access_key_id"], DEV_ACCOUNT["secret_access_key"]),
                            "--data-binary", "{not json", self.node.endpoint + "/2015-03-31/functions"],
                           capture_output=True, text=True, timeout=30)
        self.assertIn("HTTP/1.1 400", p.stdout)
        self.assertIn("x-amzn-ErrorType: InvalidRequestContentException", p.stdout)
        for i, evil in enumerate([make_zip({"../evil.py": "x"}),
                                  make_zip({"/etc/evil.py": "x"}),
                                  make_zip({"app.py": "x"}, symlinks={"link": "../../etc/passwd"}),
                                  make_zip({"app.py": "x"}, symlinks={"link": "/etc/passwd"})]):
            path = os.path.join(self.tmp.path, "evil%d.zip" % i)
            with open(path, "wb") as f:
                f.write(evil)
            self.assert_error(self.create("evil%d" % i, zip_path=path),
                              "InvalidParameterValueException", "Invalid zip file")
        self.assert_error(self.create("t1", "--timeout", "901"), "InvalidParameterValueException",
                          "timeout")
        self.assert_error(self.create("e1", "--environment", "Variables={AWS_REGION=x}"),
                          "InvalidParameterValueException", "reserved keys")
        self.assert_error(self.create("r1", "--architectures", "arm64"),
                          "InvalidParameterValueException", "arm64")
        rc, _, err = self.aws("create-function", "--function-name", "j1", "--runtime", "java99",
                              "--role", ROLE, "--handler", "a.b", "--zip-file", "fileb://" + self.zip_path)
        self.assert_error((rc, None, err), "InvalidParameterValueException", "java99")
        # Nothing half-created is visible afterwards.
        rc, listing, err = self.aws("list-functions")
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(f["FunctionName"] for f in listing["Functions"]), ["f1", "f2"])

    # -- read -----------------------------------------------------------------

    def test_04_get_function_and_download_the_code(self):
        rc, res, err = self.aws("get-function", "--function-name", "f1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(res["Configuration"]["FunctionName"], "f1")
        self.assertEqual(res["Configuration"]["CodeSha256"], code_sha256(self.zip1))
        self.assertEqual(res["Code"]["RepositoryType"], "S3")
        # Every fetch is a new connection, and the node hands connections to
        # its io threads (each with a frontend of its own) in turn: the link
        # is good on all of them.
        for _ in range(3):
            with urllib.request.urlopen(res["Code"]["Location"], timeout=10) as r:
                self.assertEqual(r.read(), self.zip1)
        tampered = res["Code"]["Location"].replace("Signature=", "Signature=0")
        with self.assertRaises(urllib.error.HTTPError) as ctx:
            urllib.request.urlopen(tampered, timeout=10)
        self.assertEqual(ctx.exception.code, 403)
        # An expiry too large for 64 bits is refused like any bad link (it
        # was a 500).
        for expires in ("9999999999999999999", "99999999999999999999", "12a", ""):
            forged = re.sub(r"Expires=[^&]*", "Expires=" + expires, res["Code"]["Location"])
            with self.assertRaises(urllib.error.HTTPError) as ctx:
                urllib.request.urlopen(forged, timeout=10)
            self.assertEqual(ctx.exception.code, 403, expires)
            self.assertIn(b"The code link is invalid or has expired", ctx.exception.read())

    def test_05_every_name_form_resolves(self):
        for name in ["f1", "f1:$LATEST", "123456789012:function:f1", ARN + "f1", ARN + "f1:$LATEST"]:
            rc, cfg, err = self.aws("get-function-configuration", "--function-name", name)
            self.assertEqual(rc, 0, "%s: %s" % (name, err))
            self.assertEqual(cfg["FunctionArn"], ARN + "f1")
        rc, cfg, err = self.aws("get-function-configuration", "--function-name", "f1",
                                "--qualifier", "$LATEST")
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["Version"], "$LATEST")

    def test_06_unknown_function(self):
        self.assert_error(self.aws("get-function", "--function-name", "nope"),
                          "ResourceNotFoundException", "Function not found: " + ARN + "nope")
        self.assert_error(self.aws("get-function-configuration", "--function-name", "f1:7"),
                          "ResourceNotFoundException")

    def test_07_list_functions_paginates(self):
        rc, res, err = self.aws("list-functions")
        self.assertEqual(rc, 0, err)
        self.assertEqual([f["FunctionName"] for f in res["Functions"]], ["f1", "f2"])
        self.assertNotIn("NextMarker", res)
        # --page-size makes the CLI send MaxItems=1 and follow NextMarker itself.
        rc, res, err = self.aws("list-functions", "--page-size", "1")
        self.assertEqual(rc, 0, err)
        self.assertEqual([f["FunctionName"] for f in res["Functions"]], ["f1", "f2"])
        rc, res, err = self.aws("list-functions", "--max-items", "1")
        self.assertEqual(rc, 0, err)
        self.assertEqual([f["FunctionName"] for f in res["Functions"]], ["f1"])
        self.assertIn("NextToken", res)
        rc, res, err = self.aws("list-functions", "--max-items", "1", "--starting-token", res["NextToken"])
        self.assertEqual(rc, 0, err)
        self.assertEqual([f["FunctionName"] for f in res["Functions"]], ["f2"])

    def test_08_accounts_are_isolated(self):
        rc, res, err = self.aws("list-functions", account=OTHER_ACCOUNT)
        self.assertEqual(rc, 0, err)
        self.assertEqual(res["Functions"], [])
        self.assert_error(self.aws("get-function", "--function-name", "f1", account=OTHER_ACCOUNT),
                          "ResourceNotFoundException")
        self.assert_error(self.aws("get-function", "--function-name", ARN + "f1", account=OTHER_ACCOUNT),
                          "ResourceNotFoundException")
        self.assert_error(self.aws("delete-function", "--function-name", ARN + "f1", account=OTHER_ACCOUNT),
                          "ResourceNotFoundException")
        # The other account may use the same name.
        rc, cfg, err = self.node.aws("create-function", "--function-name", "f1", "--runtime", "nodejs20.x",
                                     "--role", "arn:aws:iam::210987654321:role/r", "--handler", "index.handler",
                                     "--zip-file", "fileb://" + self.zip_path, account=OTHER_ACCOUNT)
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["FunctionArn"], "arn:aws:lambda:us-east-1:210987654321:function:f1")
        rc, cfg, err = self.aws("get-function-configuration", "--function-name", "f1")
        self.assertEqual(cfg["Runtime"], "python3.11")

    def test_09_authentication_failures(self):
        self.assert_error(self.aws("list-functions", secret="wrong-secret-key-000000"),
                          "InvalidSignatureException")
        unknown = dict(DEV_ACCOUNT, access_key_id="AKIAUNKNOWNKEY000000")
        self.assert_error(self.aws("list-functions", account=unknown), "UnrecognizedClientException")
        req = urllib.request.Request(self.node.endpoint + "/2015-03-31/functions/")
        with self.assertRaises(urllib.error.HTTPError) as ctx:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(ctx.exception.code, 403)
        self.assertEqual(ctx.exception.headers["x-amzn-ErrorType"], "MissingAuthenticationTokenException")
        self.assertTrue(ctx.exception.headers["x-amzn-RequestId"])

    def test_10_curl_sigv4_signs_the_single_encoded_path(self):
        url = self.node.endpoint + "/2015-03-31/functions/f1%3A%24LATEST/configuration"
        p = subprocess.run(["curl", "-s", "-i", "--aws-sigv4", "aws:amz:us-east-1:lambda",
                            "--user", "%s:%s" % (DEV_ACCOUNT["access_key_id"], DEV_ACCOUNT["secret_access_key"]),
                            url], capture_output=True, text=True, timeout=30)
        self.assertIn("HTTP/1.1 200", p.stdout, p.stdout)
        self.assertRegex(p.stdout, r"(?i)x-amzn-RequestId: [0-9a-f-]{36}")
        # text mode turns CRLF into LF.
        body = json.loads(p.stdout.split("\n\n", 1)[1])
        self.assertEqual(body["FunctionName"], "f1")

    def test_11_oversized_body_is_rejected_before_it_is_read(self):
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
            s.sendall(b"POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 90000000\r\n\r\n")
            start = time.time()
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertLess(time.time() - start, 5)
        self.assertTrue(data.startswith(b"HTTP/1.1 413"), data[:200])
        self.assertIn(b"RequestEntityTooLargeException", data)

    # -- update ---------------------------------------------------------------

    def test_12_update_function_code(self):
        _, before, _ = self.aws("get-function-configuration", "--function-name", "f1")
        rc, cfg, err = self.aws("update-function-code", "--function-name", "f1",
                                "--zip-file", "fileb://" + self.zip2_path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["CodeSha256"], code_sha256(self.zip2))
        self.assertEqual(cfg["CodeSize"], len(self.zip2))
        self.assertNotEqual(cfg["RevisionId"], before["RevisionId"])
        rc, res, err = self.aws("get-function", "--function-name", "f1")
        with urllib.request.urlopen(res["Code"]["Location"], timeout=10) as r:
            self.assertEqual(r.read(), self.zip2)
        self.assert_error(self.aws("update-function-code", "--function-name", "nope",
                                   "--zip-file", "fileb://" + self.zip2_path), "ResourceNotFoundException")

    def test_13_update_function_configuration(self):
        _, before, _ = self.aws("get-function-configuration", "--function-name", "f1")
        rc, cfg, err = self.aws("update-function-configuration", "--function-name", "f1",
                                "--timeout", "30", "--memory-size", "512", "--description", "updated",
                                "--environment", "Variables={K1=v1}", "--handler", "app.other")
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["Timeout"], 30)
        self.assertEqual(cfg["MemorySize"], 512)
        self.assertEqual(cfg["Description"], "updated")
        self.assertEqual(cfg["Handler"], "app.other")
        self.assertEqual(cfg["Environment"], {"Variables": {"K1": "v1"}})
        self.assertEqual(cfg["CodeSha256"], before["CodeSha256"])
        self.assert_error(self.aws("update-function-configuration", "--function-name", "f1",
                                   "--timeout", "5", "--revision-id", before["RevisionId"]),
                          "PreconditionFailedException")
        rc, cfg2, err = self.aws("update-function-configuration", "--function-name", "f1",
                                 "--timeout", "5", "--revision-id", cfg["RevisionId"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg2["Timeout"], 5)
        self.assert_error(self.aws("update-function-configuration", "--function-name", "f1",
                                   "--memory-size", "20000"), "InvalidParameterValueException", "memorySize")

    # -- persistence ----------------------------------------------------------

    def test_14_functions_survive_a_restart(self):
        _, before, _ = self.aws("get-function-configuration", "--function-name", "f1")
        self.assertEqual(self.node.stop(), 0)
        self.node.start()
        rc, after, err = self.aws("get-function-configuration", "--function-name", "f1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(after, before)
        rc, res, err = self.aws("get-function", "--function-name", "f1")
        with urllib.request.urlopen(res["Code"]["Location"], timeout=10) as r:
            self.assertEqual(r.read(), self.zip2)
        rc, res, err = self.aws("list-functions")
        self.assertEqual([f["FunctionName"] for f in res["Functions"]], ["f1", "f2"])

    def test_15_account_settings(self):
        rc, res, err = self.aws("get-account-settings")
        self.assertEqual(rc, 0, err)
        self.assertEqual(res["AccountUsage"]["FunctionCount"], 2)
        self.assertEqual(res["AccountUsage"]["TotalCodeSize"], 2 * len(self.zip2))
        self.assertEqual(res["AccountLimit"]["ConcurrentExecutions"], 1000)
        self.assertEqual(res["AccountLimit"]["CodeSizeZipped"], 52428800)

    # -- delete ---------------------------------------------------------------

    def test_16_delete_function(self):
        rc, body, err = self.aws("delete-function", "--function-name", "f2")
        self.assertEqual(rc, 0, err)
        self.assertIsNone(body)
        self.assert_error(self.aws("get-function", "--function-name", "f2"), "ResourceNotFoundException")
        self.assert_error(self.aws("delete-function", "--function-name", "f2"), "ResourceNotFoundException")
        rc, res, err = self.aws("list-functions")
        self.assertEqual([f["FunctionName"] for f in res["Functions"]], ["f1"])
        # Still deleted after a restart; f1 still there.
        self.assertEqual(self.node.stop(), 0)
        self.node.start()
        rc, res, err = self.aws("list-functions")
        self.assertEqual([f["FunctionName"] for f in res["Functions"]], ["f1"])

    def test_17_metrics_and_health(self):
        with urllib.request.urlopen(self.node.endpoint + "/health", timeout=10) as r:
            self.assertEqual(json.loads(r.read())["status"], "ok")
            self.assertTrue(r.headers["x-amzn-RequestId"])
        with urllib.request.urlopen(self.node.endpoint + "/metrics", timeout=10) as r:
            text = r.read().decode()
        self.assertRegex(text, r'nimbus_api_requests_total\{operation="ListFunctions",status="200"\} [1-9]')
        self.assertIn("nimbus_api_request_duration_seconds_bucket", text)


QUEUE = "arn:aws:sqs:us-east-1:123456789012:"


class EventInvokeConfig(unittest.TestCase):
    """Put/Update/Get/Delete/ListFunctionEventInvokeConfig(s) and DeadLetterConfig
    through the AWS CLI. The tests run in name order and share one node."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.node = Node(NIMBUSD, cls.tmp.path)
        cls.node.start()
        cls.zip_path = os.path.join(cls.tmp.path, "fn.zip")
        with open(cls.zip_path, "wb") as f:
            f.write(make_zip({"app.py": "def handler(event, context):\n    return event\n"}))

    @classmethod
    def tearDownClass(cls):
        try:
            cls.node.stop()
        finally:
            cls.tmp.close()

    def aws(self, *args, **kw):
        return self.node.aws(*args, **kw)

    def ok(self, *args, **kw):
        rc, body, err = self.aws(*args, **kw)
        self.assertEqual(rc, 0, err)
        return body

    def create(self, name, *extra):
        return self.aws("create-function", "--function-name", name, "--runtime", "python3.11",
                        "--role", ROLE, "--handler", "app.handler",
                        "--zip-file", "fileb://" + self.zip_path, *extra)

    def assert_error(self, result, name, fragment=None):
        rc, body, err = result
        self.assertNotEqual(rc, 0, "expected %s, got success %s" % (name, body))
        self.assertEqual(error_name(err), name, err)
        if fragment:
            self.assertIn(fragment, err)

    def assert_recent(self, last_modified):
        # The wire has epoch seconds with a fraction; the CLI prints them as
        # an ISO 8601 time.
        self.assertRegex(last_modified, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")

    def test_01_put_and_get(self):
        for name in ("ev", "sink"):
            rc, _, err = self.create(name)
            self.assertEqual(rc, 0, err)
        self.assert_error(self.aws("get-function-event-invoke-config", "--function-name", "ev"),
                          "ResourceNotFoundException",
                          "The function " + ARN + "ev:$LATEST doesn't have an EventInvokeConfig")
        listing = self.ok("list-function-event-invoke-configs", "--function-name", "ev")
        self.assertEqual(listing["FunctionEventInvokeConfigs"], [])
        before = self.ok("get-function-configuration", "--function-name", "ev")
        put = self.ok("put-function-event-invoke-config", "--function-name", "ev",
                      "--maximum-retry-attempts", "1",
                      "--destination-config", "OnFailure={Destination=%sfailures}" % QUEUE)
        self.assertEqual(put["FunctionArn"], ARN + "ev:$LATEST")
        self.assertEqual(put["MaximumRetryAttempts"], 1)
        self.assertNotIn("MaximumEventAgeInSeconds", put)
        self.assertEqual(put["DestinationConfig"],
                         {"OnSuccess": {}, "OnFailure": {"Destination": QUEUE + "failures"}})
        self.assert_recent(put["LastModified"])
        for name in ("ev", ARN + "ev", "ev:$LATEST"):
            got = self.ok("get-function-event-invoke-config", "--function-name", name)
            self.assertEqual(got, put)
        got = self.ok("get-function-event-invoke-config", "--function-name", "ev",
                      "--qualifier", "$LATEST")
        self.assertEqual(got, put)
        # An event invoke config is not a new revision of the function.
        after = self.ok("get-function-configuration", "--function-name", "ev")
        self.assertEqual(after["RevisionId"], before["RevisionId"])
        self.assertEqual(after["LastModified"], before["LastModified"])

    def test_02_wire_format_of_last_modified(self):
        p = subprocess.run(["curl", "-s", "-i", "--aws-sigv4", "aws:amz:us-east-1:lambda",
                            "--user", "%s:%s" % (DEV_ACCOUNT["access_key_id"], DEV_ACCOUNT["secret_access_key"]),
                            self.node.endpoint + "/2019-09-25/functions/ev/event-invoke-config"],
                           capture_output=True, text=True, timeout=30)
        self.assertIn("HTTP/1.1 200", p.stdout)
        body = json.loads(p.stdout.split("\n\n", 1)[1])
        self.assertIsInstance(body["LastModified"], float)
        self.assertLess(abs(body["LastModified"] - time.time()), 600)
        self.assertRegex(p.stdout, r'"LastModified":\d{10}\.\d{3},')

    def test_03_update_merges(self):
        upd = self.ok("update-function-event-invoke-config", "--function-name", "ev",
                      "--maximum-event-age-in-seconds", "300",
                      "--destination-config", '{"OnSuccess":{"Destination":"%ssink"}}' % ARN)
        self.assertEqual(upd["MaximumRetryAttempts"], 1)
        self.assertEqual(upd["MaximumEventAgeInSeconds"], 300)
        self.assertEqual(upd["DestinationConfig"],
                         {"OnSuccess": {"Destination": ARN + "sink"},
                          "OnFailure": {"Destination": QUEUE + "failures"}})
        got = self.ok("get-function-event-invoke-config", "--function-name", "ev")
        self.assertEqual(got, upd)

    def test_04_list(self):
        got = self.ok("get-function-event-invoke-config", "--function-name", "ev")
        listing = self.ok("list-function-event-invoke-configs", "--function-name", "ev")
        self.assertEqual(listing["FunctionEventInvokeConfigs"], [got])
        self.assertNotIn("NextMarker", listing)
        listing = self.ok("list-function-event-invoke-configs", "--function-name", "ev",
                          "--max-items", "1")
        self.assertEqual(listing["FunctionEventInvokeConfigs"], [got])
        self.assertNotIn("NextToken", listing)

    def test_05_put_overwrites_and_removes_omitted_settings(self):
        put = self.ok("put-function-event-invoke-config", "--function-name", "ev",
                      "--maximum-event-age-in-seconds", "60")
        self.assertEqual(put["MaximumEventAgeInSeconds"], 60)
        self.assertNotIn("MaximumRetryAttempts", put)
        self.assertEqual(put["DestinationConfig"], {"OnSuccess": {}, "OnFailure": {}})
        self.assertEqual(self.ok("get-function-event-invoke-config", "--function-name", "ev"), put)

    def test_06_errors(self):
        put = ("put-function-event-invoke-config", "--function-name")
        self.assert_error(self.aws(*put, "ev", "--maximum-retry-attempts", "5"),
                          "InvalidParameterValueException",
                          "Value '5' at 'maximumRetryAttempts' failed to satisfy constraint")
        self.assert_error(self.aws(*put, "ev", "--maximum-event-age-in-seconds", "30000"),
                          "InvalidParameterValueException", "maximumEventAgeInSeconds")
        self.assert_error(self.aws(*put, "ev"), "InvalidParameterValueException",
                          "You must specify at least one of error handling or destination setting")
        for bad in ("arn:aws:sns:us-east-1:123456789012:topic", "not-an-arn",
                    ARN + "sink:7", QUEUE + "bad.name"):
            self.assert_error(self.aws(*put, "ev", "--destination-config",
                                       "OnSuccess={Destination=%s}" % bad),
                              "InvalidParameterValueException",
                              "The destination ARN %s is invalid" % bad)
        # Another account's queue, a missing function, the function itself.
        self.assert_error(self.aws(*put, "ev", "--destination-config",
                                   "OnFailure={Destination=arn:aws:sqs:us-east-1:210987654321:q}"),
                          "InvalidParameterValueException", "own account")
        self.assert_error(self.aws(*put, "ev", "--destination-config",
                                   "OnFailure={Destination=%snope}" % ARN),
                          "InvalidParameterValueException",
                          "The destination ARN %snope is invalid." % ARN)
        self.assert_error(self.aws(*put, "ev", "--destination-config",
                                   "OnFailure={Destination=%sev}" % ARN),
                          "InvalidParameterValueException", "destination for itself")
        # Unknown functions and qualifiers.
        self.assert_error(self.aws(*put, "nope", "--maximum-retry-attempts", "1"),
                          "ResourceNotFoundException", "The function doesn't exist.")
        self.assert_error(self.aws("update-function-event-invoke-config", "--function-name", "nope",
                                   "--maximum-retry-attempts", "1"),
                          "ResourceNotFoundException")
        self.assert_error(self.aws("get-function-event-invoke-config", "--function-name", "nope"),
                          "ResourceNotFoundException",
                          "The function " + ARN + "nope:$LATEST doesn't have an EventInvokeConfig")
        self.assert_error(self.aws("list-function-event-invoke-configs", "--function-name", "nope"),
                          "ResourceNotFoundException")
        self.assert_error(self.aws("delete-function-event-invoke-config", "--function-name", "nope"),
                          "ResourceNotFoundException")
        self.assert_error(self.aws(*put, "ev", "--qualifier", "1", "--maximum-retry-attempts", "1"),
                          "ResourceNotFoundException")
        self.assert_error(self.aws("get-function-event-invoke-config", "--function-name", "ev",
                                   "--qualifier", "prod"),
                          "ResourceNotFoundException", ARN + "ev:prod doesn't have")
        self.assert_error(self.aws("get-function-event-invoke-config", "--function-name", "ev",
                                   account=OTHER_ACCOUNT),
                          "ResourceNotFoundException")
        # Update needs an existing config.
        self.assert_error(self.aws("update-function-event-invoke-config", "--function-name", "sink",
                                   "--maximum-retry-attempts", "1"),
                          "ResourceNotFoundException",
                          "The function " + ARN + "sink:$LATEST doesn't have an EventInvokeConfig")
        # Nothing of it was stored.
        got = self.ok("get-function-event-invoke-config", "--function-name", "ev")
        self.assertEqual(got["MaximumEventAgeInSeconds"], 60)
        self.assertNotIn("MaximumRetryAttempts", got)

    def test_07_dead_letter_config(self):
        rc, cfg, err = self.create("dl", "--dead-letter-config", "TargetArn=%sdlq" % QUEUE)
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["DeadLetterConfig"], {"TargetArn": QUEUE + "dlq"})
        got = self.ok("get-function-configuration", "--function-name", "dl")
        self.assertEqual(got["DeadLetterConfig"], {"TargetArn": QUEUE + "dlq"})
        self.assertNotIn("DeadLetterConfig", self.ok("get-function-configuration", "--function-name", "ev"))
        upd = self.ok("update-function-configuration", "--function-name", "dl",
                      "--dead-letter-config", "TargetArn=%sdlq2" % QUEUE)
        self.assertEqual(upd["DeadLetterConfig"], {"TargetArn": QUEUE + "dlq2"})
        self.assertNotEqual(upd["RevisionId"], got["RevisionId"])
        fn = self.ok("get-function", "--function-name", "dl")
        self.assertEqual(fn["Configuration"]["DeadLetterConfig"], {"TargetArn": QUEUE + "dlq2"})
        # Another change leaves it alone.
        upd = self.ok("update-function-configuration", "--function-name", "dl", "--timeout", "9")
        self.assertEqual(upd["DeadLetterConfig"], {"TargetArn": QUEUE + "dlq2"})
        for bad, fragment in (("arn:aws:sns:us-east-1:123456789012:topic", "SNS topics are not supported"),
                              (ARN + "sink", "is invalid"),
                              ("arn:aws:sqs:us-east-1:210987654321:dlq", "own account")):
            self.assert_error(self.aws("update-function-configuration", "--function-name", "dl",
                                       "--dead-letter-config", "TargetArn=" + bad),
                              "InvalidParameterValueException", fragment)
            self.assert_error(self.create("dl-bad", "--dead-letter-config", "TargetArn=" + bad),
                              "InvalidParameterValueException", fragment)
        self.assert_error(self.aws("get-function", "--function-name", "dl-bad"),
                          "ResourceNotFoundException")
        self.assertEqual(self.ok("get-function-configuration", "--function-name", "dl")["DeadLetterConfig"],
                         {"TargetArn": QUEUE + "dlq2"})

    def test_08_everything_survives_a_restart(self):
        config = self.ok("get-function-event-invoke-config", "--function-name", "ev")
        dl = self.ok("get-function-configuration", "--function-name", "dl")
        self.assertEqual(self.node.stop(), 0)
        self.node.start()
        self.assertEqual(self.ok("get-function-event-invoke-config", "--function-name", "ev"), config)
        self.assertEqual(self.ok("get-function-configuration", "--function-name", "dl"), dl)

    def test_09_delete(self):
        rc, body, err = self.aws("delete-function-event-invoke-config", "--function-name", "ev")
        self.assertEqual(rc, 0, err)
        self.assertIsNone(body)
        self.assert_error(self.aws("get-function-event-invoke-config", "--function-name", "ev"),
                          "ResourceNotFoundException", "doesn't have an EventInvokeConfig")
        self.assertEqual(self.ok("list-function-event-invoke-configs", "--function-name", "ev"),
                         {"FunctionEventInvokeConfigs": []})
        self.assert_error(self.aws("delete-function-event-invoke-config", "--function-name", "ev"),
                          "ResourceNotFoundException")
        # The dead-letter target goes away with an empty TargetArn.
        upd = self.ok("update-function-configuration", "--function-name", "dl",
                      "--dead-letter-config", "TargetArn=")
        self.assertNotIn("DeadLetterConfig", upd)
        self.assertNotIn("DeadLetterConfig",
                         self.ok("get-function-configuration", "--function-name", "dl"))


class Config(unittest.TestCase):
    def test_bad_config_exits_non_zero_naming_the_key(self):
        tmp = TempDir()
        try:
            path = os.path.join(tmp.path, "bad.toml")
            with open(path, "w") as f:
                f.write('[api]\nlisten = "127.0.0.1:0"\nlisten_typo = 1\n')
            p = subprocess.run([NIMBUSD, "--config", path], capture_output=True, text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("api.listen_typo: unknown key", p.stderr)
            self.assertIn("accounts", p.stderr)
            self.assertNotIn("terminate called", p.stderr)
            p = subprocess.run([NIMBUSD, "--config", os.path.join(tmp.path, "missing.toml")],
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("missing.toml", p.stderr)
        finally:
            tmp.close()

    def test_second_node_on_the_same_data_dir_is_refused(self):
        tmp = TempDir()
        first = Node(NIMBUSD, tmp.path)
        try:
            first.start()
            p = subprocess.run([NIMBUSD, "--config", first.config_path], capture_output=True,
                               text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("in use by another nimbusd", p.stderr)
        finally:
            first.stop()
            tmp.close()

    def test_open_files_soft_limit_is_raised_to_the_hard_limit(self):
        # About ten descriptors per environment: a soft limit of 1024, common
        # in shells, would cap the node near 100 environments.
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard <= 256:
            self.skipTest("hard open files limit %d leaves nothing to raise" % hard)
        tmp = TempDir()
        node = Node(NIMBUSD, tmp.path)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
            try:
                node.start()
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            with open("/proc/%d/limits" % node.proc.pid) as f:
                line = [l for l in f if l.startswith("Max open files")][0]
            self.assertEqual(line.split()[3:5], [str(hard), str(hard)], line)
            self.assertRegex(node.read_log(), r"open files limit %d \(about \d+ environments\)" % hard)
        finally:
            node.stop()
            tmp.close()

    def test_second_node_with_the_same_name_is_refused(self):
        # One nimbusd per node name and host: the name owns the cgroups
        # under nimbus-<name>, and a second node would remove the first
        # one's new (still empty) groups as leftovers.
        tmp = TempDir()
        os.makedirs(os.path.join(tmp.path, "a"))
        os.makedirs(os.path.join(tmp.path, "b"))
        first = Node(NIMBUSD, os.path.join(tmp.path, "a"))
        second = Node(NIMBUSD, os.path.join(tmp.path, "b"), name=first.name)
        try:
            first.start()
            with self.assertRaises(RuntimeError) as refused:
                second.start(timeout=15)
            self.assertIn("node name %s is in use by another nimbusd" % first.name,
                          str(refused.exception))
            # The first node is unharmed.
            rc, res, err = first.aws("list-functions")
            self.assertEqual(rc, 0, err)
            self.assertEqual(res["Functions"], [])
        finally:
            first.stop()
            tmp.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nimbusd", required=True)
    args, rest = parser.parse_known_args()
    NIMBUSD = os.path.abspath(args.nimbusd)
    if not os.path.exists("/usr/bin/aws"):
        sys.exit("integration tests need Debian's AWS CLI v2 at /usr/bin/aws (apt-get install awscli)")
    unittest.main(argv=[sys.argv[0], "-v"] + rest)
