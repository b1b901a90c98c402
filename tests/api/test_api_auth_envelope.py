"""The Tencent envelope and TC3 authentication: every AuthFailure code, the
exact error Content-Type, InvalidAction, NoSuchVersion, UnknownParameter, the
10 MB body limit, and /metrics."""

import hashlib
import hmac
import json
import time
import urllib.request
from datetime import datetime, timezone
from unittest import mock

from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.vpc.v20170312 import vpc_client

from palisade_api import REGION, Api, error_code, profile


def sign(secret_id, secret_key, service, host, body, ts, content_type="application/json"):
    """TC3-HMAC-SHA256, written out from the spec (independent of the SDK)."""
    date = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")
    canonical = "POST\n/\n\ncontent-type:%s\nhost:%s\n\ncontent-type;host\n%s" % (
        content_type, host, hashlib.sha256(body).hexdigest())
    scope = f"{date}/{service}/tc3_request"
    sts = "TC3-HMAC-SHA256\n%d\n%s\n%s" % (ts, scope, hashlib.sha256(canonical.encode()).hexdigest())
    k = lambda key, msg: hmac.new(key, msg.encode(), hashlib.sha256).digest()
    sig = hmac.new(k(k(k(("TC3" + secret_key).encode(), date), service), "tc3_request"), sts.encode(), hashlib.sha256).hexdigest()
    return f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={sig}"


def raw(server, action, body=b"{}", version="2017-03-12", service="vpc", creds=None, auth=None, ts=None, host=None):
    creds = creds or server.admin_credentials()
    ts = int(time.time()) if ts is None else ts
    host = host or server.endpoint
    headers = {
        "Content-Type": "application/json",
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Version": version,
        "X-TC-Timestamp": str(ts),
        "X-TC-Region": REGION,
        "Authorization": auth if auth is not None else sign(creds["SecretId"], creds["SecretKey"], service, host, body, ts),
    }
    req = urllib.request.Request(f"http://{server.endpoint}/", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, resp.headers.get("Content-Type"), json.loads(resp.read())["Response"]


def test_independent_signer_succeeds_and_envelope_shape(server):
    status, ctype, r = raw(server, "DescribeSecurityGroupLimits")
    assert status == 200 and ctype == "application/json"
    assert set(r) == {"SecurityGroupLimitSet", "RequestId"}


def test_errors_are_http_200_with_exact_content_type(server):
    status, ctype, r = raw(server, "NoSuchThing")
    assert status == 200 and ctype == "application/json"
    assert r["Error"]["Code"] == "InvalidAction" and r["RequestId"]
    assert set(r) == {"Error", "RequestId"} and set(r["Error"]) == {"Code", "Message"}


def test_auth_failures(server, admin):
    creds = server.admin_credentials()
    bad_key = Api(server, {"SecretId": creds["SecretId"], "SecretKey": "x" * 32})
    assert error_code(bad_key.v, "DescribeSecurityGroups") == "AuthFailure.SignatureFailure"
    unknown = Api(server, {"SecretId": "AKID" + "0" * 32, "SecretKey": "x" * 32})
    assert error_code(unknown.v, "DescribeSecurityGroups") == "AuthFailure.SecretIdNotFound"
    with mock.patch("time.time", return_value=time.time() - 301):
        assert error_code(admin.v, "DescribeSecurityGroups") == "AuthFailure.SignatureExpire"
    with mock.patch("time.time", return_value=time.time() + 400):
        assert error_code(admin.v, "DescribeSecurityGroups") == "AuthFailure.SignatureExpire"
    for auth in ["", "Basic abc", "TC3-HMAC-SHA256 Credential=x, Signature=y"]:
        _, ctype, r = raw(server, "DescribeSecurityGroups", auth=auth)
        assert ctype == "application/json" and r["Error"]["Code"] == "AuthFailure.InvalidAuthorization", auth
    # Tampered body: the signature covers the payload.
    ts = int(time.time())
    body = b'{"GroupName":"a","GroupDescription":"b"}'
    good = sign(creds["SecretId"], creds["SecretKey"], "vpc", server.endpoint, body, ts)
    _, _, r = raw(server, "CreateSecurityGroup", body=body.replace(b'"a"', b'"z"'), auth=good, ts=ts)
    assert r["Error"]["Code"] == "AuthFailure.SignatureFailure"
    # tccli signs "Host: http://127.0.0.1:PORT" verbatim: raw values are verified.
    _, _, r = raw(server, "DescribeSecurityGroupLimits", host=f"http://{server.endpoint}")
    assert "Error" not in r


def test_action_version_and_parameter_errors(server, admin):
    assert error_code(admin.vpc.call_json, "FlyToTheMoon", {}) == "InvalidAction"
    assert error_code(admin.pal.call_json, "DescribeSecurityGroups", {}) == "InvalidAction"
    old = CommonClient("vpc", "2016-01-01", admin.cred, REGION, profile(server.endpoint))
    assert error_code(old.call_json, "DescribeSecurityGroups", {}) == "NoSuchVersion"
    assert error_code(admin.vpc.call_json, "DescribeSecurityGroups", {"Colour": "red"}) == "UnknownParameter"
    assert error_code(admin.vpc.call_json, "DescribeSecurityGroups", {"Limit": "many"}) == "InvalidParameterValue.Malformed"
    assert error_code(admin.vpc.call_json, "DescribeSecurityGroups", {"SecurityGroupIds": "sg-12345678"}) == "InvalidParameter"


def test_body_over_10_mb_is_refused(server):
    body = json.dumps({"GroupName": "big", "GroupDescription": "x" * (10 * 1024 * 1024)}).encode()
    _, ctype, r = raw(server, "CreateSecurityGroup", body=body)
    assert ctype == "application/json" and r["Error"]["Code"] == "RequestSizeLimitExceeded"


def test_metrics(server, admin):
    admin.v("DescribeSecurityGroupLimits")
    error_code(admin.vpc.call_json, "Made-Up-Action-1234", {})
    with urllib.request.urlopen(f"http://{server.endpoint}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'palisade_api_requests_total{service="vpc",action="DescribeSecurityGroupLimits",code="OK"}' in text
    assert "palisade_api_request_duration_seconds_bucket" in text
    assert "palisade_store_revision " in text
    # Unknown actions are counted under one label, not one each.
    assert "Made-Up-Action-1234" not in text
    assert 'palisade_api_requests_total{service="unknown",action="unknown",code="InvalidAction"}' in text
