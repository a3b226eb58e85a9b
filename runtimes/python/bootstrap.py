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

# A small HTTP/1.1 client of our own rather than http.client, which runs every answer's headers
# through email.parser and alone cost more CPU than the rest of a no-op invocation. It speaks just
# what the Runtime API needs: one request at a time on one kept-alive connection; answers framed
# by Content-Length, or, for robustness, chunked or ending at close.

_RECV_SIZE = 65536
_MAX_HEAD = 1 << 20  # status line and headers; AWS caps even the client context header at 3.5 KB
# Characters urllib.parse.quote(safe="") leaves alone: request ids (UUIDs) need no quoting.
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"


class HttpError(Exception):
    """A malformed or truncated answer from the Runtime API."""


class Headers(dict):
    """Answer headers by lower-cased name; get() takes any case, as http.client's HTTPMessage did."""

    __slots__ = ()

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name):
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name):
        return dict.__contains__(self, name.lower())


def split_host_port(address):
    """(host, port) from "host:port", "[v6 address]:port" or "host" (port 80), as http.client parses it."""
    i = address.rfind(":")
    if i > address.rfind("]"):
        port = address[i + 1:]
        if port and not (port.isascii() and port.isdigit()):
            raise ValueError("nonnumeric port: '%s'" % port)
        host, port = address[:i], int(port or 80)
    else:
        host, port = address, 80
    if host[:1] == "[" and host[-1:] == "]":
        host = host[1:-1]
    return host, port


def _tokens(value):
    """The comma-separated, case-insensitive tokens of a header such as Connection."""
    return [t.strip(" \t") for t in value.lower().split(",")]


def _quote_id(request_id):
    rid = request_id.encode("utf-8")
    if rid.rstrip(_UNRESERVED):
        rid = urllib.parse.quote_from_bytes(rid, safe="").encode("ascii")
    return rid


class RuntimeApiClient:
    """Keep-alive HTTP/1.1 client for the Runtime API on a plain socket. Never sets a socket timeout."""

    def __init__(self, address):
        self._address = split_host_port(address)
        host, port = self._address
        try:
            host_header = host.encode("ascii")
        except UnicodeEncodeError:
            host_header = host.encode("idna")
        if ":" in host:
            host_header = b"[" + host_header + b"]"
        if port != 80:
            host_header += b":%d" % port
        # The same request head http.client sent, built once: after the request line only
        # Content-Type, Content-Length and the error type vary.
        self._prefix = RUNTIME_API_PREFIX.encode("ascii")
        self._common = (b" HTTP/1.1\r\nHost: " + host_header + b"\r\nAccept-Encoding: identity\r\n"
                        b"User-Agent: " + USER_AGENT.encode("ascii") + b"\r\n")
        self._next_request = b"GET " + self._prefix + b"/invocation/next" + self._common + b"\r\n"
        self._sock = None
        self._buf = b""  # received bytes not yet consumed (normally none between answers)

    def _connect(self):
        # Timeout None makes create_connection call settimeout(None) before connecting, so a
        # socket.setdefaulttimeout() in user code cannot apply: /next may block for a long time.
        sock = socket.create_connection(self._address, None)
        try:  # small requests must not wait for delayed ACKs (curl and Node do the same)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._sock = sock
        self._buf = b""

    def close(self):
        sock, self._sock, self._buf = self._sock, None, b""
        if sock is not None:
            sock.close()

    def _request(self, request):
        """Send a whole request (bytes, one sendall); returns (status, Headers, body bytes)."""
        for attempt in range(2):
            reused = self._sock is not None
            if not reused:
                self._connect()
            try:
                self._sock.sendall(request)
                status, headers, body, close = self._read_answer()
            except (ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the server closed while idle: retry once on a new one.
                self.close()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self.close()  # in an unknown state: never reuse it
                raise
            if close:
                self.close()
            return status, headers, body
        raise AssertionError("unreachable")

    def _recv_more(self, buf):
        data = self._sock.recv(_RECV_SIZE)
        if not data:
            raise HttpError("connection closed in the middle of an answer")
        return buf + data

    def _read_answer(self):
        """One answer: (status, headers, body, whether the connection must be closed after it)."""
        buf = self._buf
        while True:
            # In practice the whole answer (but a large event) arrives with the first recv().
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > _MAX_HEAD:
                    raise HttpError("answer head longer than %d bytes" % _MAX_HEAD)
                data = self._sock.recv(_RECV_SIZE)
                if not data:
                    if buf:
                        raise HttpError("connection closed in the middle of an answer's head")
                    # What http.client's RemoteDisconnected is: _request retries on a new connection.
                    raise ConnectionResetError("Remote end closed connection without response")
                searched = max(len(buf) - 3, 0)
                buf += data
                end = buf.find(b"\r\n\r\n", searched)
            head = buf[:end].decode("latin-1")
            buf = buf[end + 4:]
            if "\n " in head or "\n\t" in head:  # obsolete line folding: one value on several lines
                head = re.sub(r"\r\n[ \t]+", " ", head)
            lines = head.split("\r\n")
            parts = lines[0].split(None, 2)
            if (len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3
                    or not parts[1].isdigit()):
                raise HttpError("bad status line %r" % lines[0][:200])
            status = int(parts[1])
            if status >= 200:
                break
            # An interim answer (100 Continue): skip its head, the real one follows.

        headers = Headers()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError("bad header line %r" % line[:200])
            # setdefault: the first of repeated headers counts, as with HTTPMessage.get().
            headers.setdefault(name.lower(), value.strip(" \t"))

        connection = dict.get(headers, "connection")
        if parts[0] == "HTTP/1.0":
            close = not (dict.get(headers, "keep-alive") is not None
                         or connection is not None and "keep-alive" in _tokens(connection))
        else:
            close = connection is not None and "close" in _tokens(connection)

        coding = dict.get(headers, "transfer-encoding")
        length = dict.get(headers, "content-length")
        if status == 204 or status == 304:
            body = b""
        elif coding is not None:
            if _tokens(coding)[-1] == "chunked":
                body, buf = self._read_chunked(buf)
            else:
                body, buf, close = self._read_to_close(buf), b"", True
        elif length is not None:
            if not (length.isascii() and length.isdigit()):
                raise HttpError("bad Content-Length %r" % length[:100])
            n = int(length)
            if len(buf) == n:
                body, buf = buf, b""
            elif len(buf) > n:
                body, buf = buf[:n], buf[n:]
            else:
                body, buf = self._read_exact(buf, n), b""
        else:
            body, buf, close = self._read_to_close(buf), b"", True
        self._buf = buf
        return status, headers, body, close

    def _read_exact(self, buf, n):
        """buf and then bytes from the socket up to n in all, received in place (events reach 6 MB)."""
        out = bytearray(n)
        pos = len(buf)
        out[:pos] = buf
        view = memoryview(out)
        while pos < n:
            got = self._sock.recv_into(view[pos:])
            if not got:
                raise HttpError("connection closed after %d of %d body bytes" % (pos, n))
            pos += got
        return bytes(out)

    def _read_line(self, buf):
        """(a line without its line end, what follows it)."""
        end = buf.find(b"\n")
        while end < 0:
            if len(buf) > 65536:
                raise HttpError("line too long in a chunked answer")
            searched = len(buf)
            buf = self._recv_more(buf)
            end = buf.find(b"\n", searched)
        return buf[:end].rstrip(b"\r"), buf[end + 1:]

    def _read_chunked(self, buf):
        """A chunked body: (body, what follows it)."""
        chunks = []
        while True:
            line, buf = self._read_line(buf)
            size = line.split(b";", 1)[0].strip(b" \t")
            if not size or size.strip(b"0123456789abcdefABCDEF"):
                raise HttpError("bad chunk size line %r" % line[:100])
            n = int(size, 16)
            if n == 0:
                break
            if len(buf) < n + 2:
                buf = self._read_exact(buf, n + 2)
            if buf[n:n + 2] != b"\r\n":
                raise HttpError("chunk data not followed by CRLF")
            chunks.append(buf[:n])
            buf = buf[n + 2:]
        while True:  # trailer fields (ignored) up to an empty line
            line, buf = self._read_line(buf)
            if not line:
                return b"".join(chunks), buf

    def _read_to_close(self, buf):
        """A body without declared length: everything up to the end of the connection."""
        chunks = [buf]
        while True:
            data = self._sock.recv(_RECV_SIZE)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def next_invocation(self):
        try:
            status, headers, body = self._request(self._next_request)
        except (OSError, HttpError) as e:
            fatal("GET /runtime/invocation/next failed: %s" % e)
        if status != 200:
            fatal("GET /runtime/invocation/next returned HTTP %d: %s" % (status, body[:500].decode("utf-8", "replace")))
        return headers, body

    def _post(self, path, payload, error_type=None):
        """path: bytes after the API prefix; payload: the JSON body (bytes)."""
        extra = b""
        if error_type is not None:
            extra = b"Lambda-Runtime-Function-Error-Type: " + header_safe(error_type).encode("ascii") + b"\r\n"
        request = b"POST %s%s%sContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
            self._prefix, path, self._common, len(payload), extra, payload)
        try:
            status, _, body = self._request(request)
        except (OSError, HttpError) as e:
            fatal("POST %s failed: %s" % (path.decode("ascii"), e))
        if 200 <= status < 300:
            return
        answer = "POST %s returned HTTP %d: %s" % (path.decode("ascii"), status, body[:500].decode("utf-8", "replace"))
        if status >= 500:
            fatal(answer)
        # E.g. 413 (response too large) or 403 (already reported): the platform has
        # recorded the outcome; note it and carry on with the next invocation.
        sys.stderr.write("nimbus python runtime: %s\n" % answer)
        sys.stderr.flush()

    def post_response(self, request_id, payload):
        self._post(b"/invocation/%s/response" % _quote_id(request_id), payload)

    def post_error(self, request_id, body):
        self._post(b"/invocation/%s/error" % _quote_id(request_id), json.dumps(body).encode("utf-8"),
                   body["errorType"])

    def post_init_error(self, body):
        self._post(b"/init/error", json.dumps(body).encode("utf-8"), body["errorType"])


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


_FUNCTION_ENV_NAMES = ("AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_LAMBDA_FUNCTION_NAME",
                       "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION")
# Those variables' values, read once by main() when init is done (so changes made while importing
# the handler still count): each os.environ look-up costs about as much as parsing a header.
_function_env = None


def read_function_env():
    return tuple(os.environ.get(name) for name in _FUNCTION_ENV_NAMES)


class LambdaContext:
    """The context argument, attribute-compatible with AWS's (awslambdaric) LambdaContext.

    As in AWS, memory_limit_in_mb is the string value of AWS_LAMBDA_FUNCTION_MEMORY_SIZE.
    """

    def __init__(self, request_id, deadline_ms, invoked_function_arn, client_context, cognito_identity, tenant_id):
        self.aws_request_id = request_id
        (self.log_group_name, self.log_stream_name, self.function_name, self.memory_limit_in_mb,
         self.function_version) = _function_env or read_function_env()
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id

        self.client_context = None
        if isinstance(client_context, dict):
            self.client_context = make_obj(ClientContext, client_context)
            self.client_context.client = (make_obj(Client, self.client_context.client)
                                          if self.client_context.client is not None else None)

        self.identity = identity = CognitoIdentity()
        if isinstance(cognito_identity, dict):
            identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")
        else:
            identity.cognito_identity_id = identity.cognito_identity_pool_id = None

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
# What json.dumps(result, default=_json_default, ensure_ascii=ENSURE_ASCII) builds on every call.
_ENCODER = json.JSONEncoder(default=_json_default, ensure_ascii=ENSURE_ASCII)
# First bytes for which json.loads(bytes) may pick another codec than UTF-8 (BOMs, UTF-16/32).
_NOT_PLAIN_UTF8 = (b"\x00", b"\xef", b"\xfe", b"\xff")


def to_json(result):
    return _ENCODER.encode(result).encode("utf-8")


def from_json(body):
    """json.loads(body) for bytes, without its encoding sniffing when the body is plainly UTF-8."""
    if body[:1] in _NOT_PLAIN_UTF8 or body[1:2] == b"\x00":
        return json.loads(body)
    return json.loads(body.decode("utf-8", "surrogatepass"))


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
            event = from_json(body)
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
    try:
        client = RuntimeApiClient(api)
    except ValueError as e:
        fatal("bad AWS_LAMBDA_RUNTIME_API %r: %s" % (api, e))

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

    global _function_env
    _function_env = read_function_env()

    while True:
        headers, body = client.next_invocation()
        handle_invocation(client, handler, headers, body)


if __name__ == "__main__":
    main()
