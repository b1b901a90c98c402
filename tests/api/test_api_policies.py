"""Rule actions through the real SDK: insertion at PolicyIndex, Version
optimistic concurrency, delete by index and by content, Modify (including
Version "0"), Replace, Describe with filters and expansion, limits, and that
every failed call leaves the policy set exactly as it was."""

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from palisade_api import error_code

SSH = {"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT", "PolicyDescription": "ssh"}
WEB = {"Protocol": "tcp", "Port": "80,443", "CidrBlock": "0.0.0.0/0", "Action": "accept"}
PING = {"Protocol": "ICMP", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}


def add(api, sg, direction, rules, **set_extra):
    body = {direction: rules}
    body.update(set_extra)
    return api.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": body})


def summary(rule):
    return (rule["Protocol"], rule["Port"], rule["CidrBlock"] or rule["Ipv6CidrBlock"] or rule["SecurityGroupId"], rule["Action"])


def test_rule_fields_exactly_as_tccli_prints(fresh):
    sg = fresh.group()
    add(fresh, sg, "Ingress", [SSH])
    s = fresh.rules(sg)
    assert s["Version"] == "1"
    r = s["Ingress"][0]
    assert r["PolicyIndex"] == 0
    assert r["Protocol"] == "TCP" and r["Port"] == "22" and r["CidrBlock"] == "10.0.0.0/8"
    assert r["Ipv6CidrBlock"] == "" and r["SecurityGroupId"] == ""
    assert r["ServiceTemplate"] == {"ServiceId": "", "ServiceGroupId": ""}
    assert r["AddressTemplate"] == {"AddressId": "", "AddressGroupId": ""}
    assert r["Action"] == "ACCEPT" and r["PolicyDescription"] == "ssh" and r["ModifyTime"]
    assert s["PolicyStatistics"] == {"IngressIPv4TotalCount": 1, "IngressIPv6TotalCount": 0, "EgressIPv4TotalCount": 0, "EgressIPv6TotalCount": 0}


def test_insert_at_index_and_version(fresh):
    sg = fresh.group()
    add(fresh, sg, "Ingress", [SSH])
    add(fresh, sg, "Ingress", [WEB])  # appended
    add(fresh, sg, "Ingress", [dict(PING, PolicyIndex=0)])  # top
    add(fresh, sg, "Ingress", [dict(Protocol="UDP", Port="53", CidrBlock="10.0.0.0/8", Action="DROP", PolicyIndex="1")])  # string index
    s = fresh.rules(sg)
    assert [summary(r) for r in s["Ingress"]] == [
        ("ICMP", "ALL", "0.0.0.0/0", "ACCEPT"),
        ("UDP", "53", "10.0.0.0/8", "DROP"),
        ("TCP", "22", "10.0.0.0/8", "ACCEPT"),
        ("TCP", "80,443", "0.0.0.0/0", "ACCEPT"),
    ]
    assert [r["PolicyIndex"] for r in s["Ingress"]] == [0, 1, 2, 3]
    assert s["Version"] == "4"
    # Version given and current: accepted; stale: refused and nothing changes.
    add(fresh, sg, "Egress", [dict(Protocol="ALL", CidrBlock="0.0.0.0/0", Action="ACCEPT")], Version="4")
    before = fresh.rules(sg)
    assert before["Version"] == "5"
    assert error_code(add, fresh, sg, "Egress", [PING], Version="4") == "UnsupportedOperation.VersionMismatch"
    assert fresh.rules(sg) == before
    assert error_code(add, fresh, sg, "Ingress", [dict(SSH, Port="2222", PolicyIndex=9)]) == "InvalidParameterValue.Range"
    assert fresh.rules(sg) == before


@pytest.mark.parametrize(
    "rule, code",
    [
        (dict(SSH, Port="99999"), "InvalidParameterValue.Range"),
        (dict(SSH, Port="80-20"), "InvalidParameterValue.Malformed"),
        (dict(SSH, Port="http"), "InvalidParameterValue.Malformed"),
        (dict(SSH, CidrBlock="10.0.0.300/8"), "InvalidParameterValue.Malformed"),
        (dict(SSH, CidrBlock="10.0.0.0/33"), "InvalidParameterValue.Malformed"),
        (dict(SSH, Ipv6CidrBlock="::/0"), "InvalidParameter.Coexist"),
        (dict(SSH, SecurityGroupId="sg-00000000"), "InvalidParameter.Coexist"),
        (dict(SSH, ServiceTemplate={"ServiceId": "ppm-00000000"}), "InvalidParameter.Coexist"),
        (dict(SSH, Action="ALLOW"), "InvalidParameterValue.Malformed"),
        ({"Protocol": "TCP", "Port": "22", "Action": "ACCEPT"}, "MissingParameter"),
        (dict(SSH, Protocol="SCTP"), "InvalidParameterValue.Malformed"),
        (dict(PING, Port="8"), "InvalidParameterValue"),
        (dict(SSH, PolicyDescription="x" * 256), "InvalidParameterValue.TooLong"),
        (dict(SSH, CidrBlock=None, SecurityGroupId="sg-00000000"), "ResourceNotFound"),
        (dict(SSH, CidrBlock=None, AddressTemplate={"AddressId": "ipm-00000000"}), "ResourceNotFound"),
    ],
)
def test_bad_rules_are_refused_and_change_nothing(fresh, rule, code):
    sg = fresh.group()
    add(fresh, sg, "Ingress", [WEB])
    before = fresh.rules(sg)
    rule = {k: v for k, v in rule.items() if v is not None}
    assert error_code(add, fresh, sg, "Ingress", [SSH, rule]) == code
    assert fresh.rules(sg) == before


def test_one_direction_per_call_and_duplicates(fresh):
    sg = fresh.group()
    add(fresh, sg, "Ingress", [SSH])
    before = fresh.rules(sg)
    assert error_code(fresh.v, "CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [WEB], "Egress": [WEB]}}) == "InvalidParameter.Coexist"
    assert error_code(add, fresh, sg, "Ingress", [dict(SSH, PolicyDescription="again")]) == "UnsupportedOperation.DuplicatePolicy"
    assert error_code(fresh.v, "CreateSecurityGroupPolicies", {"SecurityGroupId": sg}) == "MissingParameter"
    assert fresh.rules(sg) == before


def test_rule_limit_per_direction(fresh):
    sg = fresh.group()
    rules = [{"Protocol": "TCP", "Port": str(1000 + i), "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"} for i in range(100)]
    add(fresh, sg, "Ingress", rules)
    before = fresh.rules(sg)
    assert len(before["Ingress"]) == 100
    assert error_code(add, fresh, sg, "Ingress", [SSH]) == "LimitExceeded.SecurityGroupPolicySet"
    assert fresh.rules(sg) == before
    # The other direction has its own 100.
    add(fresh, sg, "Egress", [SSH])


def test_group_reference_limit(fresh):
    sg = fresh.group("main")
    others = [fresh.group(f"o{i}") for i in range(11)]
    add(fresh, sg, "Ingress", [{"Protocol": "ALL", "SecurityGroupId": o, "Action": "ACCEPT"} for o in others[:10]])
    before = fresh.rules(sg)
    assert error_code(add, fresh, sg, "Egress", [{"Protocol": "ALL", "SecurityGroupId": others[10], "Action": "ACCEPT"}]) == "LimitExceeded"
    assert fresh.rules(sg) == before


def test_delete_by_index_and_by_content(fresh):
    sg = fresh.group()
    add(fresh, sg, "Ingress", [SSH, WEB, PING])
    fresh.v("DeleteSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"PolicyIndex": 1}]}})
    assert [summary(r) for r in fresh.rules(sg)["Ingress"]] == [("TCP", "22", "10.0.0.0/8", "ACCEPT"), ("ICMP", "ALL", "0.0.0.0/0", "ACCEPT")]
    fresh.v("DeleteSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"Protocol": "icmp", "CidrBlock": "0.0.0.0/0", "Action": "accept"}]}})
    s = fresh.rules(sg)
    assert [summary(r) for r in s["Ingress"]] == [("TCP", "22", "10.0.0.0/8", "ACCEPT")]
    assert s["Version"] == "3"
    before = s
    codes = [
        error_code(fresh.v, "DeleteSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"PolicyIndex": 5}]}}),
        error_code(fresh.v, "DeleteSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [WEB]}}),
        error_code(fresh.v, "DeleteSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"PolicyIndex": 0}, SSH]}}),
        error_code(fresh.v, "DeleteSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Version": "1", "Ingress": [{"PolicyIndex": 0}]}}),
    ]
    assert codes == ["ResourceNotFound", "ResourceNotFound", "InvalidParameter.Coexist", "UnsupportedOperation.VersionMismatch"]
    assert fresh.rules(sg) == before


def test_modify_replaces_and_version_zero_clears(fresh):
    sg = fresh.group()
    add(fresh, sg, "Ingress", [SSH])
    fresh.v("ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [WEB, PING], "Egress": [dict(Protocol="ALL", CidrBlock="0.0.0.0/0", Action="ACCEPT")]}})
    s = fresh.rules(sg)
    assert [summary(r) for r in s["Ingress"]] == [("TCP", "80,443", "0.0.0.0/0", "ACCEPT"), ("ICMP", "ALL", "0.0.0.0/0", "ACCEPT")]
    assert [summary(r) for r in s["Egress"]] == [("ALL", "ALL", "0.0.0.0/0", "ACCEPT")]
    assert s["Version"] == "2"
    assert error_code(fresh.v, "ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Version": "1", "Ingress": [SSH]}}) == "UnsupportedOperation.VersionMismatch"
    assert fresh.rules(sg) == s
    fresh.v("ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Version": "2", "Ingress": [SSH]}})
    assert [summary(r) for r in fresh.rules(sg)["Ingress"]] == [("TCP", "22", "10.0.0.0/8", "ACCEPT")]
    fresh.v("ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Version": "0", "Ingress": [WEB]}})
    s = fresh.rules(sg)
    assert s["Ingress"] == [] and s["Egress"] == [] and s["Version"] == "4"


def test_replace_policy_and_policies(fresh):
    sg = fresh.group()
    add(fresh, sg, "Ingress", [SSH, WEB])
    fresh.v("ReplaceSecurityGroupPolicy", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [dict(SSH, Port="2222", PolicyIndex=0)]}})
    assert summary(fresh.rules(sg)["Ingress"][0]) == ("TCP", "2222", "10.0.0.0/8", "ACCEPT")
    before = fresh.rules(sg)
    assert error_code(fresh.v, "ReplaceSecurityGroupPolicy", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [SSH]}}) == "MissingParameter"
    assert error_code(fresh.v, "ReplaceSecurityGroupPolicy", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [dict(SSH, PolicyIndex=7)]}}) == "ResourceNotFound"
    assert error_code(fresh.v, "ReplaceSecurityGroupPolicy", {
        "SecurityGroupId": sg,
        "SecurityGroupPolicySet": {"Ingress": [dict(SSH, PolicyIndex=0)]},
        "OriginalSecurityGroupPolicySet": {"Ingress": [dict(WEB, PolicyIndex=0)]},
    }) == "InvalidParameterValue"
    assert fresh.rules(sg) == before
    fresh.v("ReplaceSecurityGroupPolicies", {
        "SecurityGroupId": sg,
        "SecurityGroupPolicySet": {"Ingress": [dict(PING, PolicyIndex=1)]},
        "OriginalSecurityGroupPolicySet": {"Ingress": [dict(WEB, PolicyIndex=1)]},
        "UpdateType": "Policy",
    })
    assert summary(fresh.rules(sg)["Ingress"][1]) == ("ICMP", "ALL", "0.0.0.0/0", "ACCEPT")


def test_describe_filters(fresh):
    sg = fresh.group()
    add(fresh, sg, "Ingress", [SSH, WEB, dict(PING, Action="DROP")])
    add(fresh, sg, "Egress", [dict(Protocol="UDP", Port="53", Ipv6CidrBlock="2001:db8::/32", Action="ACCEPT")])

    def filt(name, *values):
        s = fresh.v("DescribeSecurityGroupPolicies", {"SecurityGroupId": sg, "Filters": [{"Name": name, "Values": list(values)}]})["SecurityGroupPolicySet"]
        return [r["PolicyIndex"] for r in s["Ingress"]], [r["PolicyIndex"] for r in s["Egress"]]

    assert filt("protocol-type", "TCP") == ([0, 1], [])
    assert filt("port", "443") == ([1], [])
    assert filt("poly", "DROP") == ([2], [])
    assert filt("ip", "10.0.0.0/8") == ([0], [])
    assert filt("ip", "10.1.2.3") == ([0, 1, 2], [])
    assert filt("direction", "egress") == ([], [0])
    assert filt("description", "ssh") == ([0], [])
    s = fresh.rules(sg)
    assert s["PolicyStatistics"]["EgressIPv6TotalCount"] == 1 and s["PolicyStatistics"]["IngressIPv4TotalCount"] == 3
    assert error_code(fresh.v, "DescribeSecurityGroupPolicies", {"SecurityGroupId": sg, "Filters": [{"Name": "colour", "Values": ["red"]}]}) == "InvalidParameter.FilterInvalidKey"


def test_create_with_policies(fresh):
    r = fresh.v("CreateSecurityGroupWithPolicies", {
        "GroupName": "both",
        "GroupDescription": "d",
        "SecurityGroupPolicySet": {"Ingress": [SSH], "Egress": [dict(Protocol="ALL", CidrBlock="0.0.0.0/0", Action="ACCEPT")]},
    })
    sg = r["SecurityGroup"]["SecurityGroupId"]
    s = fresh.rules(sg)
    assert len(s["Ingress"]) == 1 and len(s["Egress"]) == 1
    assert error_code(fresh.v, "CreateSecurityGroupWithPolicies", {
        "GroupName": "bad", "GroupDescription": "d", "SecurityGroupPolicySet": {"Ingress": [dict(SSH, Port="0-5")]},
    }).startswith("InvalidParameterValue")
    assert fresh.v("DescribeSecurityGroups")["TotalCount"] == 1


def test_unknown_parameters(fresh):
    # The typed SDK models drop unknown names, so send raw JSON with call_json.
    sg = fresh.group()
    before = fresh.rules(sg)
    raw = lambda params: fresh.vpc.call_json("CreateSecurityGroupPolicies", params)
    assert error_code(raw, {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [dict(SSH, Protocl="TCP")]}}) == "UnknownParameter"
    assert error_code(raw, {"SecurityGroupId": sg, "Colour": "red", "SecurityGroupPolicySet": {"Ingress": [SSH]}}) == "UnknownParameter"
    assert fresh.rules(sg) == before


def test_concurrent_writers_with_the_same_version(fresh, server):
    """Version is checked inside the write transaction: of several writers
    racing with the same Version exactly one wins."""
    from concurrent.futures import ThreadPoolExecutor

    from palisade_api import Api
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

    sg = fresh.group()
    add(fresh, sg, "Ingress", [SSH])
    version = fresh.rules(sg)["Version"]

    def write(i):
        api = Api(server, fresh.creds)  # one client per thread
        try:
            add(api, sg, "Ingress", [dict(SSH, Port=str(3000 + i))], Version=version)
            return "ok"
        except TencentCloudSDKException as e:
            return e.get_code()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(write, range(8)))
    assert results.count("ok") == 1
    assert set(results) == {"ok", "UnsupportedOperation.VersionMismatch"}
    s = fresh.rules(sg)
    assert len(s["Ingress"]) == 2 and int(s["Version"]) == int(version) + 1


def test_malformed_body(fresh):

    from test_api_auth_envelope import raw

    class S:
        endpoint = fresh.endpoint

        @staticmethod
        def admin_credentials():
            return fresh.creds

    for body in [b"not json", b"[1,2]"]:
        _, ctype, r = raw(S, "DescribeSecurityGroups", body=body)
        assert ctype == "application/json" and r["Error"]["Code"] == "InvalidParameter"


def test_version_zero_is_the_current_version_of_a_new_group(fresh):
    """docs/api.md: a new group is at Version "0", so a write carrying "0"
    passes the check once (as with Tencent), and then no more."""
    sg = fresh.group()
    assert fresh.rules(sg)["Version"] == "0"
    add(fresh, sg, "Ingress", [SSH], Version="0")
    assert fresh.rules(sg)["Version"] == "1"
    assert error_code(add, fresh, sg, "Ingress", [PING], Version="0") == "UnsupportedOperation.VersionMismatch"


def sdk_error(fn, *args, **kwargs):
    """Runs a call that must fail; returns (code, message)."""
    try:
        fn(*args, **kwargs)
    except TencentCloudSDKException as e:
        return e.get_code(), e.get_message()
    raise AssertionError("the call succeeded but should have failed")


def test_wrong_json_types_and_bad_rules_name_the_field(fresh):
    """Through the typed SDK models, which pass values as given: a number
    where Tencent documents a string is InvalidParameter naming the field,
    and a problem in the third rule names SecurityGroupPolicySet.Ingress.2."""
    sg = fresh.group()
    code, msg = sdk_error(fresh.v, "CreateSecurityGroup", {"GroupName": 123, "GroupDescription": "d"})
    assert code == "InvalidParameter" and msg.startswith("GroupName"), msg
    rules = [dict(SSH, Port="1"), dict(SSH, Port="2")]
    code, msg = sdk_error(add, fresh, sg, "Ingress", rules + [dict(SSH, Port=81)])
    assert (code, msg) == ("InvalidParameter", "SecurityGroupPolicySet.Ingress.2.Port must be a string")
    code, msg = sdk_error(add, fresh, sg, "Ingress", rules + [dict(SSH, Port="99999")])
    assert code == "InvalidParameterValue.Range" and msg.startswith("SecurityGroupPolicySet.Ingress.2.Port "), msg
    assert fresh.rules(sg)["Ingress"] == []
    # PolicyIndex as an integer and as a string, as Tencent's examples send it.
    add(fresh, sg, "Ingress", [dict(SSH, PolicyIndex=0)])
    add(fresh, sg, "Ingress", [dict(SSH, Port="23", PolicyIndex="0")])
    assert [r["Port"] for r in fresh.rules(sg)["Ingress"]] == ["23", "22"]
