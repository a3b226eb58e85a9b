// Nimbus Node.js runtime: the client side of the AWS Lambda Runtime API.
//
// Started inside the sandbox as `/usr/bin/node /var/runtime/node/bootstrap.mjs`
// (an ES module, so it needs no package.json next to it). Node 18 or later,
// standard library only.
//
// Protocol (http://$AWS_LAMBDA_RUNTIME_API/2018-06-01):
//
//   init:  load the handler named by $_HANDLER ("[dir/]module.export[.nested]")
//          from $LAMBDA_TASK_ROOT, trying <module> (CommonJS), <module>.js (ES
//          module if the nearest package.json says "type": "module", else
//          CommonJS), <module>.mjs, <module>.cjs, then node_modules, as AWS does.
//          On failure POST /runtime/init/error and exit with status 1.
//   loop:  GET  /runtime/invocation/next            blocks until there is an event;
//                                                    headers carry the request id,
//                                                    deadline, ARN, trace id, ...
//          call handler(event, context, callback)
//          POST /runtime/invocation/{id}/response   body = JSON.stringify(result)
//            or /runtime/invocation/{id}/error      header Lambda-Runtime-Function-Error-Type,
//                                                    body {"errorType", "errorMessage", "stackTrace"}
//
// Handler results: a returned promise (async handler) settles the invocation;
// otherwise a handler declaring three or more parameters must call
// callback(err, result) (or the legacy context.done/succeed/fail); any other
// handler's plain return value is the result. As in AWS, callback results wait
// for the event loop to drain while context.callbackWaitsForEmptyEventLoop is
// true, and an invocation whose event loop drains without any result returns null.
//
// A non-200 answer to /next (e.g. 410 when the sandbox is shutting down), a 5xx
// answer to a POST, or a lost connection is unrecoverable: the runtime exits
// non-zero. An uncaught exception or unhandled rejection fails the current
// invocation (or init) and exits, as in AWS. Handler output goes to the
// process's stdout/stderr untouched; the runtime writes only error reports, to stderr.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import util from 'node:util';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(import.meta.url);
const API_PREFIX = '/2018-06-01/runtime';
const USER_AGENT = `nimbus-node-runtime/1.0 (node/${process.versions.node})`;

function fatal(message) {
  process.stderr.write(`nimbus node runtime: ${message}\n`);
  process.exit(1);
}

// ---------------------------------------------------------------------------- errors

class RuntimeError extends Error {
  // An error detected by the runtime, named with Lambda's error type (Runtime.*).
  constructor(name, message, cause) {
    super(message);
    this.name = name;
    if (cause && typeof cause.stack === 'string')
      this.stack = `${name}: ${message}\n${cause.stack}`;
  }
}

function errorBody(err) {
  try {
    if (util.types.isNativeError(err) || (err && typeof err === 'object' &&
        typeof err.name === 'string' && typeof err.message === 'string')) {
      return {
        errorType: String(err.name),
        errorMessage: String(err.message),
        stackTrace: typeof err.stack === 'string' ? err.stack.split('\n') : [],
      };
    }
    return { errorType: typeof err, errorMessage: String(err), stackTrace: [] };
  } catch {
    return {
      errorType: 'handled',
      errorMessage: 'the error could not be converted: reading its name, message or stack failed',
      stackTrace: [],
    };
  }
}

// AWS's log format: <time>\t<request id>\tERROR\t<label> \t{"errorType",...,"stack":[...]}
function logError(label, requestId, body) {
  const json = JSON.stringify({ errorType: body.errorType, errorMessage: body.errorMessage,
                                stack: body.stackTrace });
  process.stderr.write(`${new Date().toISOString()}\t${requestId}\tERROR\t${label} \t${json}\n`);
}

// Header values must be printable ASCII; percent-encode anything else.
function headerSafe(value) {
  return String(value).replace(/[^\x20-\x7e]/g, (c) => encodeURIComponent(c));
}

// ---------------------------------------------------------------------------- Runtime API client

// A kept-alive HTTP/1.1 client on one plain socket, written for the Runtime
// API's traffic: one request at a time, small heads, bodies framed by length
// (nimbusd), by chunks or by the end of the connection. With node:http an
// invocation of a no-op function cost about three times the CPU (910 against
// 295 us at 32 connections), most of it in JavaScript that a runtime
// answering a few dozen invocations a second has not had optimized yet.

const MAX_HEAD = 64 * 1024;
const CRLFCRLF = Buffer.from('\r\n\r\n');

class HttpError extends Error {}

// [host, port] from "host:port", "[v6 address]:port" or "host" (port 80).
function splitHostPort(address) {
  let host = address;
  let port = 80;
  const colon = address.lastIndexOf(':');
  if (colon > address.lastIndexOf(']')) {
    const digits = address.slice(colon + 1);
    if (digits !== '' && !/^[0-9]+$/.test(digits))
      throw new Error(`nonnumeric port: '${digits}'`);
    host = address.slice(0, colon);
    if (digits !== '')
      port = Number(digits);
  }
  if (host.startsWith('[') && host.endsWith(']'))
    host = host.slice(1, -1);
  return [host, port];
}

// The comma-separated, case-insensitive tokens of a header such as Connection.
function tokens(value) {
  return value.toLowerCase().split(',').map((t) => t.trim());
}

// Parses one answer from bytes as they arrive: append() them, then parse()
// says whether the answer is complete; end() reports the end of the
// connection.
class AnswerParser {
  constructor() {
    this.pieces = []; // bytes received and not yet parsed, as they came
    this.size = 0;
    this.received = false; // any byte of this answer arrived
    this.phase = 'head';
    this.status = 0;
    this.headers = null;
    this.close = false;
    this.length = 0; // body bytes expected (length framing), or those of the current chunk
    this.parts = [];
    this.body = null;
    this.rest = null; // bytes after the answer
  }

  append(chunk) {
    this.received = true;
    this.pieces.push(chunk);
    this.size += chunk.length;
  }

  // The unparsed bytes as one buffer (copied together only when needed: a
  // large body waits in pieces until all of it is here).
  flat() {
    if (this.pieces.length !== 1)
      this.pieces = [this.pieces.length === 0 ? Buffer.alloc(0) : Buffer.concat(this.pieces, this.size)];
    return this.pieces[0];
  }

  consume(n) {
    const rest = this.flat().subarray(n);
    this.pieces = rest.length > 0 ? [rest] : [];
    this.size = rest.length;
  }

  // Parses what has arrived; true when the answer is complete.
  parse() {
    for (;;) {
      switch (this.phase) {
        case 'head': {
          const buf = this.flat();
          const end = buf.indexOf(CRLFCRLF);
          if (end < 0) {
            if (buf.length > MAX_HEAD)
              throw new HttpError(`answer head longer than ${MAX_HEAD} bytes`);
            return false;
          }
          const head = buf.toString('latin1', 0, end);
          this.consume(end + 4);
          this.parseHead(head);
          break;
        }
        case 'length': {
          if (this.size < this.length)
            return false;
          const buf = this.flat();
          this.body = buf.subarray(0, this.length);
          this.rest = buf.subarray(this.length);
          return true;
        }
        case 'chunk-size': {
          const buf = this.flat();
          const end = buf.indexOf(10); // \n
          if (end < 0) {
            if (buf.length > 65536)
              throw new HttpError('line too long in a chunked answer');
            return false;
          }
          const line = buf.toString('latin1', 0, end).replace(/\r$/, '');
          this.consume(end + 1);
          const size = line.split(';', 1)[0].trim();
          if (!/^[0-9a-fA-F]+$/.test(size))
            throw new HttpError(`bad chunk size line ${JSON.stringify(line.slice(0, 100))}`);
          this.length = parseInt(size, 16);
          this.phase = this.length === 0 ? 'trailer' : 'chunk-data';
          break;
        }
        case 'chunk-data': {
          if (this.size < this.length + 2)
            return false;
          const buf = this.flat();
          if (buf[this.length] !== 13 || buf[this.length + 1] !== 10)
            throw new HttpError('chunk data not followed by CRLF');
          this.parts.push(buf.subarray(0, this.length));
          this.consume(this.length + 2);
          this.phase = 'chunk-size';
          break;
        }
        case 'trailer': { // trailer fields (ignored) up to an empty line
          const buf = this.flat();
          const end = buf.indexOf(10);
          if (end < 0)
            return false;
          const empty = end === 0 || (end === 1 && buf[0] === 13);
          this.consume(end + 1);
          if (empty) {
            this.body = Buffer.concat(this.parts);
            this.rest = this.flat();
            return true;
          }
          break;
        }
        default: // 'to-close': everything up to the end of the connection
          return false;
      }
    }
  }

  parseHead(text) {
    if (text.includes('\n ') || text.includes('\n\t')) // obsolete line folding
      text = text.replace(/\r\n[ \t]+/g, ' ');
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.([0-9]) ([0-9]{3})(?: |$)/.exec(lines[0]);
    if (!m)
      throw new HttpError(`bad status line ${JSON.stringify(lines[0].slice(0, 200))}`);
    const status = Number(m[2]);
    if (status < 200)
      return; // an interim answer (100 Continue): the real one follows
    const headers = Object.create(null);
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i];
      const colon = line.indexOf(':');
      if (colon < 0)
        throw new HttpError(`bad header line ${JSON.stringify(line.slice(0, 200))}`);
      const name = line.slice(0, colon).toLowerCase();
      if (!(name in headers)) // the first of repeated headers counts
        headers[name] = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    }
    this.status = status;
    this.headers = headers;
    const connection = headers.connection;
    if (m[1] === '0')
      this.close = !(headers['keep-alive'] !== undefined ||
                     (connection !== undefined && tokens(connection).includes('keep-alive')));
    else
      this.close = connection !== undefined && tokens(connection).includes('close');
    const coding = headers['transfer-encoding'];
    const length = headers['content-length'];
    if (status === 204 || status === 304) {
      this.phase = 'length';
      this.length = 0;
    } else if (coding !== undefined) {
      const t = tokens(coding);
      this.phase = t[t.length - 1] === 'chunked' ? 'chunk-size' : 'to-close';
    } else if (length !== undefined) {
      if (!/^[0-9]+$/.test(length))
        throw new HttpError(`bad Content-Length ${JSON.stringify(length.slice(0, 100))}`);
      this.phase = 'length';
      this.length = Number(length);
    } else {
      this.phase = 'to-close';
    }
    if (this.phase === 'to-close')
      this.close = true;
  }

  // The connection ended: the answer if it was framed by the end, else an error.
  end() {
    if (this.phase === 'to-close') {
      this.body = this.flat();
      this.rest = null;
      return;
    }
    if (!this.received)
      throw Object.assign(new Error('Remote end closed connection without response'),
                          { code: 'ECONNRESET' });
    if (this.phase === 'length')
      throw new HttpError(`connection closed after ${this.size} of ${this.length} body bytes`);
    throw new HttpError(this.phase === 'head' ? "connection closed in the middle of an answer's head"
                                              : 'connection closed in the middle of an answer');
  }
}

class RuntimeApiClient {
  constructor(address) {
    [this.host, this.port] = splitHostPort(address);
    let hostHeader = this.host.includes(':') ? `[${this.host}]` : this.host;
    if (this.port !== 80)
      hostHeader += `:${this.port}`;
    this.common = ` HTTP/1.1\r\nHost: ${hostHeader}\r\nUser-Agent: ${USER_AGENT}\r\n`;
    this.socket = null;
    this.leftover = null; // bytes after the last answer (normally none)
    this.pending = null; // { parser, resolve, reject, retry } of the request in flight
    this.waiting = []; // requests to start, in order, once it is answered
  }

  // Keep-alive, one connection, no timeout: /next may block for minutes. The
  // socket is unref'd between requests, so it does not hold the event loop.
  connect() {
    const socket = net.connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this.onData(socket, chunk));
    socket.on('end', () => this.onEnd(socket, null));
    socket.on('error', (err) => this.onEnd(socket, err));
    socket.on('close', () => this.onEnd(socket, null));
    this.socket = socket;
    this.leftover = null;
    return socket;
  }

  drop(socket) {
    if (this.socket === socket) {
      this.socket = null;
      this.leftover = null;
    }
    socket.destroy();
  }

  onData(socket, chunk) {
    const p = this.pending;
    if (socket !== this.socket || p === null) {
      // Bytes while no request is in flight: nothing can be expected on this
      // connection any more.
      this.drop(socket);
      return;
    }
    try {
      p.parser.append(chunk);
      if (!p.parser.parse())
        return;
    } catch (e) {
      this.pending = null;
      this.drop(socket);
      p.reject(e);
      return;
    }
    this.pending = null;
    const parser = p.parser;
    if (parser.close) {
      this.drop(socket);
    } else {
      this.leftover = parser.rest.length > 0 ? parser.rest : null;
      socket.unref();
    }
    p.resolve({ status: parser.status, headers: parser.headers, body: parser.body });
  }

  onEnd(socket, err) {
    const p = this.pending;
    if (socket !== this.socket || p === null) {
      if (socket === this.socket)
        this.drop(socket); // closed while idle: the next request connects anew
      return;
    }
    this.pending = null;
    this.drop(socket);
    try {
      p.parser.end();
    } catch (e) {
      // A kept-alive connection the server closed while idle: retry once.
      if (p.retry && !p.parser.received)
        p.retry();
      else
        p.reject(err && !p.parser.received ? err : e);
      return;
    }
    const parser = p.parser;
    p.resolve({ status: parser.status, headers: parser.headers, body: parser.body });
  }

  request(method, urlPath, body, extraHeaders) {
    let head = `${method} ${urlPath}${this.common}`;
    if (body !== undefined)
      head += `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n`;
    for (const name in extraHeaders)
      head += `${name}: ${extraHeaders[name]}\r\n`;
    head += '\r\n';
    const data = body === undefined || body.length === 0 ? head
      : Buffer.concat([Buffer.from(head, 'latin1'), body]);
    return new Promise((resolve, reject) => {
      // One request at a time on the one connection: a request made while
      // another is in flight (an error report from an uncaught exception,
      // say) waits for it, as with node:http's agent of one socket.
      const finish = (settle) => (value) => {
        settle(value);
        const next = this.waiting.shift();
        if (next)
          next();
      };
      const attempt = (mayRetry) => {
        const reused = this.socket !== null;
        const socket = reused ? this.socket : this.connect();
        const parser = new AnswerParser();
        this.pending = { parser, resolve: finish(resolve), reject: finish(reject),
                         retry: reused && mayRetry ? () => attempt(false) : null };
        socket.ref();
        socket.write(data, 'latin1');
        if (this.leftover !== null) {
          const rest = this.leftover;
          this.leftover = null;
          this.onData(socket, rest);
        }
      };
      if (this.pending !== null || this.waiting.length > 0)
        this.waiting.push(() => attempt(true));
      else
        attempt(true);
    });
  }

  async nextInvocation() {
    let res;
    try {
      res = await this.request('GET', `${API_PREFIX}/invocation/next`);
    } catch (e) {
      fatal(`GET /runtime/invocation/next failed: ${e.message}`);
    }
    if (res.status !== 200)
      fatal(`GET /runtime/invocation/next returned HTTP ${res.status}: ${res.body.toString().slice(0, 500)}`);
    return res;
  }

  async post(urlPath, payload, extraHeaders) {
    let res;
    try {
      res = await this.request('POST', `${API_PREFIX}${urlPath}`, Buffer.from(payload, 'utf8'),
                               extraHeaders);
    } catch (e) {
      fatal(`POST ${urlPath} failed: ${e.message}`);
    }
    if (res.status >= 500)
      fatal(`POST ${urlPath} returned HTTP ${res.status}: ${res.body.toString().slice(0, 500)}`);
    // E.g. 413 (response too large) or 403 (already reported): the platform has
    // recorded the outcome; note it and carry on with the next invocation.
    if (res.status < 200 || res.status > 299)
      process.stderr.write(`nimbus node runtime: POST ${urlPath} returned HTTP ${res.status}: ` +
                           `${res.body.toString().slice(0, 500)}\n`);
  }

  postResponse(requestId, payload) {
    return this.post(`/invocation/${encodeURIComponent(requestId)}/response`, payload);
  }

  postError(requestId, body) {
    return this.post(`/invocation/${encodeURIComponent(requestId)}/error`, JSON.stringify(body),
                     { 'Lambda-Runtime-Function-Error-Type': headerSafe(body.errorType) });
  }

  postInitError(body) {
    return this.post('/init/error', JSON.stringify(body),
                     { 'Lambda-Runtime-Function-Error-Type': headerSafe(body.errorType) });
  }
}

// ---------------------------------------------------------------------------- handler loading

function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDirectory(p) {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

// True if the nearest package.json above `dir` (stopping at node_modules) says "type": "module".
function packageTypeIsModule(dir) {
  for (;;) {
    if (path.basename(dir) === 'node_modules')
      return false;
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8'))?.type === 'module';
      } catch (e) {
        process.stderr.write(`${pj} cannot be read, it is ignored for ES module detection: ${e.message}\n`);
        return false;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir)
      return false;
    dir = parent;
  }
}

async function loadModule(taskRoot, moduleRoot, moduleName) {
  const base = path.resolve(taskRoot, moduleRoot, moduleName);
  if (isFile(base))
    return require(base);
  if (isFile(`${base}.js`)) {
    if (packageTypeIsModule(path.dirname(base)))
      return await import(pathToFileURL(`${base}.js`).href);
    return require(`${base}.js`);
  }
  if (isFile(`${base}.mjs`))
    return await import(pathToFileURL(`${base}.mjs`).href);
  if (isFile(`${base}.cjs`))
    return require(`${base}.cjs`);
  if (isDirectory(base))
    return require(base);
  // Last resort: a package under node_modules. Throws MODULE_NOT_FOUND
  // ("Cannot find module 'name'") when there is none.
  const resolved = require.resolve(moduleName, { paths: [path.resolve(taskRoot, moduleRoot)] });
  return resolved.endsWith('.mjs') ? await import(pathToFileURL(resolved).href) : require(resolved);
}

async function loadHandler(taskRoot, fullHandler) {
  const file = path.basename(fullHandler);
  const moduleRoot = fullHandler.slice(0, fullHandler.length - file.length);
  const match = file.match(/^([^.]*)\.(.*)$/);
  if (!match || !match[1] || !match[2])
    throw new RuntimeError('Runtime.MalformedHandlerName', 'Bad handler');
  const [, moduleName, handlerPath] = match;

  let app;
  try {
    app = await loadModule(taskRoot, moduleRoot, moduleName);
  } catch (e) {
    if (e instanceof SyntaxError)
      throw new RuntimeError('Runtime.UserCodeSyntaxError', String(e), e);
    if (e && (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND'))
      throw new RuntimeError('Runtime.ImportModuleError', String(e), e);
    throw e;
  }
  const fn = handlerPath.split('.').reduce((obj, key) => (obj == null ? undefined : obj[key]), app);
  if (fn === undefined)
    throw new RuntimeError('Runtime.HandlerNotFound', `${fullHandler} is undefined or not exported`);
  if (typeof fn !== 'function')
    throw new RuntimeError('Runtime.HandlerNotFound', `${fullHandler} is not a function`);
  return fn;
}

// ---------------------------------------------------------------------------- invocation

function parseJsonHeader(value) {
  if (value === undefined || value === '')
    return undefined;
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

function makeContext(headers, requestId) {
  const deadline = Number(headers['lambda-runtime-deadline-ms']) || 0;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: requestId,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    identity: parseJsonHeader(headers['lambda-runtime-cognito-identity']),
    clientContext: parseJsonHeader(headers['lambda-runtime-client-context']),
    tenantId: headers['lambda-runtime-aws-tenant-id'],
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

// Run by the 'beforeExit' listener, i.e. when the event loop has drained.
let onEventLoopEmpty = null;
process.on('beforeExit', () => {
  const hook = onEventLoopEmpty;
  onEventLoopEmpty = null;
  if (hook)
    hook();
  else
    fatal('the event loop drained while the runtime was not running an invocation');
});

// Calls the handler; resolves to {ok: true, result} or {ok: false, error}.
function runHandler(fn, event, context, requestId) {
  return new Promise((resolve) => {
    let settled = false;
    let callbackCalled = false;
    const finish = (outcome) => {
      if (settled)
        return;
      settled = true;
      onEventLoopEmpty = null;
      resolve(outcome);
    };
    const outcomeOf = (err, result) =>
      (err === undefined || err === null ? { ok: true, result } : { ok: false, error: err });

    // AWS: an invocation whose event loop drains without a result returns null.
    onEventLoopEmpty = () => setImmediate(() => finish({ ok: true, result: null }));

    const callback = (err, result) => {
      if (settled || callbackCalled) {
        process.stderr.write(`${new Date().toISOString()}\t${requestId}\tWARN\tInvocation has already ` +
                             'been reported as done. Cannot call complete more than once per invocation.\n');
        return;
      }
      callbackCalled = true;
      if (context.callbackWaitsForEmptyEventLoop)
        onEventLoopEmpty = () => setImmediate(() => finish(outcomeOf(err, result)));
      else
        finish(outcomeOf(err, result));
    };
    // Legacy API: these finish without waiting for the event loop.
    context.done = (err, result) => {
      context.callbackWaitsForEmptyEventLoop = false;
      callback(err, result);
    };
    context.succeed = (result) => context.done(null, result);
    context.fail = (err) => context.done(err === undefined || err === null ? 'handled' : err);

    let returned;
    try {
      returned = fn(event, context, callback);
    } catch (e) {
      finish({ ok: false, error: e });
      return;
    }
    if (returned !== null && returned !== undefined && typeof returned.then === 'function') {
      Promise.resolve(returned).then((result) => finish({ ok: true, result }),
                                     (error) => finish({ ok: false, error }));
    } else if (fn.length < 3 && !callbackCalled) {
      finish({ ok: true, result: returned });
    }
  });
}

let client = null;
let initializing = true;
let current = null; // { requestId, reported } of the invocation in progress

async function reportError(label, body) {
  if (initializing) {
    logError(label, undefined, body);
    await client.postInitError(body);
  } else if (current && !current.reported) {
    current.reported = true;
    logError(label, current.requestId, body);
    await client.postError(current.requestId, body);
  } else {
    logError(label, current?.requestId, body);
  }
}

async function handleInvocation(handler, res) {
  const headers = res.headers;
  const requestId = headers['lambda-runtime-aws-request-id'] ?? '';
  current = { requestId, reported: false };

  const traceId = headers['lambda-runtime-trace-id'];
  if (traceId !== undefined)
    process.env._X_AMZN_TRACE_ID = traceId;
  else
    delete process.env._X_AMZN_TRACE_ID;

  let outcome;
  let event;
  try {
    event = JSON.parse(res.body.toString('utf8'));
  } catch (e) {
    outcome = { ok: false,
                error: new RuntimeError('Runtime.UnmarshalError', `Unable to unmarshal input: ${e.message}`) };
  }
  if (!outcome)
    outcome = await runHandler(handler, event, makeContext(headers, requestId), requestId);

  let payload;
  if (outcome.ok) {
    try {
      payload = JSON.stringify(outcome.result === undefined ? null : outcome.result) ?? 'null';
    } catch (e) {
      outcome = { ok: false,
                  error: new RuntimeError('Runtime.MarshalError', `Unable to stringify response body: ${e.message}`) };
    }
  }
  if (current.reported) // an uncaught exception already failed this invocation
    return;
  if (outcome.ok) {
    current.reported = true;
    await client.postResponse(requestId, payload);
  } else {
    await reportError('Invoke Error', errorBody(outcome.error));
  }
  current = null;
}

// As in AWS: an uncaught exception or unhandled rejection fails the current
// invocation (or init) and ends the process.
process.on('uncaughtException', (err) => {
  reportError('Uncaught Exception', errorBody(err)).finally(() => process.exit(129));
});
process.on('unhandledRejection', (reason) => {
  const err = new RuntimeError('Runtime.UnhandledPromiseRejection', String(reason), reason);
  reportError('Unhandled Promise Rejection', errorBody(err)).finally(() => process.exit(128));
});

async function main() {
  const api = process.env.AWS_LAMBDA_RUNTIME_API;
  if (!api)
    fatal('AWS_LAMBDA_RUNTIME_API is not set');
  client = new RuntimeApiClient(api);

  const taskRoot = process.env.LAMBDA_TASK_ROOT || '/var/task';
  try {
    process.chdir(taskRoot);
  } catch {
    // keep the current directory
  }

  let handler;
  // Loading may leave the event loop empty while an ES module's top-level await is pending.
  onEventLoopEmpty = () => fatal('the event loop drained while loading the handler module');
  try {
    handler = await loadHandler(taskRoot, process.env._HANDLER ?? '');
  } catch (e) {
    await reportError('Uncaught Exception', errorBody(e));
    process.exit(1);
  }
  onEventLoopEmpty = null;
  initializing = false;

  for (;;) {
    const res = await client.nextInvocation();
    await handleInvocation(handler, res);
  }
}

main().catch((e) => fatal(e && e.stack ? e.stack : String(e)));
