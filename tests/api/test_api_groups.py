"""Security group resources through the real SDK: create, describe (ids,
filters, pagination, ordering), modify, clone, delete, limits, references and
association statistics, field by field."""

import re

from palisade_api import error_code

TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
SG_ID = re.compile(r"^sg-[a-z0-9]{8}$")


def test_create_returns_every_field(fresh):
    r = fresh.v(
        "CreateSecurityGroup",
        {"GroupName": "web", "GroupDescription": "web servers", "ProjectId": "0", "Tags": [{"Key": "env", "Value": "prod"}]},
    )
    g = r["SecurityGroup"]
    assert SG_ID.match(g["SecurityGroupId"])
    assert g["SecurityGroupName"] == "web"
    assert g["SecurityGroupDesc"] == "web servers"
    assert g["ProjectId"] == "0"
    assert g["IsDefault"] is False
    assert TIME.match(g["CreatedTime"]) and TIME.match(g["UpdateTime"])
    assert g["TagSet"] == [{"Key": "env", "Value": "prod"}]
    assert re.match(r"^[0-9a-f-]{36}$", r["RequestId"])
    # A new group has no rules: it denies everything.
    rules = fresh.rules(g["SecurityGroupId"])
    assert rules["Ingress"] == [] and rules["Egress"] == [] and rules["Version"] == "0"


def test_create_validation(fresh):
    assert error_code(fresh.v, "CreateSecurityGroup", {"GroupDescription": "d"}) == "MissingParameter"
    assert error_code(fresh.v, "CreateSecurityGroup", {"GroupName": "x" * 61, "GroupDescription": "d"}) == "InvalidParameterValue.TooLong"
    assert error_code(fresh.v, "CreateSecurityGroup", {"GroupName": "n", "GroupDescription": "d" * 101}) == "InvalidParameterValue.TooLong"
    assert error_code(fresh.v, "CreateSecurityGroup", {"GroupName": "n", "GroupDescription": "d", "ProjectId": "abc"}) == "InvalidParameterValue.Malformed"
    assert fresh.v("DescribeSecurityGroups")["TotalCount"] == 0


def test_describe_ids_filters_pagination_order(fresh):
    ids = [fresh.group(f"g{i}", Tags=[{"Key": "k", "Value": str(i % 2)}]) for i in range(5)]
    r = fresh.v("DescribeSecurityGroups")
    assert r["TotalCount"] == 5
    assert [g["SecurityGroupId"] for g in r["SecurityGroupSet"]] == ids
    r = fresh.v("DescribeSecurityGroups", {"Offset": "1", "Limit": "2"})
    assert r["TotalCount"] == 5 and [g["SecurityGroupId"] for g in r["SecurityGroupSet"]] == ids[1:3]
    r = fresh.v("DescribeSecurityGroups", {"SecurityGroupIds": [ids[3], ids[0]]})
    assert {g["SecurityGroupId"] for g in r["SecurityGroupSet"]} == {ids[0], ids[3]}
    r = fresh.v("DescribeSecurityGroups", {"Filters": [{"Name": "security-group-name", "Values": ["g2"]}]})
    assert [g["SecurityGroupId"] for g in r["SecurityGroupSet"]] == [ids[2]]
    r = fresh.v("DescribeSecurityGroups", {"Filters": [{"Name": "tag:k", "Values": ["1"]}]})
    assert [g["SecurityGroupId"] for g in r["SecurityGroupSet"]] == [ids[1], ids[3]]
    r = fresh.v("DescribeSecurityGroups", {"Filters": [{"Name": "tag-key", "Values": ["k"]}, {"Name": "security-group-id", "Values": [ids[4]]}]})
    assert r["TotalCount"] == 1
    r = fresh.v("DescribeSecurityGroups", {"OrderField": "SecurityGroupName", "OrderDirection": "DESC"})
    assert [g["SecurityGroupName"] for g in r["SecurityGroupSet"]] == ["g4", "g3", "g2", "g1", "g0"]
    assert error_code(fresh.v, "DescribeSecurityGroups", {"SecurityGroupIds": [ids[0]], "Filters": [{"Name": "project-id", "Values": ["0"]}]}) == "InvalidParameter.Coexist"
    assert error_code(fresh.v, "DescribeSecurityGroups", {"Filters": [{"Name": "nope", "Values": ["x"]}]}) == "InvalidParameter.FilterInvalidKey"
    assert error_code(fresh.v, "DescribeSecurityGroups", {"Limit": "101"}) == "InvalidParameterValue.Range"
    assert error_code(fresh.v, "DescribeSecurityGroups", {"SecurityGroupIds": ["sg-bad"]}) == "InvalidParameterValue.Malformed"
    assert error_code(fresh.v, "DescribeSecurityGroups", {"SecurityGroupIds": ["sg-00000000"]}) == "ResourceNotFound"


def test_modify_clone_delete(fresh):
    sg = fresh.group("orig")
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}]}})
    fresh.v("ModifySecurityGroupAttribute", {"SecurityGroupId": sg, "GroupName": "renamed", "GroupDescription": "new desc"})
    g = fresh.v("DescribeSecurityGroups", {"SecurityGroupIds": [sg]})["SecurityGroupSet"][0]
    assert (g["SecurityGroupName"], g["SecurityGroupDesc"]) == ("renamed", "new desc")
    assert error_code(fresh.v, "ModifySecurityGroupAttribute", {"SecurityGroupId": sg, "GroupName": "x" * 61}) == "InvalidParameterValue.TooLong"
    clone = fresh.v("CloneSecurityGroup", {"SecurityGroupId": sg, "GroupName": "copy"})["SecurityGroup"]
    assert clone["SecurityGroupName"] == "copy" and clone["SecurityGroupDesc"] == "new desc"
    src_rules = fresh.rules(sg)["Ingress"]
    copy_rules = fresh.rules(clone["SecurityGroupId"])["Ingress"]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "ModifyTime"} for r in rs]
    assert strip(src_rules) == strip(copy_rules)
    fresh.v("DeleteSecurityGroup", {"SecurityGroupId": clone["SecurityGroupId"]})
    assert error_code(fresh.v, "DeleteSecurityGroup", {"SecurityGroupId": clone["SecurityGroupId"]}) == "ResourceNotFound"
    assert error_code(fresh.v, "DeleteSecurityGroup", {"SecurityGroupId": "sg-XX"}) == "InvalidParameterValue.Malformed"
    assert fresh.v("DescribeSecurityGroups")["TotalCount"] == 1


def test_referenced_group_cannot_be_deleted(fresh):
    a = fresh.group("a")
    b = fresh.group("b")
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": b, "SecurityGroupPolicySet": {"Ingress": [{"Protocol": "ALL", "SecurityGroupId": a, "Action": "ACCEPT"}]}})
    refs = fresh.v("DescribeSecurityGroupReferences", {"SecurityGroupIds": [a, b]})["ReferredSecurityGroupSet"]
    assert refs == [{"SecurityGroupId": a, "ReferredSecurityGroupIds": [b]}, {"SecurityGroupId": b, "ReferredSecurityGroupIds": []}]
    stats = fresh.v("DescribeSecurityGroupAssociationStatistics", {"SecurityGroupIds": [a]})["SecurityGroupAssociationStatisticsSet"][0]
    assert stats["SecurityGroupId"] == a and stats["SG"] == 1 and stats["CVM"] == 0 and stats["TotalCount"] == 0
    assert error_code(fresh.v, "DeleteSecurityGroup", {"SecurityGroupId": a}) == "ResourceInUse"
    assert fresh.v("DescribeSecurityGroups", {"SecurityGroupIds": [a]})["TotalCount"] == 1
    # Once the referencing rule is gone the group can go.
    fresh.v("DeleteSecurityGroupPolicies", {"SecurityGroupId": b, "SecurityGroupPolicySet": {"Ingress": [{"PolicyIndex": 0}]}})
    fresh.v("DeleteSecurityGroup", {"SecurityGroupId": a})


def test_limits_and_group_quota(fresh):
    lim = fresh.v("DescribeSecurityGroupLimits")["SecurityGroupLimitSet"]
    assert lim["SecurityGroupLimit"] == 50
    assert lim["SecurityGroupPolicyLimit"] == 100
    assert lim["ReferedSecurityGroupLimit"] == 10
    assert lim["SecurityGroupInstanceLimit"] == 2000
    assert lim["InstanceSecurityGroupLimit"] == 5
    for i in range(50):
        fresh.group(f"q{i}")
    assert error_code(fresh.v, "CreateSecurityGroup", {"GroupName": "one-too-many", "GroupDescription": "d"}) == "LimitExceeded"
    assert fresh.v("DescribeSecurityGroups")["TotalCount"] == 50
