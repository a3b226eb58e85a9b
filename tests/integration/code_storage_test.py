"""Integration test of code storage (issue 6): zip functions run from
flattened, encrypted, deduplicated chunks loaded lazily through FUSE, and
container-image functions run from a docker-save archive pushed to the node.
A real nimbusd (root: sandboxes and mounts) is driven by Debian's AWS CLI v2
and curl --aws-sigv4.

Run: python3 code_storage_test.py --nimbusd build/bin/nimbusd \
       --test-runtime build/tests/test_runtime --static-runtime build/tests/test_runtime_static
"""

import argparse
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import unittest
import urllib.request
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nimbus_harness import (DEV_ACCOUNT, OTHER_ACCOUNT, Node, TempDir,  # noqa: E402
                            code_sha256, error_name, pack_files, sandbox_skip_reason,
                            stored_chunks)

NIMBUSD = None
TEST_RUNTIME = None
STATIC_RUNTIME = None
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
# A line no chunk may contain in clear: the test looks for it in every pack file.
MARKER = "nimbus-plaintext-marker-7f3a9c"


def runtime_zip(data_line, extra=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o100755 << 16
        with open(TEST_RUNTIME, "rb") as f:
            z.writestr(info, f.read())
        info = zipfile.ZipInfo("data.txt", date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o100644 << 16
        z.writestr(info, (data_line + "\n" + MARKER * 200 + "\n"))
        for name, content in (extra or {}).items():
            z.writestr(name, content)
    return buf.getvalue()


def tar_bytes(entries):
    """A tar from [(name, bytes or None for a directory, mode)]."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1577836800
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_save_archive(tag, runtime_bytes, data_line):
    """A `docker save` archive written by hand: two layers, the second
    replaces /app/data.txt and whites out /gone.txt."""
    layer1 = tar_bytes([
        ("bin/", None, 0o755),
        ("bin/runtime", runtime_bytes, 0o755),
        ("app/", None, 0o755),
        ("app/data.txt", b"from layer one\n", 0o644),
        ("gone.txt", b"deleted by layer two\n", 0o644),
    ])
    layer2 = tar_bytes([
        ("app/", None, 0o755),
        ("app/data.txt", (data_line + "\n").encode(), 0o644),
        (".wh.gone.txt", b"", 0o644),
    ])
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["runtime"],
            "Env": ["PATH=/usr/bin:/bin", "GREETING=hello-from-image"],
            "WorkingDir": "/app",
        },
        "rootfs": {"type": "layers", "diff_ids": [
            "sha256:" + hashlib.sha256(layer1).hexdigest(),
            "sha256:" + hashlib.sha256(layer2).hexdigest()]},
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": ["l1/layer.tar", "l2/layer.tar"]}]).encode()
    archive = tar_bytes([
        ("l1/", None, 0o755), ("l1/layer.tar", layer1, 0o644),
        ("l2/", None, 0o755), ("l2/layer.tar", layer2, 0o644),
        (config_name, config, 0o644),
        ("manifest.json", manifest, 0o644),
    ])
    return archive, "sha256:" + hashlib.sha256(config).hexdigest()


def node_mounts(data_dir):
    """(mount point, fs type) of the mounts under this node's data directory."""
    found = []
    root = os.path.realpath(data_dir)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            point = fields[4].replace("\\040", " ")
            if point.startswith(root + "/"):
                found.append((point, fields[sep + 1]))
    return found


def chunks_dir(data_dir):
    return os.path.join(data_dir, "code", "chunks")


def chunk_count(data_dir):
    return len(stored_chunks(chunks_dir(data_dir)))


@unittest.skipIf(sandbox_skip_reason(), sandbox_skip_reason() or "")
class CodeStorage(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.node = Node(NIMBUSD, cls.tmp.path)
        cls.node.start()
        with open(STATIC_RUNTIME, "rb") as f:
            cls.static_runtime = f.read()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.node.proc is not None:
                cls.node.stop()
        finally:
            cls.tmp.close()

    # -- helpers ---------------------------------------------------------------

    def write(self, name, data):
        path = os.path.join(self.tmp.path, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def create_zip_function(self, name, data, account=DEV_ACCOUNT):
        path = self.write(name + ".zip", data)
        rc, cfg, err = self.node.aws("create-function", "--function-name", name,
                                     "--runtime", "provided.al2023", "--handler", "bootstrap",
                                     "--role", ROLE, "--zip-file", "fileb://" + path,
                                     account=account)
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["CodeSha256"], code_sha256(data))
        self.assertEqual(cfg["CodeSize"], len(data))
        return cfg

    def invoke(self, name, payload='{"action": "probe"}', account=DEV_ACCOUNT):
        out = os.path.join(self.tmp.path, "out.json")
        rc, meta, err = self.node.aws("invoke", "--function-name", name, out,
                                      "--cli-binary-format", "raw-in-base64-out",
                                      "--payload", payload, account=account)
        self.assertEqual(rc, 0, err)
        self.assertEqual(meta["StatusCode"], 200)
        with open(out) as f:
            text = f.read()
        self.assertNotIn("FunctionError", meta, text)
        return json.loads(text)

    def push(self, repo_tag, archive_path, account=DEV_ACCOUNT, payload_hash=None, secret=None):
        """PUT /nimbus/images/{repo}:{tag} with curl --aws-sigv4."""
        if payload_hash is None:
            payload_hash = "UNSIGNED-PAYLOAD"
        headers = os.path.join(self.tmp.path, "push-headers.txt")
        cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-D", headers,
               "--aws-sigv4", "aws:amz:us-east-1:lambda",
               "--user", "%s:%s" % (account["access_key_id"], secret or account["secret_access_key"]),
               "-H", "x-amz-content-sha256: " + payload_hash,
               "-T", archive_path, self.node.endpoint + "/nimbus/images/" + repo_tag]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        body, _, code = p.stdout.rpartition("\n")
        body = json.loads(body) if body.strip() else None
        with open(headers) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip().lower() == "x-amzn-errortype" and body is not None:
                    body["__type"] = value.strip().split(":")[0]
        return int(code), body

    # -- zip functions -----------------------------------------------------------

    def test_1_zip_function_runs_from_lazily_loaded_encrypted_chunks(self):
        data = runtime_zip("zip line one")
        self.create_zip_function("zipfn", data)
        body = self.invoke("zipfn")
        self.assertEqual(body["cwd"], "/var/task")
        self.assertEqual(body["data_line"], "zip line one")
        # The code is an erofs image served through FUSE on this node.
        mounts = node_mounts(self.node.data_dir)
        types = {t for _, t in mounts}
        self.assertIn("erofs", types, mounts)
        self.assertTrue(any(t.startswith("fuse") for t in types), mounts)
        # Stored as chunks (in pack files); none holds the code in clear; no
        # plain zip is kept.
        self.assertGreater(chunk_count(self.node.data_dir), 0)
        for path in pack_files(chunks_dir(self.node.data_dir)):
            with open(path, "rb") as f:
                content = f.read()
            self.assertNotIn(MARKER.encode(), content, path)
            self.assertNotIn(b"zip line one", content, path)
        for dirpath, _, names in os.walk(self.node.data_dir):
            for n in names:
                self.assertFalse(n.endswith(".zip"), os.path.join(dirpath, n))
        # GetFunction's Code.Location still returns the original zip.
        rc, got, err = self.node.aws("get-function", "--function-name", "zipfn")
        self.assertEqual(rc, 0, err)
        with urllib.request.urlopen(got["Code"]["Location"], timeout=30) as r:
            self.assertEqual(r.read(), data)
        self.assertEqual(got["Configuration"]["PackageType"], "Zip")
        # Metrics count the chunk reads.
        with urllib.request.urlopen(self.node.endpoint + "/metrics", timeout=10) as r:
            text = r.read().decode()
        self.assertRegex(text, r'nimbus_chunk_cache_reads_total\{tier="store"\} [1-9]')
        self.assertRegex(text, r"nimbus_code_zips_stored_total [1-9]")

    def test_2_dedup_per_account_and_garbage_collection(self):
        data = runtime_zip("shared zip")
        self.create_zip_function("dedup-a", data)
        after_first = chunk_count(self.node.data_dir)
        self.create_zip_function("dedup-b", data)
        self.assertEqual(chunk_count(self.node.data_dir), after_first)
        # Another account's copy is encrypted under its own secret (CS-1).
        self.create_zip_function("dedup-c", data, account=OTHER_ACCOUNT)
        after_other = chunk_count(self.node.data_dir)
        self.assertGreater(after_other, after_first)
        self.assertEqual(self.invoke("dedup-c", account=OTHER_ACCOUNT)["data_line"], "shared zip")
        # Deleting the functions frees their chunks.
        for name, account in (("dedup-a", DEV_ACCOUNT), ("dedup-b", DEV_ACCOUNT),
                              ("dedup-c", OTHER_ACCOUNT)):
            rc, _, err = self.node.aws("delete-function", "--function-name", name, account=account)
            self.assertEqual(rc, 0, err)
        deadline = time.time() + 20
        while time.time() < deadline and chunk_count(self.node.data_dir) >= after_first:
            time.sleep(0.2)
        self.assertLess(chunk_count(self.node.data_dir), after_first)

    def test_3_update_function_code_uses_the_new_image(self):
        self.create_zip_function("upd", runtime_zip("before"))
        self.assertEqual(self.invoke("upd")["data_line"], "before")
        path = self.write("upd2.zip", runtime_zip("after"))
        rc, cfg, err = self.node.aws("update-function-code", "--function-name", "upd",
                                     "--zip-file", "fileb://" + path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.invoke("upd")["data_line"], "after")

    # -- container images ------------------------------------------------------------

    def test_4_image_function_from_a_docker_save_archive(self):
        archive, digest = docker_save_archive("demo:v1", self.static_runtime, "from layer two")
        path = self.write("demo.tar", archive)
        code, body = self.push("demo:v1", path)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["imageDigest"], digest)
        self.assertEqual(body["repository"], "demo")
        self.assertEqual(body["tag"], "v1")
        rc, cfg, err = self.node.aws("create-function", "--function-name", "imgfn",
                                     "--package-type", "Image", "--code", "ImageUri=demo:v1",
                                     "--role", ROLE, "--environment", "Variables={STAGE=test}")
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["PackageType"], "Image")
        self.assertNotIn("Runtime", cfg)
        self.assertEqual(cfg["CodeSha256"], digest.split(":")[1])
        body = self.invoke("imgfn")
        self.assertEqual(body["cwd"], "/app")
        self.assertEqual(body["greeting"], "hello-from-image")
        self.assertEqual(body["stage"], "test")
        self.assertEqual(body["data_line"], "from layer two")
        self.assertFalse(body["gone"])
        rc, got, err = self.node.aws("get-function", "--function-name", "imgfn")
        self.assertEqual(rc, 0, err)
        self.assertEqual(got["Code"]["RepositoryType"], "ECR")
        self.assertTrue(got["Code"]["ResolvedImageUri"].endswith("demo@" + digest),
                        got["Code"])
        # ImageConfig overrides the image's WORKDIR; the digest form of the URI works.
        rc, cfg, err = self.node.aws("create-function", "--function-name", "imgfn2",
                                     "--package-type", "Image", "--code", "ImageUri=demo@" + digest,
                                     "--role", ROLE, "--image-config", "WorkingDirectory=/bin")
        self.assertEqual(rc, 0, err)
        self.assertEqual(cfg["ImageConfigResponse"]["ImageConfig"]["WorkingDirectory"], "/bin")
        body = self.invoke("imgfn2")
        self.assertEqual(body["cwd"], "/bin")
        self.assertFalse(body["data"])
        # A working directory or entry point the image does not have: AWS's error names.
        for name, config, error_type in (
                ("imgbadwd", "WorkingDirectory=/nonexistent", "Runtime.InvalidWorkingDirectory"),
                ("imgbadep", "EntryPoint=/bin/missing", "Runtime.InvalidEntrypoint")):
            rc, _, err = self.node.aws("create-function", "--function-name", name,
                                       "--package-type", "Image", "--code", "ImageUri=demo:v1",
                                       "--role", ROLE, "--image-config", config)
            self.assertEqual(rc, 0, err)
            out = os.path.join(self.tmp.path, "bad.json")
            rc, meta, err = self.node.aws("invoke", "--function-name", name, out)
            self.assertEqual(rc, 0, err)
            self.assertEqual(meta["FunctionError"], "Unhandled")
            with open(out) as f:
                self.assertEqual(json.load(f)["errorType"], error_type)
        # A signed payload hash is checked against the upload.
        signed = hashlib.sha256(archive).hexdigest()
        code, body = self.push("demo:v2", path, payload_hash=signed)
        self.assertEqual(code, 200, body)
        code, body = self.push("demo:v3", path, payload_hash="0" * 64)
        self.assertIn(code, (400, 403), body)
        self.assertEqual(body["__type"], "InvalidSignatureException", body)

    def test_5_bad_pushes_and_image_uris_are_refused(self):
        garbage = self.write("garbage.tar", b"this is not a tar archive" * 100)
        code, body = self.push("bad:v1", garbage)
        self.assertEqual(code, 400, body)
        self.assertEqual(body["__type"], "InvalidParameterValueException")
        archive, _ = docker_save_archive("demo:v1", self.static_runtime, "x")
        path = self.write("demo-ok.tar", archive)
        code, body = self.push("Bad_Name:v1", path)
        self.assertEqual(code, 400, body)
        code, body = self.push("demo:v1", path, secret="wrong-secret")
        self.assertEqual(code, 403, body)
        rc, _, err = self.node.aws("create-function", "--function-name", "noimg",
                                   "--package-type", "Image", "--code", "ImageUri=missing:v1",
                                   "--role", ROLE)
        self.assertNotEqual(rc, 0)
        self.assertEqual(error_name(err), "InvalidParameterValueException", err)
        rc, _, err = self.node.aws("create-function", "--function-name", "noimg",
                                   "--package-type", "Image", "--code", "ImageUri=demo:v1",
                                   "--runtime", "python3.11", "--role", ROLE)
        self.assertNotEqual(rc, 0)
        self.assertEqual(error_name(err), "InvalidParameterValueException", err)
        # Another account can not use this account's image.
        code, body = self.push("demo:v1", path)
        self.assertEqual(code, 200, body)
        rc, _, err = self.node.aws("create-function", "--function-name", "foreign",
                                   "--package-type", "Image", "--code", "ImageUri=demo:v1",
                                   "--role", ROLE, account=OTHER_ACCOUNT)
        self.assertNotEqual(rc, 0)
        self.assertEqual(error_name(err), "InvalidParameterValueException", err)
        # Nothing is left in the spool directory.
        spool = os.path.join(self.node.data_dir, "spool")
        self.assertEqual(os.listdir(spool) if os.path.isdir(spool) else [], [])

    def test_6_restart_and_kill_keep_code_and_clear_stale_mounts(self):
        self.create_zip_function("survivor", runtime_zip("survives"))
        archive, _ = docker_save_archive("keep:v1", self.static_runtime, "image survives")
        code, body = self.push("keep:v1", self.write("keep.tar", archive))
        self.assertEqual(code, 200, body)
        rc, _, err = self.node.aws("create-function", "--function-name", "imgkeep",
                                   "--package-type", "Image", "--code", "ImageUri=keep:v1",
                                   "--role", ROLE)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.invoke("survivor")["data_line"], "survives")
        self.assertEqual(self.invoke("imgkeep")["data_line"], "image survives")
        self.assertEqual(self.node.stop(), 0)
        self.assertEqual(node_mounts(self.node.data_dir), [])
        self.node.start()
        self.assertEqual(self.invoke("survivor")["data_line"], "survives")
        self.node.stop(sig=signal.SIGKILL)
        # A killed node leaves its mounts behind; the next start detaches them.
        self.node.start()
        self.assertEqual(self.invoke("imgkeep")["data_line"], "image survives")
        self.assertEqual(self.invoke("survivor")["data_line"], "survives")
        points = [p for p, _ in node_mounts(self.node.data_dir)]
        self.assertEqual(len(points), len(set(points)), points)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nimbusd", required=True)
    parser.add_argument("--test-runtime", required=True)
    parser.add_argument("--static-runtime", required=True)
    args, rest = parser.parse_known_args()
    NIMBUSD = os.path.abspath(args.nimbusd)
    TEST_RUNTIME = os.path.abspath(args.test_runtime)
    STATIC_RUNTIME = os.path.abspath(args.static_runtime)
    unittest.main(argv=[sys.argv[0], "-v"] + rest)
