"""Tencent's official Node.js SDK (tests/node, pinned in its package.json;
scripts/test.sh installs it) against Palisade, configured as docs/api.md
shows: the endpoint as an address and port (the SDK then signs the service
`127` and the host without its port), and as `vpc.example.test:PORT`, the
name resolved to the server by Node's own lookup hook (no DNS, no
/etc/hosts)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from palisade_api import Server

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
NODE = shutil.which("node")


@pytest.fixture()
def node_sdk(server, fresh):
    if NODE is None:
        pytest.skip("node is not installed: the Node.js SDK test needs node (v20 used)")
    if not (NODE_DIR / "node_modules" / "tencentcloud-sdk-nodejs-common").is_dir():
        pytest.fail("the Node.js SDK is not installed: run `npm ci` in tests/node (scripts/test.sh does)")
    port = server.endpoint.rsplit(":", 1)[1]

    def run(host, named=False):
        env = dict(os.environ,
                   PALISADE_SECRET_ID=fresh.creds["SecretId"],
                   PALISADE_SECRET_KEY=fresh.creds["SecretKey"],
                   PALISADE_HOST=host)
        if named:
            env.update(PALISADE_NAMED="1", PALISADE_RESOLVE="127.0.0.1")
        p = subprocess.run([NODE, str(NODE_DIR / "sdk_driver.js")], capture_output=True, text=True,
                           env=env, timeout=120)
        assert p.returncode == 0, p.stderr + p.stdout
        return json.loads(p.stdout)

    run.port = port
    return run


def check(out, fresh):
    assert out["SecurityGroupId"].startswith("sg-")
    assert [(r["Protocol"], r["Port"], r["CidrBlock"], r["Action"], r["PolicyDescription"]) for r in out["Ingress"]] == [
        ("TCP", "443", "10.0.0.0/8", "ACCEPT", "https")]
    assert out["TotalCount"] == 0
    assert out["AccountId"].startswith("acc-")
    # An error answer reaches the SDK as its code.
    assert out["Error"] == "ResourceNotFound", out


def test_node_sdk_with_an_address_endpoint(node_sdk, fresh):
    out = node_sdk(f"127.0.0.1:{node_sdk.port}")
    check(out, fresh)


def test_node_sdk_with_a_named_endpoint_and_a_port(node_sdk, fresh):
    out = node_sdk(f"example.test:{node_sdk.port}", named=True)
    check(out, fresh)


def test_node_sdk_with_tencent_names_over_https(tmp_path, fresh):
    """docs/api.md, "Tools that hard-wire Tencent's endpoint names": the
    Node.js SDK with Tencent's own endpoints (`vpc.tencentcloudapi.com`,
    `cvm.`, `sts.`, port 443) resolved to Palisade by Node's lookup hook, and
    Palisade's private CA trusted through NODE_EXTRA_CA_CERTS. Listening on
    443 needs root, as CI has."""
    if NODE is None:
        pytest.skip("node is not installed: the Node.js SDK test needs node (v20 used)")
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    if os.geteuid() != 0:
        pytest.skip("listening on port 443 needs root")
    if not (NODE_DIR / "node_modules" / "tencentcloud-sdk-nodejs-common").is_dir():
        pytest.fail("the Node.js SDK is not installed: run `npm ci` in tests/node (scripts/test.sh does)")

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Palisade test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    (tmp_path / "san.ext").write_text("subjectAltName=DNS:*.tencentcloudapi.com\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=tencentcloudapi.com",
            "-keyout", "key.pem", "-out", "req.csr")
    openssl("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "san.ext", "-out", "cert.pem")
    srv = Server(tmp_path / "data", port=443, args=["--tls-cert", str(tmp_path / "cert.pem"),
                                                     "--tls-key", str(tmp_path / "key.pem")]).start()
    try:
        creds = srv.admin_credentials()
        env = dict(os.environ, PALISADE_SECRET_ID=creds["SecretId"], PALISADE_SECRET_KEY=creds["SecretKey"],
                   PALISADE_HOST="tencentcloudapi.com", PALISADE_NAMED="1", PALISADE_RESOLVE="127.0.0.1",
                   PALISADE_TLS="1", NODE_EXTRA_CA_CERTS=str(tmp_path / "ca.pem"))
        p = subprocess.run([NODE, str(NODE_DIR / "sdk_driver.js")], capture_output=True, text=True,
                           env=env, timeout=120)
        assert p.returncode == 0, p.stderr + p.stdout
        check(json.loads(p.stdout), fresh)
        # Without the CA, the same call fails on the certificate.
        env.pop("NODE_EXTRA_CA_CERTS")
        p = subprocess.run([NODE, str(NODE_DIR / "sdk_driver.js")], capture_output=True, text=True,
                           env=env, timeout=120)
        assert p.returncode != 0 and "certificate" in (p.stderr + p.stdout).lower(), p.stderr + p.stdout
    finally:
        srv.stop()
