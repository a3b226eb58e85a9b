"""Nimbus Python runtime: the client side of the AWS Lambda Runtime API.

Started inside the sandbox as ``/usr/bin/python3 /var/runtime/python/bootstrap.py``.
Standard library only; works on Python 3.9 and later.

Protocol (http://$AWS_LAMBDA_RUNTIME_API/2018-06-01):

  init:  import the handler named by $_HANDLER ("module.function", where module
         may be "pkg.mod" or "sub/dir/mod") from $LAMBDA_TASK_ROOT.  On failure
         POST /runtime/init/error and exit with status 1.
  loop:  GET  /runtime/invocation/next            blocks until there is an event;
                                                   headers carry the request id,
                                                   deadline, ARN, trace id, ...
         call handler(event, context)
         POST /runtime/invocation/{id}/response   body = json.dumps(result)
           or /runtime/invocation/{id}/error      header Lambda-Runtime-Function-Error-Type,
                                                   body {"errorMessage", "errorType", "stackTrace"}

A non-200 answer to /next (e.g. 410 when the sandbox is shutting down), a 5xx
answer to a POST, or a lost connection is unrecoverable: the runtime exits
non-zero and the platform recycles the sandbox.  Handler output goes to the
process's stdout/stderr untouched (made unbuffered, as in AWS); the runtime
itself writes only error reports, to stderr.
"""

import decimal
import http.client
import importlib
import json
import logging
import os
import re
import socket
import sys
import time
import traceback
import urllib.parse

RUNTIME_API_PREFIX = "/2018-06-01/runtime"
USER_AGENT = "nimbus-python-runtime/1.0 (python/%d.%d.%d)" % sys.version_info[:3]
BOOTSTRAP_FILE = os.path.abspath(__file__)

# The request id of the invocation in progress, for log records.
_current_request_id = ""


# --------------------------------------------------------------------------- errors


class FaultError(Exception):
    """A runtime-detected failure with a Lambda error type (Runtime.*)."""

    def __init__(self, error_type, message, stack_trace=None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace or []


def error_body(error_type, message, stack_trace):
    return {"errorMessage": message or "", "errorType": error_type or "", "stackTrace": stack_trace or []}


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + os.sep


def _is_runtime_frame(filename):
    return (filename == BOOTSTRAP_FILE or filename.startswith(_IMPORTLIB_DIR)
            or filename.startswith("<frozen importlib"))


def error_from_exception(exc_info):
    """Error body for an exception raised by user code, without the runtime's (or importlib's) frames."""
    etype, value, tb = exc_info
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    while frames and _is_runtime_frame(frames[0][0]):
        frames.pop(0)
    return error_body(etype.__name__, str(value), traceback.format_list(frames))


def log_error(body):
    """Print an error report the way AWS's Python runtime does: '[ERROR] Type: message' + traceback."""
    line = "[ERROR]"
    if body["errorType"]:
        line += " " + body["errorType"] + (":" if body["errorMessage"] else "")
    if body["errorMessage"]:
        line += " " + body["errorMessage"]
    lines = [line, "Traceback (most recent call last):"]
    for element in body["stackTrace"]:
        lines.extend(element.splitlines() or [""])
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def header_safe(value):
    """HTTP header values must be printable ASCII; percent-encode anything else."""
    return re.sub(r"[^\x20-\x7e]", lambda m: urllib.parse.quote(m.group()), value)


def fatal(message):
    sys.stderr.write("nimbus python runtime: %s\n" % message)
    sys.stderr.flush()
    sys.exit(1)


# --------------------------------------------------------------------------- Runtime API client


class _Connection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        try:  # small requests must not wait for delayed ACKs (curl and Node do the same)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class RuntimeApiClient:
    """Keep-alive HTTP client for the Runtime API. Never sets a socket timeout."""

    def __init__(self, address):
        self._address = address
        self._conn = None

    def _request(self, method, path, body=None, headers=None):
        hdrs = {"User-Agent": USER_AGENT}
        hdrs.update(headers or {})
        for attempt in range(2):
            reused = self._conn is not None
            if not reused:
                # timeout=None explicitly: socket.setdefaulttimeout() in user code must not apply.
                self._conn = _Connection(self._address, timeout=None)
            try:
                self._conn.request(method, path, body=body, headers=hdrs)
                resp = self._conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the server closed while idle: retry once on a new one.
                self._conn.close()
                self._conn = None
                if reused and attempt == 0:
                    continue
                raise
            if resp.will_close:
                self._conn.close()
                self._conn = None
            return resp.status, resp.headers, data
        raise AssertionError("unreachable")

    def next_invocation(self):
        try:
            status, headers, body = self._request("GET", RUNTIME_API_PREFIX + "/invocation/next")
        except (OSError, http.client.HTTPException) as e:
            fatal("GET /runtime/invocation/next failed: %s" % e)
        if status != 200:
            fatal("GET /runtime/invocation/next returned HTTP %d: %s" % (status, body[:500].decode("utf-8", "replace")))
        return headers, body

    def _post(self, path, payload, headers):
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers)
        try:
            status, _, body = self._request("POST", RUNTIME_API_PREFIX + path, payload, hdrs)
        except (OSError, http.client.HTTPException) as e:
            fatal("POST %s failed: %s" % (path, e))
        if status >= 500:
            fatal("POST %s returned HTTP %d: %s" % (path, status, body[:500].decode("utf-8", "replace")))
        if not 200 <= status < 300:
            # E.g. 413 (response too large) or 403 (already reported): the platform has
            # recorded the outcome; note it and carry on with the next invocation.
            sys.stderr.write("nimbus python runtime: POST %s returned HTTP %d: %s\n"
                             % (path, status, body[:500].decode("utf-8", "replace")))
            sys.stderr.flush()

    def post_response(self, request_id, payload):
        self._post("/invocation/%s/response" % urllib.parse.quote(request_id, safe=""), payload, {})

    def post_error(self, request_id, body):
        self._post("/invocation/%s/error" % urllib.parse.quote(request_id, safe=""),
                   json.dumps(body).encode("utf-8"),
                   {"Lambda-Runtime-Function-Error-Type": header_safe(body["errorType"])})

    def post_init_error(self, body):
        self._post("/init/error", json.dumps(body).encode("utf-8"),
                   {"Lambda-Runtime-Function-Error-Type": header_safe(body["errorType"])})


# --------------------------------------------------------------------------- context object


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]


class Client:
    __slots__ = ["installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"]


class ClientContext:
    __slots__ = ["custom", "env", "client"]


def make_obj(cls, values):
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, values.get(field) if isinstance(values, dict) else None)
    return obj


def parse_json_header(value):
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


class LambdaContext:
    """The context argument, attribute-compatible with AWS's (awslambdaric) LambdaContext.

    As in AWS, memory_limit_in_mb is the string value of AWS_LAMBDA_FUNCTION_MEMORY_SIZE.
    """

    def __init__(self, request_id, deadline_ms, invoked_function_arn, client_context, cognito_identity, tenant_id):
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id

        self.client_context = None
        if isinstance(client_context, dict):
            self.client_context = make_obj(ClientContext, client_context)
            self.client_context.client = (make_obj(Client, self.client_context.client)
                                          if self.client_context.client is not None else None)

        self.identity = make_obj(CognitoIdentity, {})
        if isinstance(cognito_identity, dict):
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")

        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self):
        return ("LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,function_name=%s,"
                "memory_limit_in_mb=%s,function_version=%s,invoked_function_arn=%s])"
                % (self.aws_request_id, self.log_group_name, self.log_stream_name, self.function_name,
                   self.memory_limit_in_mb, self.function_version, self.invoked_function_arn))


# --------------------------------------------------------------------------- handler loading


def load_handler(handler):
    """Import "module.function" from the task root; raise FaultError with AWS's error types."""
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultError("Runtime.MalformedHandlerName", "Bad handler '%s': %s" % (handler, e))
    if not modname or not fname:
        raise FaultError("Runtime.MalformedHandlerName", "Bad handler '%s'" % handler)
    if modname.split(".")[0] in sys.builtin_module_names:
        raise FaultError("Runtime.BuiltInModuleConflict", "Cannot use built-in module %s as a handler module" % modname)
    try:
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultError("Runtime.ImportModuleError", "Unable to import module '%s': %s" % (modname, e))
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultError("Runtime.UserCodeSyntaxError", "Syntax error in module '%s': %s" % (modname, e), trace)
    func = getattr(module, fname, None)
    if func is None:
        raise FaultError("Runtime.HandlerNotFound", "Handler '%s' missing on module '%s'" % (fname, modname))
    if not callable(func):
        raise FaultError("Runtime.HandlerNotFound", "Handler '%s' on module '%s' is not callable" % (fname, modname))
    return func


# --------------------------------------------------------------------------- serialisation


def _json_default(obj):
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    raise TypeError(repr(obj) + " is not JSON serializable")


def _escape_unicode():
    """AWS's python3.11 and older runtimes escape non-ASCII in responses; python3.12+ do not."""
    m = re.match(r"AWS_Lambda_python(\d+)\.(\d+)", os.environ.get("AWS_EXECUTION_ENV", ""))
    version = (int(m.group(1)), int(m.group(2))) if m else sys.version_info[:2]
    return version < (3, 12)


ENSURE_ASCII = _escape_unicode()


def to_json(result):
    return json.dumps(result, default=_json_default, ensure_ascii=ENSURE_ASCII).encode("utf-8")


# --------------------------------------------------------------------------- process set-up


class Unbuffered:
    """Flush after every write so output reaches the log even if the sandbox is killed (as AWS does)."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, attr):
        return getattr(self.stream, attr)

    def write(self, msg):
        n = self.stream.write(msg)
        self.stream.flush()
        return n

    def writelines(self, msgs):
        self.stream.writelines(msgs)
        self.stream.flush()


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _current_request_id
        return True


def setup_logging():
    """Root-logger handler in AWS's format: [LEVEL]\\t<UTC time>\\t<request id>\\t<message>."""
    formatter = logging.Formatter("[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
                                  "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    logging.getLogger().addHandler(handler)


def setup_import_path(task_root):
    """User code first on sys.path (then /opt layers); the runtime's own directory not at all."""
    here = os.path.dirname(BOOTSTRAP_FILE)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    layers = ["/opt/python/lib/python%d.%d/site-packages" % sys.version_info[:2], "/opt/python"]
    sys.path[0:0] = [task_root] + [p for p in layers if os.path.isdir(p)]


# --------------------------------------------------------------------------- main loop


def handle_invocation(client, handler, headers, body):
    global _current_request_id
    request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
    _current_request_id = request_id

    trace_id = headers.get("Lambda-Runtime-Trace-Id")
    if trace_id is not None:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)

    try:
        deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", "0"))
    except ValueError:
        deadline_ms = 0
    context = LambdaContext(request_id, deadline_ms,
                            headers.get("Lambda-Runtime-Invoked-Function-Arn"),
                            parse_json_header(headers.get("Lambda-Runtime-Client-Context")),
                            parse_json_header(headers.get("Lambda-Runtime-Cognito-Identity")),
                            headers.get("Lambda-Runtime-Aws-Tenant-Id"))

    try:
        try:
            event = json.loads(body)
        except ValueError as e:
            raise FaultError("Runtime.UnmarshalError", "Unable to unmarshal input: %s" % e)
        result = handler(event, context)
        try:
            payload = to_json(result)
        except (TypeError, ValueError) as e:
            raise FaultError("Runtime.MarshalError", "Unable to marshal response: %s" % e)
    except FaultError as e:
        error = error_body(e.error_type, e.message, e.stack_trace)
    except Exception:
        error = error_from_exception(sys.exc_info())
    else:
        client.post_response(request_id, payload)
        return
    log_error(error)
    client.post_error(request_id, error)


def main():
    sys.stdout = Unbuffered(sys.stdout)
    sys.stderr = Unbuffered(sys.stderr)

    api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not api:
        fatal("AWS_LAMBDA_RUNTIME_API is not set")
    client = RuntimeApiClient(api)

    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    setup_import_path(task_root)
    try:
        os.chdir(task_root)
    except OSError:
        pass
    setup_logging()

    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except FaultError as e:
        error = error_body(e.error_type, e.message, e.stack_trace)
    except Exception:  # an exception raised while importing the user's module
        error = error_from_exception(sys.exc_info())
    else:
        error = None
    if error is not None:
        log_error(error)
        client.post_init_error(error)
        sys.exit(1)

    while True:
        headers, body = client.next_invocation()
        handle_invocation(client, handler, headers, body)


if __name__ == "__main__":
    main()
