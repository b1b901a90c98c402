"""`palisade serve --strict-signatures` with real clients: the Tencent SDK
(which signs only content-type;host) is refused with
AuthFailure.InvalidAuthorization; a request that signs x-tc-action is
accepted once, and its replay or the same signature with another action is
refused with AuthFailure.SignatureFailure; palisade's own CLI, which signs
x-tc-action, works. Also: wrong methods and paths get the Tencent envelope."""

import hashlib
import hmac
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from palisade_api import BIN, Api, Server, error_code

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def strict():
    tmp = tempfile.mkdtemp(prefix="palisade-strict-")
    srv = Server(Path(tmp) / "data", args=["--strict-signatures"]).start()
    yield srv
    srv.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def sign_action(creds, service, host, action, body, ts):
    """TC3 over content-type;host;x-tc-action, from the spec (not the SDK)."""
    date = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")
    signed = "content-type;host;x-tc-action"
    canonical = "POST\n/\n\ncontent-type:application/json\nhost:%s\nx-tc-action:%s\n\n%s\n%s" % (
        host, action.lower(), signed, hashlib.sha256(body).hexdigest())
    scope = f"{date}/{service}/tc3_request"
    sts = "TC3-HMAC-SHA256\n%d\n%s\n%s" % (ts, scope, hashlib.sha256(canonical.encode()).hexdigest())
    k = lambda key, msg: hmac.new(key, msg.encode(), hashlib.sha256).digest()
    key = k(k(k(("TC3" + creds["SecretKey"]).encode(), date), service), "tc3_request")
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    return f"TC3-HMAC-SHA256 Credential={creds['SecretId']}/{scope}, SignedHeaders={signed}, Signature={sig}"


def post(server, headers, body):
    req = urllib.request.Request(f"http://{server.endpoint}/", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200 and resp.headers.get("Content-Type") == "application/json"
        return json.loads(resp.read())["Response"]


def signed(server, creds, action, body, ts=None, service="vpc"):
    ts = int(time.time()) if ts is None else ts
    return {
        "Content-Type": "application/json",
        "Host": server.endpoint,
        "X-TC-Action": action,
        "X-TC-Version": "2017-03-12",
        "X-TC-Timestamp": str(ts),
        "Authorization": sign_action(creds, service, server.endpoint, action, body, ts),
    }


def test_the_sdk_is_refused_in_strict_mode(strict):
    api = Api(strict, strict.admin_credentials())
    assert error_code(api.v, "DescribeSecurityGroups") == "AuthFailure.InvalidAuthorization"
    assert error_code(api.v, "CreateSecurityGroup", {"GroupName": "x", "GroupDescription": "d"}) \
        == "AuthFailure.InvalidAuthorization"


def test_signing_the_action_works_once(strict):
    creds = strict.admin_credentials()
    body = json.dumps({"GroupName": "strict", "GroupDescription": "d"}).encode()
    headers = signed(strict, creds, "CreateSecurityGroup", body)
    sg = post(strict, headers, body)["SecurityGroup"]["SecurityGroupId"]
    # The same request again (a replay inside the 300 s window): refused.
    r = post(strict, headers, body)
    assert r["Error"]["Code"] == "AuthFailure.SignatureFailure", r
    # The captured create, same body and signature, sent as another action
    # that accepts that body: refused.
    swapped = dict(headers, **{"X-TC-Action": "CreateSecurityGroupWithPolicies"})
    r = post(strict, swapped, body)
    assert r["Error"]["Code"] == "AuthFailure.SignatureFailure", r
    # Exactly one group was created.
    listing = json.dumps({"Filters": [{"Name": "security-group-name", "Values": ["strict"]}]}).encode()
    r = post(strict, signed(strict, creds, "DescribeSecurityGroups", listing), listing)
    assert [g["SecurityGroupId"] for g in r["SecurityGroupSet"]] == [sg]


def test_the_palisade_cli_works_in_strict_mode(strict, tmp_path):
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps(strict.admin_credentials()))
    url = f"http://{strict.endpoint}"
    run = lambda *args: subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)
    out = run("apply", "--server", url, "--credentials", str(creds), "--auto-approve",
              str(REPO / "examples" / "tke-cluster.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr
    out = run("export", "--server", url, "--credentials", str(creds))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sg-" in out.stdout and "tke-node" in out.stdout


@pytest.mark.parametrize("method,path", [("GET", "/"), ("PUT", "/"), ("DELETE", "/"), ("POST", "/v3"), ("GET", "/index.html")])
def test_wrong_methods_and_paths_get_the_envelope(server, method, path):
    req = urllib.request.Request(f"http://{server.endpoint}{path}", data=b"{}" if method != "GET" else None, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers.get("Content-Type") == "application/json"
        r = json.loads(resp.read())["Response"]
    assert r["Error"]["Code"] == "UnsupportedProtocol" and r["Error"]["Message"]
    assert r["RequestId"]
