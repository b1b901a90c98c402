"""The real tccli against Palisade (`--endpoint http://127.0.0.1:PORT`):
group create / describe, policy create / describe / delete, and an error."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TCCLI = shutil.which("tccli") or str(Path(sys.executable).with_name("tccli"))


@pytest.fixture()
def tccli(server, fresh, tmp_path):
    creds = fresh.creds
    env = dict(os.environ, HOME=str(tmp_path))  # no ~/.tccli profile needed

    def run(service, action, *args, ok=True):
        cmd = [TCCLI, service, action, *args,
               "--secretId", creds["SecretId"], "--secretKey", creds["SecretKey"],
               "--region", "ap-guangzhou", "--endpoint", f"http://{server.endpoint}"]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        if ok:
            assert p.returncode == 0, p.stderr + p.stdout
            return json.loads(p.stdout)
        assert p.returncode != 0
        return p.stdout + p.stderr

    if not Path(TCCLI).exists():
        pytest.fail("tccli is not installed (pip install tccli)")
    return run


def test_tccli_group_and_policy_lifecycle(tccli):
    g = tccli("vpc", "CreateSecurityGroup", "--GroupName", "cli", "--GroupDescription", "made by tccli")["SecurityGroup"]
    sg = g["SecurityGroupId"]
    assert g["SecurityGroupName"] == "cli" and g["SecurityGroupDesc"] == "made by tccli" and g["ProjectId"] == "0"
    d = tccli("vpc", "DescribeSecurityGroups", "--SecurityGroupIds", json.dumps([sg]))
    assert d["TotalCount"] == 1 and d["SecurityGroupSet"][0]["SecurityGroupId"] == sg
    tccli("vpc", "CreateSecurityGroupPolicies", "--SecurityGroupId", sg, "--SecurityGroupPolicySet",
          json.dumps({"Ingress": [{"Protocol": "TCP", "Port": "30000-32768", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT", "PolicyDescription": "NodePort"}]}))
    tccli("vpc", "CreateSecurityGroupPolicies", "--SecurityGroupId", sg, "--SecurityGroupPolicySet",
          json.dumps({"Ingress": [{"Protocol": "ICMP", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT", "PolicyIndex": 0}]}))
    s = tccli("vpc", "DescribeSecurityGroupPolicies", "--SecurityGroupId", sg)["SecurityGroupPolicySet"]
    assert s["Version"] == "2"
    assert [(r["PolicyIndex"], r["Protocol"], r["Port"], r["CidrBlock"], r["Action"], r["PolicyDescription"]) for r in s["Ingress"]] == [
        (0, "ICMP", "ALL", "0.0.0.0/0", "ACCEPT", ""),
        (1, "TCP", "30000-32768", "0.0.0.0/0", "ACCEPT", "NodePort"),
    ]
    out = tccli("vpc", "CreateSecurityGroupPolicies", "--SecurityGroupId", sg, "--SecurityGroupPolicySet",
                json.dumps({"Ingress": [{"Protocol": "TCP", "Port": "70000", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]}), ok=False)
    assert "InvalidParameterValue.Range" in out
    tccli("vpc", "DeleteSecurityGroupPolicies", "--SecurityGroupId", sg, "--SecurityGroupPolicySet",
          json.dumps({"Ingress": [{"PolicyIndex": 0}]}))
    s = tccli("vpc", "DescribeSecurityGroupPolicies", "--SecurityGroupId", sg)["SecurityGroupPolicySet"]
    assert [r["Protocol"] for r in s["Ingress"]] == ["TCP"] and s["Version"] == "3"
    tccli("vpc", "DeleteSecurityGroup", "--SecurityGroupId", sg)
    assert tccli("vpc", "DescribeSecurityGroups")["TotalCount"] == 0


# tccli in a child Python whose name lookups send *.example.test to the
# server (no DNS, no /etc/hosts), then tccli's own entry point.
RESOLVING_TCCLI = """
import socket, sys
real = socket.getaddrinfo
def getaddrinfo(host, port, *a, **k):
    if str(host).endswith(".example.test"):
        host = "127.0.0.1"
    return real(host, port, *a, **k)
socket.getaddrinfo = getaddrinfo
from tccli.main import main
sys.argv = ["tccli"] + sys.argv[1:]
sys.exit(main())
"""


def test_tccli_with_a_named_endpoint_and_a_port(server, fresh, tmp_path):
    """`--endpoint http://vpc.example.test:PORT`, the name resolving to the
    server: tccli works as it does with an address."""
    creds = fresh.creds
    port = server.endpoint.rsplit(":", 1)[1]
    cmd = [sys.executable, "-c", RESOLVING_TCCLI, "vpc", "CreateSecurityGroup",
           "--GroupName", "named", "--GroupDescription", "named endpoint",
           "--secretId", creds["SecretId"], "--secretKey", creds["SecretKey"],
           "--region", "ap-guangzhou", "--endpoint", f"http://vpc.example.test:{port}"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HOME=str(tmp_path)), timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    sg = json.loads(p.stdout)["SecurityGroup"]["SecurityGroupId"]
    assert fresh.v("DescribeSecurityGroups", {"SecurityGroupIds": [sg]})["TotalCount"] == 1
