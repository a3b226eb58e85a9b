"""Starts real nimbusd processes and drives them with Debian's AWS CLI v2.

Shared by the integration tests. Standard library only.
"""

import base64
import glob
import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

AWS = "/usr/bin/aws"

DEV_ACCOUNT = {
    "id": "123456789012",
    "access_key_id": "AKIANIMBUSDEV0000001",
    "secret_access_key": "nimbus-dev-secret-key-change-me",
}
OTHER_ACCOUNT = {
    "id": "210987654321",
    "access_key_id": "AKIANIMBUSOTHER00002",
    "secret_access_key": "another-secret-key-for-tests",
}


def make_zip(files, symlinks=None):
    """Builds a zip in memory from {name: content} (and {name: target} links)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            z.writestr(info, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = 0o120777 << 16
            z.writestr(info, target)
    return buf.getvalue()


def code_sha256(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class Node:
    """One nimbusd process with its own config and data directory."""

    _names = 0

    def __init__(self, nimbusd, workdir, accounts=(DEV_ACCOUNT, OTHER_ACCOUNT), extra="", name=None):
        self.nimbusd = nimbusd
        self.workdir = workdir
        # A name of its own: ctest runs test files side by side, and a node
        # name (its cgroups) belongs to one nimbusd per host.
        if name is None:
            Node._names += 1
            name = "it-%d-%d" % (os.getpid(), Node._names)
        self.name = name
        self.data_dir = os.path.join(workdir, "data")
        self.config_path = os.path.join(workdir, "nimbus.toml")
        self.log_path = os.path.join(workdir, "nimbusd.log")
        with open(self.config_path, "w") as f:
            f.write('[node]\nname = "%s"\ndata_dir = "%s"\nregion = "us-east-1"\n' % (name, self.data_dir))
            f.write('[api]\nlisten = "127.0.0.1:0"\n')
            f.write(extra)
            for a in accounts:
                f.write('[[accounts]]\nid = "%s"\naccess_key_id = "%s"\nsecret_access_key = "%s"\n'
                        % (a["id"], a["access_key_id"], a["secret_access_key"]))
        self.proc = None
        self.port = None

    def start(self, timeout=20):
        self.log = open(self.log_path, "a")
        self.log_offset = self.log.tell()
        self.proc = subprocess.Popen([self.nimbusd, "--config", self.config_path],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + timeout
        pattern = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
        while time.time() < deadline:
            with open(self.log_path) as f:
                f.seek(self.log_offset)
                m = pattern.search(f.read())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError("nimbusd exited with %d:\n%s" % (self.proc.returncode, self.read_log()))
            time.sleep(0.05)
        raise RuntimeError("nimbusd did not start:\n" + self.read_log())

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None:
            return None
        died = self.proc.poll()
        if died is not None and died not in (0, -signal.SIGKILL):
            # nimbusd ended on its own (a crash, say): the tests then fail
            # with connection errors only, so show how it ended.
            sys.stderr.write("nimbusd had exited with %d before stop(); the end of its log:\n%s\n"
                             % (died, self.read_log()[-6000:]))
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            raise RuntimeError("nimbusd did not stop within %ss" % timeout)
        finally:
            self.proc = None
            self.log.close()
        self.remove_cgroup_parents()
        return rc

    def remove_cgroup_parents(self):
        """Removes the node's (empty) cgroup parents, so that test runs do not
        leave one set per node name behind; a non-empty one stays."""
        for path in glob.glob("/sys/fs/cgroup/nimbus-%s" % self.name) + \
                glob.glob("/sys/fs/cgroup/*/nimbus-%s" % self.name):
            try:
                os.rmdir(path)
            except OSError:
                pass

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def aws(self, *args, account=DEV_ACCOUNT, secret=None, retries=False):
        """Runs `aws lambda ARGS`; returns (exit code, parsed JSON or None, stderr).

        The CLI's own retries are off unless `retries` is set."""
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": self.workdir,
            "AWS_ACCESS_KEY_ID": account["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": secret or account["secret_access_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_PAGER": "",
        }
        if not retries:
            env["AWS_MAX_ATTEMPTS"] = "1"
        cmd = [AWS, "lambda", *args, "--endpoint-url", self.endpoint, "--output", "json"]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        body = None
        if p.stdout.strip():
            body = json.loads(p.stdout)
        return p.returncode, body, p.stderr


class TempDir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="nimbus-it-")

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)


def pack_files(chunks_dir):
    """The pack files of a pack chunk store (data_dir/code/chunks), in order."""
    names = sorted(n for n in os.listdir(chunks_dir) if n.startswith("pack-") and n.endswith(".dat"))
    return [os.path.join(chunks_dir, n) for n in names]


def stored_chunks(chunks_dir):
    """The chunks a pack chunk store holds: {id: sealed length}. Replays the
    record headers of every pack in order (format in
    storage/include/nimbus/storage/pack_chunk_store.hpp: a chunk record adds
    its id, a tombstone removes it); reads only the headers."""
    header = struct.Struct("<4sB3xI32sI")
    chunks = {}
    for path in pack_files(chunks_dir):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos = 0
            while pos + header.size <= size:
                f.seek(pos)
                magic, kind, length, cid, _ = header.unpack(f.read(header.size))
                if magic != b"NPK1":
                    break  # the end of what was written (the store cuts torn tails)
                if kind == 1:
                    chunks[cid] = length
                elif kind == 2:
                    chunks.pop(cid, None)
                pos += (header.size + length + 4095) // 4096 * 4096
    return chunks


def error_name(stderr):
    """The AWS error name in an AWS CLI error message, or None."""
    m = re.search(r"An error occurred \((\w+)\)", stderr)
    return m.group(1) if m else None


def sandbox_skip_reason():
    """Why tests that run functions cannot run here, or None."""
    if os.geteuid() != 0:
        return "running functions needs root (namespaces, cgroups)"
    return None
