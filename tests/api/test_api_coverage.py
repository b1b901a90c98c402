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
DescribeServiceTemplateGroups""".split()
CVM = "AssociateSecurityGroups DisassociateSecurityGroups ModifyInstancesAttribute DescribeInstances".split()
PALISADE = "RegisterInstances DeregisterInstances DescribeInstanceRuleset".split()
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
