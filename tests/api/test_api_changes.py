"""Commit-confirmed changes, history and rollback (issue 19, items 3 and 4).

A change started with `StartConfirmedChange` (or `palisade apply
--confirm-within`) reverts at its deadline unless `ConfirmChange` arrives
first, even when the server is killed with SIGKILL inside the window; a
confirmed change stays; a confirmation after the deadline is an error.
`palisade history` / `rollback` show and restore kept versions."""

import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from palisade_api import BIN, PG_BASE, Api, Server, error_code, scratch_database

RULE_A = {"Protocol": "TCP", "Port": "22", "CidrBlock": "203.0.113.0/24", "Action": "ACCEPT", "PolicyDescription": "ssh"}
RULE_B = {"Protocol": "TCP", "Port": "443", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT", "PolicyDescription": "web"}


@pytest.fixture()
def own():
    """A server of the test's own, which it may kill and restart."""
    tmp = tempfile.mkdtemp(prefix="palisade-changes-")
    srv = Server(Path(tmp) / "data").start()
    yield srv
    srv.stop()


def rules(api, sg):
    s = api.rules(sg)
    return s["Version"], [(r["Port"], r["CidrBlock"]) for r in s["Ingress"]]


def setup(api):
    sg = api.group("base")
    api.v("ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [RULE_A]}})
    api.p("RegisterInstances", {"Instances": [{"InstanceId": "ins-chg00001", "PrivateIpAddresses": ["10.0.0.5"]}]})
    api.c("ModifyInstancesAttribute", {"InstanceIds": ["ins-chg00001"], "SecurityGroups": [sg]})
    return sg


def change_the_account(api, sg):
    """Rules of sg replaced, a new group made and bound before sg."""
    api.v("ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [RULE_B]}})
    sg2 = api.group("new")
    api.c("ModifyInstancesAttribute", {"InstanceIds": ["ins-chg00001"], "SecurityGroups": [sg2, sg]})
    return sg2


def wait_for(pred, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.2)
    return False


def bound(api):
    return api.c("DescribeInstances", {"InstanceIds": ["ins-chg00001"]})["InstanceSet"][0]["SecurityGroupIds"]


def test_unconfirmed_change_reverts_at_the_deadline_as_new_versions(fresh):
    sg = setup(fresh)
    assert rules(fresh, sg) == ("1", [("22", "203.0.113.0/24")])
    c = fresh.p("StartConfirmedChange", {"ConfirmWithin": 2, "Description": "try web"})
    cid = c["ChangeId"]
    assert cid.startswith("chg-") and c["Deadline"]
    # One pending change at a time.
    assert error_code(fresh.p, "StartConfirmedChange", {"ConfirmWithin": 5}) == "UnsupportedOperation"
    sg2 = change_the_account(fresh, sg)
    assert rules(fresh, sg) == ("2", [("443", "0.0.0.0/0")])
    started = time.time()
    assert wait_for(lambda: rules(fresh, sg)[1] == [("22", "203.0.113.0/24")])
    assert time.time() - started < 5
    # The revert is a new version, not a rewind of the counter.
    assert rules(fresh, sg) == ("3", [("22", "203.0.113.0/24")])
    assert bound(fresh) == [sg]
    assert error_code(fresh.v, "DescribeSecurityGroupPolicies", {"SecurityGroupId": sg2}) == "ResourceNotFound"
    d = fresh.p("DescribeConfirmedChanges", {"ChangeIds": [cid]})["ChangeSet"][0]
    assert d["State"] == "REVERTED" and d["Description"] == "try web" and d["SettledTime"]
    done = {(r["ResourceId"], r["Action"], r["Version"]) for r in d["Reverted"]}
    assert done == {(sg, "RULES_RESTORED", "3"), ("ins-chg00001", "BINDINGS_RESTORED", ""), (sg2, "GROUP_DELETED", "")}
    assert d["Problems"] == []
    # Too late: an error, and nothing changes.
    assert error_code(fresh.p, "ConfirmChange", {"ChangeId": cid}) == "UnsupportedOperation"
    assert rules(fresh, sg) == ("3", [("22", "203.0.113.0/24")])
    # The history shows all three versions, newest first.
    h = fresh.p("DescribeSecurityGroupHistory", {"SecurityGroupId": sg})
    assert [v["Version"] for v in h["HistorySet"]] == ["3", "2", "1", "0"] and h["HistorySet"][0]["IsCurrent"]


def test_a_confirmed_change_stays(fresh):
    sg = setup(fresh)
    cid = fresh.p("StartConfirmedChange", {"ConfirmWithin": 2})["ChangeId"]
    sg2 = change_the_account(fresh, sg)
    assert fresh.p("ConfirmChange", {"ChangeId": cid})["State"] == "CONFIRMED"
    # Confirming again is harmless.
    assert fresh.p("ConfirmChange", {"ChangeId": cid})["State"] == "CONFIRMED"
    time.sleep(3.5)
    assert rules(fresh, sg) == ("2", [("443", "0.0.0.0/0")])
    assert bound(fresh) == [sg2, sg]
    assert fresh.p("DescribeConfirmedChanges")["ChangeSet"][0]["State"] == "CONFIRMED"
    assert error_code(fresh.p, "ConfirmChange", {"ChangeId": "chg-nothere1"}) == "ResourceNotFound"
    assert error_code(fresh.p, "StartConfirmedChange", {"ConfirmWithin": 0}) == "InvalidParameterValue.Range"


@pytest.mark.parametrize("down_past_deadline", [False, True])
def test_sigkill_inside_the_window_still_reverts(own, down_past_deadline):
    api = Api(own, own.create_account("kill"))
    sg = setup(api)
    cid = api.p("StartConfirmedChange", {"ConfirmWithin": 3})["ChangeId"]
    change_the_account(api, sg)
    own.stop(signal.SIGKILL)
    if down_past_deadline:
        time.sleep(4)  # the deadline passes while no server runs
    own.start()
    started = time.time()
    assert wait_for(lambda: rules(api, sg)[1] == [("22", "203.0.113.0/24")])
    if down_past_deadline:
        assert time.time() - started < 3, "a passed deadline reverts as the server starts"
    assert bound(api) == [sg]
    assert api.p("DescribeConfirmedChanges", {"ChangeIds": [cid]})["ChangeSet"][0]["State"] == "REVERTED"


def cli(*args):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)
    return p


def test_cli_apply_confirm_within_history_and_rollback(own, tmp_path):
    creds = own.create_account("cli")
    api = Api(own, creds)
    cf = tmp_path / "creds.json"
    cf.write_text(json.dumps(creds))
    srv = ["--server", f"http://{own.endpoint}", "--credentials", str(cf)]
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("security_groups:\n  - id: sg-web00001\n    name: web\n    policies:\n      Ingress:\n"
                     "        - {Protocol: TCP, Port: \"443\", CidrBlock: 0.0.0.0/0, Action: ACCEPT}\n      Egress: []\n")
    p = cli("apply", str(fleet), *srv, "--auto-approve", "--confirm-within", "2s", "--output", "json")
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    cid = out["change"]["ChangeId"]
    assert "palisade confirm " + cid in p.stderr
    sg = out["applied"][0]["server_id"]
    assert wait_for(lambda: _gone(api, sg)), "the unconfirmed apply's group is deleted at the deadline"
    p = cli("confirm", cid, *srv)
    assert p.returncode == 2 and "UnsupportedOperation" in p.stderr, p.stderr
    # Again, confirmed this time: it stays.
    p = cli("apply", str(fleet), *srv, "--auto-approve", "--confirm-within", "1m", "--output", "json")
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    p = cli("confirm", out["change"]["ChangeId"], *srv)
    assert p.returncode == 0 and "confirmed" in p.stdout, p.stderr
    sg = out["applied"][0]["server_id"]
    api.v("ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [RULE_A]}})
    p = cli("history", sg, *srv, "--output", "json")
    assert p.returncode == 0, p.stderr
    h = json.loads(p.stdout)
    assert [v["Version"] for v in h["HistorySet"]] == ["2", "1", "0"]
    p = cli("history", sg, *srv)
    assert p.returncode == 0 and "current" in p.stdout and "3 version(s) kept" in p.stdout, p.stdout
    p = cli("rollback", sg, "--to-version", "1", *srv, "--output", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["Version"] == "3"
    assert rules(api, sg) == ("3", [("443", "0.0.0.0/0")])
    p = cli("rollback", sg, "--to-version", "9", *srv)
    assert p.returncode == 2 and "ResourceNotFound" in p.stderr


def _gone(api, sg):
    try:
        return api.v("DescribeSecurityGroups", {"SecurityGroupIds": [sg]})["TotalCount"] == 0
    except Exception:
        return True


def test_history_bound_is_configurable(tmp_path):
    srv = Server(tmp_path / "data", args=["--history-limit", "2"]).start()
    try:
        api = Api(srv, srv.admin_credentials())
        sg = api.group("h")
        for port in ("1", "2", "3"):
            api.v("ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [dict(RULE_A, Port=port)]}})
        h = api.p("DescribeSecurityGroupHistory", {"SecurityGroupId": sg})
        assert [v["Version"] for v in h["HistorySet"]] == ["3", "2"] and h["TotalCount"] == 2
        assert error_code(api.p, "RollbackSecurityGroup", {"SecurityGroupId": sg, "ToVersion": "1"}) == "ResourceNotFound"
        assert api.p("RollbackSecurityGroup", {"SecurityGroupId": sg, "ToVersion": "2"})["Version"] == "4"
        assert rules(api, sg) == ("4", [("2", "203.0.113.0/24")])
        assert error_code(api.p, "RollbackSecurityGroup", {"SecurityGroupId": sg, "ToVersion": "3", "Version": "1"}) == "UnsupportedOperation.VersionMismatch"
    finally:
        srv.stop()


@pytest.mark.skipif(not PG_BASE, reason="several servers need PostgreSQL (set PALISADE_STORE=postgres://...)")
def test_another_server_reverts_a_change_whose_server_was_killed(tmp_path):
    """Two servers on one PostgreSQL database: the change is started and made
    through A, A is killed with SIGKILL, and B reverts it at the deadline,
    once (both reapers look; the first settles it)."""
    url = scratch_database()
    a = Server(tmp_path / "a", store=url).start()
    b = Server(tmp_path / "b", store=url).start()
    try:
        creds = a.create_account("pair")
        api_a, api_b = Api(a, creds), Api(b, creds)
        sg = setup(api_a)
        cid = api_a.p("StartConfirmedChange", {"ConfirmWithin": 2})["ChangeId"]
        change_the_account(api_a, sg)
        a.stop(signal.SIGKILL)
        assert wait_for(lambda: rules(api_b, sg)[1] == [("22", "203.0.113.0/24")])
        assert bound(api_b) == [sg]
        time.sleep(1.5)  # a second revert would show as another version
        assert rules(api_b, sg) == ("3", [("22", "203.0.113.0/24")])
        d = api_b.p("DescribeConfirmedChanges", {"ChangeIds": [cid]})["ChangeSet"][0]
        assert d["State"] == "REVERTED"
        # A, restarted, finds it settled and reverts nothing again.
        a.start()
        time.sleep(1.5)
        assert rules(Api(a, creds), sg) == ("3", [("22", "203.0.113.0/24")])
    finally:
        a.stop()
        b.stop()
