"""The coverage table of docs/api.md, checked: every supported action is
routed (an empty request gets a validation answer, never InvalidAction), and
the documented unsupported ones answer InvalidAction."""

import pytest

from palisade_api import error_code

VPC = """CreateSecurityGroup CreateSecurityGroupWithPolicies DeleteSecurityGroup ModifySecurityGroupAttribute
CloneSecurityGroup DescribeSecurityGroups CreateSecurityGroupPolicies DeleteSecurityGroupPolicies
ModifySecurityGroupPolicies ReplaceSecurityGroupPolicy ReplaceSecurityGroupPolicies DescribeSecurityGroupPolicies
DescribeSecurityGroupExpandedPolicies DescribeSecurityGroupReferences DescribeSecurityGroupAssociationStatistics
DescribeSecurityGroupLimits CreateAddressTemplate DeleteAddressTemplate ModifyAddressTemplateAttribute
DescribeAddressTemplates CreateAddressTemplateGroup DeleteAddressTemplateGroup ModifyAddressTemplateGroupAttribute
DescribeAddressTemplateGroups CreateServiceTemplate DeleteServiceTemplate ModifyServiceTemplateAttribute
DescribeServiceTemplates CreateServiceTemplateGroup DeleteServiceTemplateGroup ModifyServiceTemplateGroupAttribute
DescribeServiceTemplateGroups CreateSnapshotPolicies DescribeSnapshotPolicies ModifySnapshotPolicies
EnableSnapshotPolicies DisableSnapshotPolicies DeleteSnapshotPolicies AttachSnapshotInstances DetachSnapshotInstances
DescribeSnapshotAttachedInstances DescribeSnapshotFiles DescribeSgSnapshotFileContent ResumeSnapshotInstance""".split()
CVM = "AssociateSecurityGroups DisassociateSecurityGroups ModifyInstancesAttribute DescribeInstances".split()
PALISADE = """RegisterInstances DeregisterInstances DescribeInstanceRuleset ReportInstanceStatus DescribeInstanceStatus
RegisterCluster DeregisterClusters DescribeClusters ReportFlowRecords DescribeFlowRecords
ModifyInstanceEnforcement DescribeRuleHits CreateJoinToken DescribeJoinTokens RevokeJoinToken JoinCluster
LeaveCluster PruneCluster DescribeSecurityGroupHistory RollbackSecurityGroup
StartConfirmedChange ConfirmChange DescribeConfirmedChanges""".split()
UNSUPPORTED = """CreateDefaultSecurityGroup DescribeAddressTemplateInstances DescribeServiceTemplateInstances
DescribeAddressTemplateGroupInstances DescribeServiceTemplateGroupInstances AssociateNetworkInterfaceSecurityGroups
DisassociateNetworkInterfaceSecurityGroups DisassociateVpcEndPointSecurityGroups""".split()


def answer(client, action):
    try:
        return client.call_json(action, {})["Response"]
    except Exception as e:  # the SDK raises on every error answer
        return {"Error": {"Code": e.get_code()}}


@pytest.mark.parametrize("service, action", [("vpc", a) for a in VPC] + [("cvm", a) for a in CVM] + [("pal", a) for a in PALISADE])
def test_supported_actions_are_routed(fresh, service, action):
    client = {"vpc": fresh.vpc, "cvm": fresh.cvm, "pal": fresh.pal}[service]
    r = answer(client, action)
    assert r.get("Error", {}).get("Code") != "InvalidAction", r


@pytest.mark.parametrize("action", UNSUPPORTED)
def test_unsupported_actions_say_invalid_action(fresh, action):
    assert error_code(fresh.vpc.call_json, action, {}) == "InvalidAction"


def test_malformed_inputs_never_break_the_server(fresh):
    """Seeded random garbage for every action's parameters: every answer is a
    well-formed success or Tencent error, and the server stays up."""
    import random

    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

    rnd = random.Random(1234)
    names = ["SecurityGroupId", "SecurityGroupIds", "SecurityGroupPolicySet", "GroupName", "GroupDescription",
             "Filters", "Offset", "Limit", "InstanceIds", "SecurityGroups", "Instances", "InstanceId",
             "Addresses", "Services", "AddressTemplateIds", "ServiceTemplateIds", "AddressTemplateName",
             "ServiceTemplateName", "AddressTemplateId", "Tags", "Version", "AfterRevision", "WaitSeconds"]
    atoms = [None, True, -1, 2**63, 1.5, "", "sg-", "sg-00000000", "ins-00000000", "0.0.0.0/0", "x" * 300,
             "tcp:0-99999", "\u0000\u2603", [], {}, [None], [{"Name": "x"}], {"Ingress": [{"PolicyIndex": -5}]},
             {"Egress": [{"Protocol": "TCP", "Port": "1-2-3", "CidrBlock": "::/0", "Action": "ACCEPT"}]},
             [{"PrivateIpAddresses": ["1.2.3.4"], "InstanceId": 7}], {"Version": "-1"}, [{"Key": None}]]

    def value(depth=0):
        if depth < 2 and rnd.random() < 0.3:
            return {rnd.choice(names + ["Ingress", "Egress", "Protocol", "Port"]): value(depth + 1) for _ in range(rnd.randint(0, 3))}
        if depth < 2 and rnd.random() < 0.2:
            return [value(depth + 1) for _ in range(rnd.randint(0, 3))]
        return rnd.choice(atoms)

    clients = [(fresh.vpc, a) for a in VPC] + [(fresh.cvm, a) for a in CVM] + [(fresh.pal, a) for a in PALISADE]
    for i in range(400):
        client, action = rnd.choice(clients)
        params = {rnd.choice(names): value() for _ in range(rnd.randint(0, 4))}
        if action == "DescribeInstanceRuleset":
            params.pop("WaitSeconds", None)
        try:
            r = client.call_json(action, params)
            assert "RequestId" in r["Response"], (action, params)
        except TencentCloudSDKException as e:
            assert e.get_code() and e.get_code() != "InternalError", (action, params, e)
            assert e.get_code() not in ("ClientNetworkError", "ServerNetworkError"), (action, params, e)
    assert fresh.v("DescribeSecurityGroupLimits")["SecurityGroupLimitSet"]["InstanceSecurityGroupLimit"] == 5
