"""Flow records and audit mode through the Tencent Python SDK (issue 18):
ReportFlowRecords (an agent key for its own instance only; a malformed batch
is refused whole), DescribeFlowRecords filters and paging, and
ModifyInstanceEnforcement (shown in DescribeInstanceStatus and the ruleset,
a change that bumps the revision)."""

import json
import subprocess
import urllib.request

from palisade_api import BIN, Api, error_code, store_args
from test_api_instances import register


def record(ins, **kw):
    r = {"InstanceId": ins, "Direction": "ingress", "SrcAddr": "198.51.100.7", "DstAddr": "10.0.0.1",
         "SrcPort": 40000, "DstPort": 22, "Protocol": 6, "Action": "DROP", "Decisions": 2,
         "Packets": 2, "Bytes": 120, "Start": 1000, "End": 1010}
    r.update(kw)
    return {k: v for k, v in r.items() if v is not None}


def agent_of(server, fresh, ins):
    account = [a for a in json.loads(subprocess.run(
        [BIN, "account", "list", *store_args(server.data_dir), "--output", "json"],
        check=True, capture_output=True, text=True).stdout) if a["AccountId"] == fresh.creds["AccountId"]][0]
    out = subprocess.run([BIN, "account", "instance-key", "--account", account["Name"], "--instance", ins,
                          *store_args(server.data_dir), "--output", "json"], check=True, capture_output=True, text=True)
    return Api(server, json.loads(out.stdout))


def flow_metrics(server):
    with urllib.request.urlopen(f"http://{server.endpoint}/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return {l.split()[0]: int(l.split()[1]) for l in lines if l.startswith("palisade_flow_records_")}


def test_reports_are_filtered_paged_and_scoped(server, fresh):
    ins = register(fresh, "10.0.0.1")
    other = register(fresh, "10.0.0.2")
    agent = agent_of(server, fresh, ins)
    rule = {"SecurityGroupId": "sg-00000001", "PolicyIndex": 1, "Revision": 4}
    batch = [
        record(ins),
        record(ins, Action="ACCEPT", Rule=rule, DstPort=443, Start=2000, End=2000, Packets=None, Bytes=None),
        record(ins, Action="ACCEPT", Rule=rule, DstPort=443, Decisions=0, Packets=9, Bytes=900, Start=2000, End=2050),
        record(ins, Direction="egress", SrcAddr="2001:db8::5", DstAddr="2001:db8::1", Protocol=58, SrcPort=None,
               DstPort=None, Action="WOULD_DROP", Start=3000, End=3001),
    ]
    before = flow_metrics(server)
    assert agent.p("ReportFlowRecords", {"InstanceId": ins, "FlowRecords": batch, "Suppressed": 5})["Stored"] == 4
    after = flow_metrics(server)
    assert after["palisade_flow_records_stored_total"] - before["palisade_flow_records_stored_total"] == 4
    assert after["palisade_flow_records_suppressed_total"] - before["palisade_flow_records_suppressed_total"] == 5
    assert "palisade_flow_records_expired_total" in after
    got = fresh.p("DescribeFlowRecords", {})
    assert got["TotalCount"] == 4
    assert [r["Start"] for r in got["FlowRecordSet"]] == [3000, 2000, 2000, 1000], "newest first"
    for r in got["FlowRecordSet"]:
        r.pop("RecordId")
    assert got["FlowRecordSet"][3] == batch[0]
    drops = fresh.p("DescribeFlowRecords", {"Action": "DROP"})["FlowRecordSet"]
    assert [r["DstPort"] for r in drops] == [22]
    by_rule = fresh.p("DescribeFlowRecords", {"SecurityGroupId": "sg-00000001", "PolicyIndex": 1})
    assert by_rule["TotalCount"] == 2
    v6 = fresh.p("DescribeFlowRecords", {"PeerCidr": "2001:db8::/64"})["FlowRecordSet"]
    assert [r["Action"] for r in v6] == ["WOULD_DROP"]
    window = fresh.p("DescribeFlowRecords", {"StartTime": 1500, "EndTime": 2500})
    assert window["TotalCount"] == 2
    page = fresh.p("DescribeFlowRecords", {"Offset": 1, "Limit": 2})["FlowRecordSet"]
    assert [r["Start"] for r in page] == [2000, 2000]
    # An agent key: its own instance only, and no reading.
    assert error_code(agent.p, "ReportFlowRecords", {"InstanceId": other, "FlowRecords": [record(other)]}) \
        == "AuthFailure.UnauthorizedOperation"
    assert error_code(agent.p, "DescribeFlowRecords", {}) == "AuthFailure.UnauthorizedOperation"
    # Malformed batches store nothing.
    for bad in ([record(ins), record(other)],
                [record(ins), record(ins, Protocol=1)],
                [record(ins, Action="ACCEPT")],
                [record(ins, End=1)],
                [record(ins, DstAddr="2001:db8::1")]):
        code = error_code(agent.p, "ReportFlowRecords", {"InstanceId": ins, "FlowRecords": bad})
        assert code.startswith("InvalidParameter"), (bad, code)
    assert error_code(agent.p, "ReportFlowRecords", {"InstanceId": ins, "FlowRecords": [{"Bogus": 1}]}).startswith(("InvalidParameter", "UnknownParameter"))
    assert fresh.p("DescribeFlowRecords", {})["TotalCount"] == 4
    assert flow_metrics(server)["palisade_flow_records_stored_total"] == after["palisade_flow_records_stored_total"]
    for bad in ({"Limit": 0}, {"Limit": 1001}, {"Action": "REJECT"}, {"PeerCidr": "10.0.0.0/33"},
                {"Port": 70000}, {"Protocol": 300}, {"InstanceIds": ["nope"]}, {"Unknown": 1}):
        assert error_code(fresh.p, "DescribeFlowRecords", bad).startswith(("InvalidParameter", "UnknownParameter")), bad


def test_enforcement_is_a_change_the_agent_sees(server, fresh):
    ins = register(fresh, "10.0.0.1")
    agent = agent_of(server, fresh, ins)
    before = fresh.p("DescribeInstanceStatus", {"InstanceIds": [ins]})
    assert before["InstanceStatusSet"][0]["Enforcement"] == "ENFORCE"
    rs = agent.p("DescribeInstanceRuleset", {"InstanceId": ins})["Ruleset"]
    assert rs["Enforcement"] == "ENFORCE"
    fresh.p("ModifyInstanceEnforcement", {"InstanceId": ins, "Enforcement": "AUDIT"})
    after = fresh.p("DescribeInstanceStatus", {"InstanceIds": [ins]})
    assert after["InstanceStatusSet"][0]["Enforcement"] == "AUDIT"
    assert after["Revision"] > before["Revision"], "a change of mode bumps the revision"
    rs2 = agent.p("DescribeInstanceRuleset", {"InstanceId": ins, "KnownDigest": rs["Digest"]})["Ruleset"]
    assert rs2["Enforcement"] == "AUDIT" and rs2["Changed"] is True and rs2["Digest"] != rs["Digest"]
    assert error_code(agent.p, "ModifyInstanceEnforcement", {"InstanceId": ins, "Enforcement": "ENFORCE"}) \
        == "AuthFailure.UnauthorizedOperation"
    assert error_code(fresh.p, "ModifyInstanceEnforcement", {"InstanceId": ins, "Enforcement": "OFF"}) \
        .startswith("InvalidParameterValue")
    assert error_code(fresh.p, "ModifyInstanceEnforcement", {"InstanceId": "ins-zzzz9999", "Enforcement": "AUDIT"}) \
        == "ResourceNotFound"


def test_rule_hits_sum_instances_survive_reloads_and_reset_when_the_rule_changes(server, fresh):
    sg = fresh.v("CreateSecurityGroupWithPolicies", {"GroupName": "h", "GroupDescription": "h", "SecurityGroupPolicySet": {
        "Ingress": [{"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"},
                    {"Protocol": "TCP", "Port": "80", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}]}})["SecurityGroup"]["SecurityGroupId"]
    a = register(fresh, "10.0.0.1")
    b = register(fresh, "10.0.0.2")

    def report(ins, packets):
        fresh.p("ReportInstanceStatus", {"InstanceId": ins, "AppliedRevision": 1, "Counters": [
            {"SecurityGroupId": sg, "Direction": "ingress", "PolicyIndex": 0, "Packets": packets, "Bytes": packets * 60}]})

    def hits():
        return {h["PolicyIndex"]: h for h in fresh.p("DescribeRuleHits", {"SecurityGroupId": sg})["RuleHitSet"]}

    assert hits()[0]["Hits"] == 0 and "LastUsed" not in hits()[0]
    report(a, 5)
    report(b, 3)
    report(a, 8)      # grew by 3
    report(b, 2)      # lower: the table was reloaded, all 2 are new
    h = hits()
    assert h[0]["Hits"] == 5 + 3 + 3 + 2 and h[0]["LastUsed"] >= h[0]["Since"] > 0
    assert h[1]["Hits"] == 0 and "LastUsed" not in h[1]
    report(a, 8)      # nothing new: last use stays
    assert hits()[0]["Hits"] == 13
    # Another rule at index 0 (the old one moves to 1): its hits start again.
    ver = fresh.v("DescribeSecurityGroupPolicies", {"SecurityGroupId": sg})["SecurityGroupPolicySet"]["Version"]
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Version": ver, "Ingress": [
        {"PolicyIndex": 0, "Protocol": "UDP", "Port": "53", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}]}})
    assert hits()[0]["Hits"] == 0
    report(a, 10)
    assert hits()[0]["Hits"] == 10, "the new rule counts from its first report"
    assert error_code(fresh.p, "DescribeRuleHits", {"SecurityGroupId": "sg-zzzz9999"}) == "ResourceNotFound"
