"""STS `GetCallerIdentity` through the real Python SDK, and Tencent's own
endpoint names served by Palisade over HTTPS (docs/api.md, "Tools that
hard-wire Tencent's endpoint names"): the SDK's default endpoint
`sts.tencentcloudapi.com` and `vpc.ap-guangzhou.tencentcloudapi.com` on port
443, resolved to the test server by a patched `socket.getaddrinfo` (no DNS,
no /etc/hosts), the test CA appended to a copy of certifi's bundle, as an
operator appends it to the real one."""

import json
import os
import shutil
import socket
import subprocess
import sys

import certifi
import pytest
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sts.v20180813 import models as sts_models
from tencentcloud.sts.v20180813 import sts_client
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client

from palisade_api import REGION, Server, profile, typed


def identity(client):
    return typed(client, sts_models, "GetCallerIdentity", {})


def test_get_caller_identity_names_the_callers_account(server, fresh, admin):
    cred = credential.Credential(fresh.creds["SecretId"], fresh.creds["SecretKey"])
    me = identity(sts_client.StsClient(cred, REGION, profile(server.endpoint)))
    account = me["AccountId"]
    assert account == fresh.creds["AccountId"]
    assert me["UserId"] == me["PrincipalId"] == account
    assert me["Arn"] == f"qcs::cam::uin/{account}:uin/{account}" and me["Type"] == "RootAccount"
    theirs = identity(sts_client.StsClient(admin.cred, REGION, profile(server.endpoint)))
    assert theirs["AccountId"] != account


@pytest.fixture()
def tencent_names(tmp_path, monkeypatch):
    """A TLS server whose certificate names *.tencentcloudapi.com, and
    *.tencentcloudapi.com:443 resolving to it."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Palisade test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    (tmp_path / "san.ext").write_text(
        "subjectAltName=DNS:*.tencentcloudapi.com,DNS:*.ap-guangzhou.tencentcloudapi.com\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=tencentcloudapi.com",
            "-keyout", "key.pem", "-out", "req.csr")
    openssl("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "san.ext", "-out", "cert.pem")
    srv = Server(tmp_path / "data", args=["--tls-cert", str(tmp_path / "cert.pem"),
                                          "--tls-key", str(tmp_path / "key.pem")]).start()
    bundle = tmp_path / "cacert.pem"
    bundle.write_text(open(certifi.where()).read() + (tmp_path / "ca.pem").read_text())
    # The SDK verifies against certifi.where() whatever REQUESTS_CA_BUNDLE says.
    monkeypatch.setattr(certifi, "where", lambda: str(bundle))
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if str(host).endswith(".tencentcloudapi.com") and int(port) == 443:
            return real("127.0.0.1", srv.port, *args, **kwargs)
        if str(host).endswith(".tencentcloudapi.com"):
            raise socket.gaierror("only port 443 of Tencent's names is served here")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield srv
    srv.stop()


def test_tencent_endpoint_names_over_https(tencent_names):
    creds = tencent_names.admin_credentials()
    cred = credential.Credential(creds["SecretId"], creds["SecretKey"])
    # The SDK's own default: https://sts.tencentcloudapi.com, no endpoint set.
    me = identity(sts_client.StsClient(cred, REGION))
    assert me["AccountId"].startswith("acc-")
    prof = ClientProfile(httpProfile=HttpProfile(endpoint=f"vpc.{REGION}.tencentcloudapi.com"))
    vpc = vpc_client.VpcClient(cred, REGION, prof)
    g = typed(vpc, vpc_models, "CreateSecurityGroup", {"GroupName": "named", "GroupDescription": "by name"})
    sg = g["SecurityGroup"]["SecurityGroupId"]
    d = typed(vpc, vpc_models, "DescribeSecurityGroups", {"SecurityGroupIds": [sg]})
    assert d["TotalCount"] == 1
    # The default vpc endpoint, vpc.tencentcloudapi.com, the same way.
    d = typed(vpc_client.VpcClient(cred, REGION), vpc_models, "DescribeSecurityGroups", {})
    assert d["TotalCount"] == 1


def test_python_sdk_with_a_named_endpoint_and_a_port(server, fresh, monkeypatch):
    """A named endpoint with a port (`vpc.example.test:PORT`, the name
    resolving to the server) works with the Python SDK as an address does:
    the SDK signs `Host` with the port and the scope with its own service."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if str(host).endswith(".example.test"):
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    cred = fresh.cred
    vpc = vpc_client.VpcClient(cred, REGION, profile(f"vpc.example.test:{server.port}"))
    req = vpc_models.CreateSecurityGroupRequest()
    req.GroupName, req.GroupDescription = "named", "named endpoint"
    sg = vpc.CreateSecurityGroup(req).SecurityGroup.SecurityGroupId
    assert fresh.v("DescribeSecurityGroups", {"SecurityGroupIds": [sg]})["TotalCount"] == 1
    me = identity(sts_client.StsClient(cred, REGION, profile(f"sts.example.test:{server.port}")))
    assert me["AccountId"] == identity(sts_client.StsClient(cred, REGION, profile(server.endpoint)))["AccountId"]


# tccli in a child Python: Tencent's names on 443 go to the test server's
# port, and certifi's bundle is the copy with the test CA (what an operator
# does by appending the CA to the real one).
TCCLI_ON_TENCENT_NAMES = """
import socket, sys, certifi
port, bundle = int(sys.argv[1]), sys.argv[2]
real = socket.getaddrinfo
def getaddrinfo(host, p, *a, **k):
    if str(host).endswith(".tencentcloudapi.com") and int(p) == 443:
        return real("127.0.0.1", port, *a, **k)
    return real(host, p, *a, **k)
socket.getaddrinfo = getaddrinfo
certifi.where = lambda: bundle
from tccli.main import main
sys.argv = ["tccli"] + sys.argv[3:]
sys.exit(main())
"""


def test_tccli_with_tencent_names_over_https(tencent_names, tmp_path):
    """tccli with no --endpoint at all: its default `vpc.tencentcloudapi.com`
    over HTTPS reaches Palisade."""
    creds = tencent_names.admin_credentials()
    cmd = [sys.executable, "-c", TCCLI_ON_TENCENT_NAMES, str(tencent_names.port), str(tmp_path / "cacert.pem"),
           "vpc", "CreateSecurityGroup", "--GroupName", "tccli", "--GroupDescription", "over https",
           "--secretId", creds["SecretId"], "--secretKey", creds["SecretKey"], "--region", REGION]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HOME=str(tmp_path)), timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    assert json.loads(p.stdout)["SecurityGroup"]["SecurityGroupId"].startswith("sg-")
