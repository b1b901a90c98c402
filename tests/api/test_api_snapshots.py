"""Tencent's security-group snapshot actions through the real tccli and the
SDK (issue 19, item 4): create a snapshot policy, attach a group, change the
group, read the snapshot's content, resume it, and see the old rules back
with a new Version; and the documented errors."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from palisade_api import error_code

TCCLI = shutil.which("tccli") or str(Path(sys.executable).with_name("tccli"))
SSH = {"Protocol": "TCP", "Port": "22", "CidrBlock": "203.0.113.0/24", "Action": "ACCEPT", "PolicyDescription": "ssh"}
OUT = {"Protocol": "ALL", "Port": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}
WEB = {"Protocol": "TCP", "Port": "443", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT", "PolicyDescription": "web"}


@pytest.fixture()
def tccli(server, fresh, tmp_path):
    creds = fresh.creds
    env = dict(os.environ, HOME=str(tmp_path))

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


def brief(rules):
    return [(r["Protocol"], r["Port"], r["CidrBlock"]) for r in rules]


def test_tccli_snapshot_attach_change_read_and_resume(tccli, fresh):
    sg = tccli("vpc", "CreateSecurityGroup", "--GroupName", "snap", "--GroupDescription", "d")["SecurityGroup"]["SecurityGroupId"]
    tccli("vpc", "ModifySecurityGroupPolicies", "--SecurityGroupId", sg,
          "--SecurityGroupPolicySet", json.dumps({"Ingress": [SSH], "Egress": [OUT]}))
    made = tccli("vpc", "CreateSnapshotPolicies", "--SnapshotPolicies", json.dumps([{
        "SnapshotPolicyName": "every-change", "BackupType": "operate", "KeepTime": 30,
        "CreateNewCos": False, "CosRegion": "ap-guangzhou", "CosBucket": "unused"}]))["SnapshotPolicies"]
    pid = made[0]["SnapshotPolicyId"]
    assert pid.startswith("sspolicy-") and made[0]["Enable"] is True and made[0]["CreateTime"]
    d = tccli("vpc", "DescribeSnapshotPolicies", "--SnapshotPolicyIds", json.dumps([pid]))
    assert d["TotalCount"] == 1 and d["SnapshotPolicySet"][0]["SnapshotPolicyName"] == "every-change"
    assert d["SnapshotPolicySet"][0]["KeepTime"] == 30 and d["SnapshotPolicySet"][0]["BackupType"] == "operate"

    tccli("vpc", "AttachSnapshotInstances", "--SnapshotPolicyId", pid, "--Instances",
          json.dumps([{"InstanceId": sg, "InstanceType": "securitygroup", "InstanceRegion": "ap-guangzhou"}]))
    a = tccli("vpc", "DescribeSnapshotAttachedInstances", "--SnapshotPolicyId", pid)
    assert a["TotalCount"] == 1 and a["InstanceSet"][0]["InstanceId"] == sg
    assert a["InstanceSet"][0]["InstanceType"] == "securitygroup" and a["InstanceSet"][0]["SnapshotPolicyId"] == pid

    # The change: SSH gone, the web opened.
    tccli("vpc", "ModifySecurityGroupPolicies", "--SecurityGroupId", sg,
          "--SecurityGroupPolicySet", json.dumps({"Ingress": [WEB], "Egress": [OUT]}))
    assert tccli("vpc", "DescribeSecurityGroupPolicies", "--SecurityGroupId", sg)["SecurityGroupPolicySet"]["Version"] == "2"

    files = tccli("vpc", "DescribeSnapshotFiles", "--BusinessType", "securitygroup", "--InstanceId", sg,
                  "--StartDate", "2000-01-01 00:00:00", "--EndDate", "2999-12-31 23:59:59")
    assert files["TotalCount"] == 2
    newest, oldest = files["SnapshotFileSet"]
    assert {newest["SnapshotPolicyId"], oldest["SnapshotPolicyId"]} == {pid}
    assert newest["InstanceId"] == sg and newest["BackupTime"] and newest["Operator"]
    old_file = oldest["SnapshotFileId"]

    c = tccli("vpc", "DescribeSgSnapshotFileContent", "--SnapshotPolicyId", pid,
              "--SnapshotFileId", old_file, "--SecurityGroupId", sg)
    assert c["InstanceId"] == sg and c["SnapshotFileId"] == old_file and c["SnapshotPolicyId"] == pid
    assert brief(c["BackupData"]) == [("TCP", "22", "203.0.113.0/24"), ("ALL", "ALL", "0.0.0.0/0")]
    assert brief(c["OriginalData"]) == [("TCP", "443", "0.0.0.0/0"), ("ALL", "ALL", "0.0.0.0/0")]

    tccli("vpc", "ResumeSnapshotInstance", "--SnapshotPolicyId", pid, "--SnapshotFileId", old_file, "--InstanceId", sg)
    s = tccli("vpc", "DescribeSecurityGroupPolicies", "--SecurityGroupId", sg)["SecurityGroupPolicySet"]
    assert s["Version"] == "3", "a resume is a new version"
    assert brief(s["Ingress"]) == [("TCP", "22", "203.0.113.0/24")] and s["Ingress"][0]["PolicyDescription"] == "ssh"
    assert brief(s["Egress"]) == [("ALL", "ALL", "0.0.0.0/0")]
    # The resume is itself a new snapshot file.
    files = tccli("vpc", "DescribeSnapshotFiles", "--BusinessType", "securitygroup", "--InstanceId", sg,
                  "--StartDate", "2000-01-01 00:00:00", "--EndDate", "2999-12-31 23:59:59")
    assert files["TotalCount"] == 3

    # Errors as documented.
    out = tccli("vpc", "DescribeSgSnapshotFileContent", "--SnapshotPolicyId", pid,
                "--SnapshotFileId", "ssfile-nothere0v1", "--SecurityGroupId", sg, ok=False)
    assert "ResourceNotFound" in out
    out = tccli("vpc", "AttachSnapshotInstances", "--SnapshotPolicyId", pid, "--Instances",
                json.dumps([{"InstanceId": sg, "InstanceType": "securitygroup", "InstanceRegion": "ap-guangzhou"}]), ok=False)
    assert "InvalidParameterValue.Duplicate" in out
    tccli("vpc", "DetachSnapshotInstances", "--SnapshotPolicyId", pid, "--Instances",
          json.dumps([{"InstanceId": sg, "InstanceType": "securitygroup", "InstanceRegion": "ap-guangzhou"}]))
    assert tccli("vpc", "DescribeSnapshotAttachedInstances", "--SnapshotPolicyId", pid)["TotalCount"] == 0
    tccli("vpc", "DeleteSnapshotPolicies", "--SnapshotPolicyIds", json.dumps([pid]))
    assert tccli("vpc", "DescribeSnapshotPolicies")["TotalCount"] == 0


def test_sdk_snapshot_policy_modify_enable_disable_and_errors(fresh):
    sg = fresh.group("s")
    base = {"SnapshotPolicyName": "p", "BackupType": "time", "KeepTime": 7, "CreateNewCos": False,
            "CosRegion": "ap-guangzhou", "CosBucket": "b",
            "BackupPolicies": [{"BackupDay": "monday", "BackupTime": "03:00:00"}]}
    pid = fresh.v("CreateSnapshotPolicies", {"SnapshotPolicies": [base]})["SnapshotPolicies"][0]["SnapshotPolicyId"]
    fresh.v("ModifySnapshotPolicies", {"SnapshotPoliciesInfo": [{"SnapshotPolicyId": pid, "SnapshotPolicyName": "renamed", "KeepTime": 9}]})
    p = fresh.v("DescribeSnapshotPolicies", {"Filters": [{"Name": "snapshot-policy-name", "Values": ["renamed"]}]})["SnapshotPolicySet"][0]
    assert (p["SnapshotPolicyId"], p["KeepTime"], p["BackupPolicies"]) == (pid, 9, [{"BackupDay": "monday", "BackupTime": "03:00:00"}])
    fresh.v("DisableSnapshotPolicies", {"SnapshotPolicyIds": [pid]})
    assert fresh.v("DescribeSnapshotPolicies", {"SnapshotPolicyIds": [pid]})["SnapshotPolicySet"][0]["Enable"] is False
    fresh.v("AttachSnapshotInstances", {"SnapshotPolicyId": pid, "Instances": [
        {"InstanceId": sg, "InstanceType": "securitygroup", "InstanceRegion": "ap-guangzhou"}]})
    # Disabled: a change makes no file (the attach-time version stays one).
    fresh.v("ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [SSH]}})
    window = {"BusinessType": "securitygroup", "InstanceId": sg, "StartDate": "2000-01-01 00:00:00", "EndDate": "2999-12-31 23:59:59"}
    assert fresh.v("DescribeSnapshotFiles", window)["TotalCount"] == 1
    time.sleep(1.1)  # times have one-second resolution
    fresh.v("EnableSnapshotPolicies", {"SnapshotPolicyIds": [pid]})
    time.sleep(1.1)
    fresh.v("ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [WEB]}})
    assert fresh.v("DescribeSnapshotFiles", window)["TotalCount"] == 2

    bad = dict(base, KeepTime=400)
    assert error_code(fresh.v, "CreateSnapshotPolicies", {"SnapshotPolicies": [bad]}) == "InvalidParameterValue.Range"
    bad = dict(base, BackupType="hourly")
    assert error_code(fresh.v, "CreateSnapshotPolicies", {"SnapshotPolicies": [bad]}) == "InvalidParameterValue.Malformed"
    bad = dict(base, BackupPolicies=[{"BackupDay": "someday", "BackupTime": "03:00:00"}])
    assert error_code(fresh.v, "CreateSnapshotPolicies", {"SnapshotPolicies": [bad]}) == "InvalidParameterValue.Malformed"
    assert error_code(fresh.v, "DescribeSnapshotPolicies", {"SnapshotPolicyIds": ["sspolicy-x"], "Filters": [
        {"Name": "snapshot-policy-id", "Values": ["x"]}]}) == "InvalidParameter.Coexist"
    assert error_code(fresh.v, "EnableSnapshotPolicies", {"SnapshotPolicyIds": ["sspolicy-nothere1"]}) == "ResourceNotFound"
    assert error_code(fresh.v, "AttachSnapshotInstances", {"SnapshotPolicyId": pid, "Instances": [
        {"InstanceId": sg, "InstanceType": "cvm", "InstanceRegion": "ap-guangzhou"}]}) == "InvalidParameterValue"
    assert error_code(fresh.v, "AttachSnapshotInstances", {"SnapshotPolicyId": pid, "Instances": [
        {"InstanceId": "sg-nothere1", "InstanceType": "securitygroup", "InstanceRegion": "ap-guangzhou"}]}) == "ResourceNotFound"
    assert error_code(fresh.v, "DescribeSnapshotFiles", dict(window, BusinessType="cvm")) == "InvalidParameterValue"
    assert error_code(fresh.v, "DescribeSnapshotFiles", dict(window, StartDate="yesterday")) == "InvalidParameterValue.Malformed"
    assert error_code(fresh.v, "ResumeSnapshotInstance", {"SnapshotPolicyId": pid, "SnapshotFileId": "ssfile-x", "InstanceId": sg}) == "ResourceNotFound"
