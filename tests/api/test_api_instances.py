"""Instances: Palisade's RegisterInstances / DeregisterInstances /
DescribeInstanceRuleset through the SDK's CommonClient, and the CVM actions
(Associate / Disassociate / ModifyInstancesAttribute / DescribeInstances)
through the typed CVM client, with the ordered list and the 5-group limit."""

import re

from palisade_api import error_code


def register(api, *ips, **kw):
    inst = {"PrivateIpAddresses": list(ips)}
    inst.update(kw)
    return api.p("RegisterInstances", {"Instances": [inst]})["InstanceIdSet"][0]


def bound(api, ins):
    return api.c("DescribeInstances", {"InstanceIds": [ins]})["InstanceSet"][0]["SecurityGroupIds"]


def test_register_describe_deregister(fresh):
    a = register(fresh, "10.0.0.1", InstanceName="node-a")
    assert re.match(r"^ins-[a-z0-9]{8}$", a)
    b = register(fresh, "10.0.0.2", "fd00::2", InstanceId="ins-nodeb001")
    assert b == "ins-nodeb001"
    r = fresh.c("DescribeInstances")
    assert r["TotalCount"] == 2
    i = r["InstanceSet"][0]
    assert i["InstanceId"] == a and i["InstanceName"] == "node-a" and i["PrivateIpAddresses"] == ["10.0.0.1"] and i["SecurityGroupIds"] == []
    r = fresh.c("DescribeInstances", {"Filters": [{"Name": "private-ip-address", "Values": ["10.0.0.2"]}]})
    assert [x["InstanceId"] for x in r["InstanceSet"]] == [b]
    r = fresh.c("DescribeInstances", {"Offset": 1, "Limit": 1})
    assert r["TotalCount"] == 2 and [x["InstanceId"] for x in r["InstanceSet"]] == [b]
    assert error_code(fresh.p, "RegisterInstances", {"Instances": [{"PrivateIpAddresses": ["10.0.0.300"]}]}) == "InvalidParameterValue.Malformed"
    assert error_code(fresh.p, "RegisterInstances", {"Instances": [{"InstanceId": "ins-BAD", "PrivateIpAddresses": ["10.0.0.3"]}]}) == "InvalidParameterValue.Malformed"
    assert error_code(fresh.p, "RegisterInstances", {"Instances": [{"InstanceName": "x"}]}) == "MissingParameter"
    fresh.p("DeregisterInstances", {"InstanceIds": [b]})
    assert fresh.c("DescribeInstances")["TotalCount"] == 1
    assert error_code(fresh.p, "DeregisterInstances", {"InstanceIds": [b]}) == "ResourceNotFound"


def test_associate_order_limit_modify_disassociate(fresh):
    ins = register(fresh, "10.0.0.1")
    other = register(fresh, "10.0.0.2")
    groups = [fresh.group(f"g{i}") for i in range(6)]
    for g in groups[:5]:
        fresh.c("AssociateSecurityGroups", {"SecurityGroupIds": [g], "InstanceIds": [ins]})
    assert bound(fresh, ins) == groups[:5]
    # A sixth group is over the limit, and the failed call binds nothing anywhere.
    assert error_code(fresh.c, "AssociateSecurityGroups", {"SecurityGroupIds": [groups[5]], "InstanceIds": [other, ins]}) == "LimitExceeded.AssociateUSGLimitExceeded"
    assert bound(fresh, ins) == groups[:5] and bound(fresh, other) == []
    stats = fresh.v("DescribeSecurityGroupAssociationStatistics", {"SecurityGroupIds": [groups[0]]})["SecurityGroupAssociationStatisticsSet"][0]
    assert stats["CVM"] == 1 and stats["TotalCount"] == 1
    r = fresh.c("DescribeInstances", {"Filters": [{"Name": "security-group-id", "Values": [groups[0]]}]})
    assert [x["InstanceId"] for x in r["InstanceSet"]] == [ins]
    # A bound group cannot be deleted.
    assert error_code(fresh.v, "DeleteSecurityGroup", {"SecurityGroupId": groups[0]}) == "ResourceInUse"
    # ModifyInstancesAttribute replaces the whole ordered list.
    fresh.c("ModifyInstancesAttribute", {"InstanceIds": [ins], "SecurityGroups": [groups[5], groups[0]]})
    assert bound(fresh, ins) == [groups[5], groups[0]]
    assert error_code(fresh.c, "ModifyInstancesAttribute", {"InstanceIds": [ins], "SecurityGroups": groups}) == "LimitExceeded.AssociateUSGLimitExceeded"
    assert error_code(fresh.c, "ModifyInstancesAttribute", {"InstanceIds": [ins], "SecurityGroups": ["sg-00000000"]}) == "InvalidSecurityGroupId.NotFound"
    assert error_code(fresh.c, "ModifyInstancesAttribute", {"InstanceIds": [ins], "SecurityGroups": ["sg-bad"]}) == "InvalidSgId.Malformed"
    assert bound(fresh, ins) == [groups[5], groups[0]]
    fresh.c("DisassociateSecurityGroups", {"SecurityGroupIds": [groups[5]], "InstanceIds": [ins]})
    assert bound(fresh, ins) == [groups[0]]
    assert error_code(fresh.c, "AssociateSecurityGroups", {"SecurityGroupIds": [groups[1]], "InstanceIds": ["ins-00000000"]}) == "InvalidInstanceId.NotFound"
    assert error_code(fresh.c, "AssociateSecurityGroups", {"SecurityGroupIds": [groups[1]], "InstanceIds": ["i-1"]}) == "InvalidInstanceId.Malformed"
    assert error_code(fresh.c, "AssociateSecurityGroups", {"SecurityGroupIds": ["sg-00000000"], "InstanceIds": [ins]}) == "InvalidSecurityGroupId.NotFound"
    fresh.c("ModifyInstancesAttribute", {"InstanceIds": [ins], "InstanceName": "renamed"})
    assert fresh.c("DescribeInstances", {"InstanceIds": [ins]})["InstanceSet"][0]["InstanceName"] == "renamed"


def test_describe_instance_ruleset(fresh):
    web = register(fresh, "10.0.0.1")
    db = register(fresh, "10.0.0.2", "fd00::2")
    g_web = fresh.group("web")
    g_db = fresh.group("db")
    ipm = fresh.v("CreateAddressTemplate", {"AddressTemplateName": "ops", "Addresses": ["192.0.2.0/24"]})["AddressTemplate"]["AddressTemplateId"]
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": g_db, "SecurityGroupPolicySet": {"Ingress": [
        {"Protocol": "TCP", "Port": "5432", "SecurityGroupId": g_web, "Action": "ACCEPT"},
        {"Protocol": "TCP", "Port": "22", "AddressTemplate": {"AddressId": ipm}, "Action": "ACCEPT"},
    ]}})
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": g_web, "SecurityGroupPolicySet": {"Ingress": [
        {"Protocol": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "DROP"},
    ]}})
    fresh.c("AssociateSecurityGroups", {"SecurityGroupIds": [g_web], "InstanceIds": [web]})
    fresh.c("AssociateSecurityGroups", {"SecurityGroupIds": [g_db], "InstanceIds": [db]})
    fresh.c("AssociateSecurityGroups", {"SecurityGroupIds": [g_web], "InstanceIds": [db]})
    rs = fresh.p("DescribeInstanceRuleset", {"InstanceId": db})["Ruleset"]
    assert rs["InstanceId"] == db and rs["SecurityGroupIds"] == [g_db, g_web]
    assert isinstance(rs["Revision"], int) and rs["Revision"] > 0
    ing = rs["Ingress"]
    # One entry per rule: its origin, the rule as written, and its services
    # and peers resolved (the policy crate's resolved rule).
    assert [(r["security_group_id"], r["direction"], r["policy_index"], r["policy"]["Protocol"], r["policy"]["Port"], r["action"])
            for r in ing] == [
        (g_db, "ingress", 0, "TCP", "5432", "ACCEPT"),
        (g_db, "ingress", 1, "TCP", "22", "ACCEPT"),
        (g_web, "ingress", 0, "ALL", "ALL", "DROP"),
    ]
    assert ing[0]["policy"]["SecurityGroupId"] == g_web and ing[0]["services"] == [{"protocol": 6, "ports": "5432"}]
    assert ing[2]["services"] == [{"protocol": "ALL", "ports": "ALL"}]
    # The group reference resolves to the private IPs of the instances bound
    # to it (adjacent addresses merged, IPv4 first); the template to its entries.
    assert ing[0]["peers"] == ["10.0.0.1-10.0.0.2", "fd00::2"]
    assert ing[1]["peers"] == ["192.0.2.0/24"]
    assert rs["Egress"] == []
    # Membership changes show up, with a newer revision.
    fresh.c("DisassociateSecurityGroups", {"SecurityGroupIds": [g_web], "InstanceIds": [web]})
    rs2 = fresh.p("DescribeInstanceRuleset", {"InstanceId": db})["Ruleset"]
    assert rs2["Revision"] > rs["Revision"]
    assert rs2["Ingress"][0]["peers"] == ["10.0.0.2", "fd00::2"]
    assert error_code(fresh.p, "DescribeInstanceRuleset", {"InstanceId": "ins-00000000"}) == "ResourceNotFound"


def test_ruleset_long_poll(fresh):
    import threading
    import time

    ins = register(fresh, "10.0.0.1")
    sg = fresh.group("lp")
    fresh.c("AssociateSecurityGroups", {"SecurityGroupIds": [sg], "InstanceIds": [ins]})
    rs = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins})["Ruleset"]
    assert rs["Changed"] is True and rs["Ingress"] == []
    rev = rs["Revision"]
    # Nothing changes: the wait ends after WaitSeconds with Changed false.
    t0 = time.time()
    rs = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins, "AfterRevision": rev, "WaitSeconds": 1})["Ruleset"]
    assert rs["Changed"] is False and rs["Revision"] == rev and time.time() - t0 >= 0.9
    # A change while waiting wakes the poll at once.
    timer = threading.Timer(0.3, lambda: fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}]}}))
    timer.start()
    t0 = time.time()
    rs = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins, "AfterRevision": rev, "WaitSeconds": 20})["Ruleset"]
    timer.join()
    assert rs["Changed"] is True and rs["Revision"] > rev and time.time() - t0 < 10
    assert [(r["policy"]["Protocol"], r["policy"]["Port"], r["peers"]) for r in rs["Ingress"]] == [("TCP", "22", ["10.0.0.0/8"])]
    assert error_code(fresh.p, "DescribeInstanceRuleset", {"InstanceId": ins, "AfterRevision": rev, "WaitSeconds": 51}) == "InvalidParameterValue.Range"


def test_long_poll_wakes_only_for_its_own_account(server, fresh):
    import threading
    import time

    from palisade_api import Api

    other = Api(server, server.create_account("t-other-" + str(time.time_ns())[-6:]))
    ins = register(fresh, "10.0.0.1")
    sg = fresh.group("mine")
    fresh.c("AssociateSecurityGroups", {"SecurityGroupIds": [sg], "InstanceIds": [ins]})
    rev = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins})["Ruleset"]["Revision"]
    theirs = other.group("theirs")
    rule = {"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}
    # Writes to another account, before and during the wait: not a change here.
    other.v("CreateSecurityGroupPolicies", {"SecurityGroupId": theirs, "SecurityGroupPolicySet": {"Ingress": [rule]}})
    writes = threading.Thread(target=lambda: [
        (time.sleep(0.2), other.v("CreateSecurityGroupPolicies", {"SecurityGroupId": theirs, "SecurityGroupPolicySet": {"Ingress": [dict(rule, Port=str(23 + n))]}}))
        for n in range(5)])
    writes.start()
    t0 = time.time()
    rs = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins, "AfterRevision": rev, "WaitSeconds": 2})["Ruleset"]
    writes.join()
    assert rs["Changed"] is False and time.time() - t0 >= 1.9, rs
    assert rs["Revision"] > rev, "the global revision moved on"
    # A write to this account wakes it at once, whatever the global revision did.
    timer = threading.Timer(0.3, lambda: fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [rule]}}))
    timer.start()
    t0 = time.time()
    rs = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins, "AfterRevision": rs["Revision"], "WaitSeconds": 20})["Ruleset"]
    timer.join()
    assert rs["Changed"] is True and time.time() - t0 < 5
    assert [(r["policy"]["Protocol"], r["policy"]["Port"]) for r in rs["Ingress"]] == [("TCP", "22")]


def test_long_poll_with_known_digest_wakes_only_when_the_rules_change(fresh):
    import threading
    import time

    ins = register(fresh, "10.0.0.1")
    sg, unrelated = fresh.group("mine"), fresh.group("unrelated")
    fresh.c("AssociateSecurityGroups", {"SecurityGroupIds": [sg], "InstanceIds": [ins]})
    rs = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins})["Ruleset"]
    digest, rev = rs["Digest"], rs["Revision"]
    assert re.fullmatch(r"[0-9a-f]{32}", digest)
    rule = {"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}
    # A write to the same account that leaves this instance's rules alone.
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": unrelated, "SecurityGroupPolicySet": {"Ingress": [rule]}})
    same = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins, "AfterRevision": rev})["Ruleset"]
    assert same["Changed"] is True, "without KnownDigest any change to the account counts"
    assert same["Digest"] == digest and same["Revision"] > rev
    t0 = time.time()
    rs = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins, "AfterRevision": rev, "KnownDigest": digest, "WaitSeconds": 1})["Ruleset"]
    assert rs["Changed"] is False and time.time() - t0 >= 0.9, rs
    # Unrelated writes during the wait do not end it; a change to its group does.
    def writes():
        for n in range(3):
            time.sleep(0.2)
            fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": unrelated, "SecurityGroupPolicySet": {"Ingress": [dict(rule, Port=str(30 + n))]}})
        time.sleep(0.3)
        fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [rule]}})
    w = threading.Thread(target=writes)
    w.start()
    t0 = time.time()
    rs = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins, "AfterRevision": rev, "KnownDigest": digest, "WaitSeconds": 20})["Ruleset"]
    took = time.time() - t0
    w.join()
    assert rs["Changed"] is True and rs["Digest"] != digest and 0.8 <= took < 5, (rs, took)
    assert [(r["policy"]["Protocol"], r["policy"]["Port"]) for r in rs["Ingress"]] == [("TCP", "22")]


def test_instance_scoped_agent_credential(server, fresh):
    import json
    import subprocess

    from palisade_api import BIN, Api, store_args

    ins = register(fresh, "10.0.0.1")
    other = register(fresh, "10.0.0.2")
    account = [a for a in json.loads(subprocess.run(
        [BIN, "account", "list", *store_args(server.data_dir), "--output", "json"],
        check=True, capture_output=True, text=True).stdout) if a["AccountId"] == fresh.creds["AccountId"]][0]
    assert "SecretKey" not in account
    out = subprocess.run([BIN, "account", "instance-key", "--account", account["Name"], "--instance", ins,
                          *store_args(server.data_dir), "--output", "json"], check=True, capture_output=True, text=True)
    key = json.loads(out.stdout)
    assert key["InstanceId"] == ins and key["AccountId"] == fresh.creds["AccountId"]
    agent = Api(server, key)
    rs = agent.p("DescribeInstanceRuleset", {"InstanceId": ins})["Ruleset"]
    assert rs["InstanceId"] == ins
    assert error_code(agent.p, "DescribeInstanceRuleset", {"InstanceId": other}) == "AuthFailure.UnauthorizedOperation"
    assert error_code(agent.v, "DescribeSecurityGroups") == "AuthFailure.UnauthorizedOperation"
    from tencentcloud.common.common_client import CommonClient

    from palisade_api import REGION, profile
    sts = CommonClient("sts", "2018-08-13", agent.cred, REGION, profile(server.endpoint))
    assert error_code(sts.call_json, "GetCallerIdentity", {}) == "AuthFailure.UnauthorizedOperation"
    assert error_code(agent.p, "DeregisterInstances", {"InstanceIds": [ins]}) == "AuthFailure.UnauthorizedOperation"
    # The agent confirms its instance, reports status; the owner sees it.
    assert agent.p("RegisterInstances", {"Instances": [{"InstanceId": ins, "PrivateIpAddresses": ["10.0.0.1"]}]})["InstanceIdSet"] == [ins]
    assert error_code(agent.p, "RegisterInstances", {"Instances": [{"InstanceId": other, "PrivateIpAddresses": ["10.0.0.1"]}]}) == "AuthFailure.UnauthorizedOperation"
    rev = rs["Revision"]
    agent.p("ReportInstanceStatus", {"InstanceId": ins, "AppliedRevision": rev, "Errors": ["nft: none"],
                                     "Counters": [{"SecurityGroupId": "sg-00000001", "Direction": "ingress", "PolicyIndex": 0, "Packets": 5, "Bytes": 300}]})
    st = fresh.p("DescribeInstanceStatus", {"InstanceIds": [ins, other]})
    assert st["Revision"] == rev, "a status report is not a configuration change"
    mine, theirs = st["InstanceStatusSet"]
    assert mine["InstanceId"] == ins and mine["Reported"] is True and mine["AppliedRevision"] == rev and mine["ReportedTime"]
    assert mine["Counters"] == [{"SecurityGroupId": "sg-00000001", "Direction": "Ingress", "PolicyIndex": 0, "Packets": 5, "Bytes": 300}]
    assert mine["Errors"] == ["nft: none"]
    # Registered just now and never reported: not stale yet (StaleSeconds 300).
    assert theirs == {"InstanceId": other, "Stale": False, "Reported": False, "ReportedTime": "", "AppliedRevision": 0, "Counters": [], "Errors": [],
                      "Failsafe": [], "Enforcement": "ENFORCE"}
    assert mine["Failsafe"] == []
    # The node's failsafe entries, as its agent enforces them, in canonical form.
    agent.p("ReportInstanceStatus", {"InstanceId": ins, "AppliedRevision": rev,
                                     "Failsafe": ["tcp:22@198.51.100.0/24", "egress:udp:53"]})
    shown = fresh.p("DescribeInstanceStatus", {"InstanceIds": [ins]})["InstanceStatusSet"][0]
    assert shown["Failsafe"] == ["ingress:tcp:22@198.51.100.0/24", "egress:udp:53"]
    for bad_entry in (["tcp:22@198.51.100.0/33"], ["smtp:25"], ["tcp:22", "ingress:tcp:22"]):
        assert error_code(agent.p, "ReportInstanceStatus", {"InstanceId": ins, "AppliedRevision": rev,
                                                            "Failsafe": bad_entry}) == "InvalidParameterValue", bad_entry
    assert error_code(agent.p, "ReportInstanceStatus", {"InstanceId": ins, "AppliedRevision": rev,
                                                        "Failsafe": [f"tcp:{p}" for p in range(1, 18)]}) == "InvalidParameterValue.LimitExceeded"
    # A refused report changed nothing.
    assert fresh.p("DescribeInstanceStatus", {"InstanceIds": [ins]})["InstanceStatusSet"][0]["Failsafe"] == shown["Failsafe"]
    assert error_code(agent.p, "ReportInstanceStatus", {"InstanceId": other, "AppliedRevision": 1}) == "AuthFailure.UnauthorizedOperation"
    assert error_code(agent.p, "DescribeInstanceStatus", {}) == "AuthFailure.UnauthorizedOperation"
    assert error_code(fresh.p, "ReportInstanceStatus", {"InstanceId": ins}) == "MissingParameter"
    assert error_code(fresh.p, "ReportInstanceStatus", {"InstanceId": ins, "AppliedRevision": 1, "Counters": [{"SecurityGroupId": "sg-1", "Direction": "in", "PolicyIndex": 0, "Packets": 0, "Bytes": 0}]}) == "InvalidParameterValue.Malformed"
    bad = subprocess.run([BIN, "account", "instance-key", "--account", account["Name"], "--instance", "ins-00000000",
                          *store_args(server.data_dir)], capture_output=True, text=True)
    assert bad.returncode != 0 and "not registered" in bad.stderr
    # Deregistering the instance revokes its agent's credential.
    fresh.p("DeregisterInstances", {"InstanceIds": [ins]})
    assert error_code(agent.p, "DescribeInstanceRuleset", {"InstanceId": ins}) == "AuthFailure.SecretIdNotFound"


def test_many_long_polls_do_not_starve_the_api(server, fresh):
    """600 agents waiting (more than tokio's 512 blocking threads): other
    requests still answer at once, and one change wakes every poll."""
    import json
    import threading
    import time

    from test_api_auth_envelope import raw

    ins = register(fresh, "10.0.0.1")
    rev = fresh.p("DescribeInstanceRuleset", {"InstanceId": ins})["Ruleset"]["Revision"]
    body = json.dumps({"InstanceId": ins, "AfterRevision": rev, "WaitSeconds": 30}).encode()
    results = []

    class Creds:
        endpoint = server.endpoint

        @staticmethod
        def admin_credentials():
            return fresh.creds

    def poll():
        _, _, r = raw(Creds, "DescribeInstanceRuleset", body=body, version="2026-11-01", service="palisade")
        results.append(r["Ruleset"]["Changed"])

    threads = [threading.Thread(target=poll) for _ in range(600)]
    for t in threads:
        t.start()
    time.sleep(2)
    t0 = time.time()
    fresh.v("DescribeSecurityGroupLimits")
    assert time.time() - t0 < 2
    fresh.group("wake")
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 600 and all(results)
