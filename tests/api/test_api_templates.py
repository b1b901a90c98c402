"""Address and service templates and template groups through the real SDK:
create / describe / modify / delete, their use in rules, expansion, and that
a template in use cannot be deleted."""

import re

from palisade_api import error_code


def test_address_templates_and_groups(fresh):
    t = fresh.v("CreateAddressTemplate", {"AddressTemplateName": "office", "Addresses": ["10.0.0.1", "192.168.0.0/16", "172.16.0.1-172.16.0.9"]})["AddressTemplate"]
    assert re.match(r"^ipm-[a-z0-9]{8}$", t["AddressTemplateId"])
    assert t["AddressTemplateName"] == "office"
    assert t["AddressSet"] == ["10.0.0.1", "192.168.0.0/16", "172.16.0.1-172.16.0.9"]
    assert [x["Address"] for x in t["AddressExtraSet"]] == t["AddressSet"]
    ipm = t["AddressTemplateId"]
    assert error_code(fresh.v, "CreateAddressTemplate", {"AddressTemplateName": "bad", "Addresses": ["10.0.0.999"]}) == "InvalidParameterValue.Malformed"
    assert error_code(fresh.v, "CreateAddressTemplate", {"AddressTemplateName": "dup", "Addresses": ["10.0.0.1", "10.0.0.1"]}) == "InvalidParameterValue.Duplicate"
    assert error_code(fresh.v, "CreateAddressTemplate", {"AddressTemplateName": "none"}) == "MissingParameter"
    r = fresh.v("DescribeAddressTemplates")
    assert r["TotalCount"] == 1 and r["AddressTemplateSet"][0]["AddressTemplateId"] == ipm
    r = fresh.v("DescribeAddressTemplates", {"Filters": [{"Name": "address-ip", "Values": ["172.16.0.5"]}]})
    assert r["TotalCount"] == 1
    r = fresh.v("DescribeAddressTemplates", {"Filters": [{"Name": "address-template-name", "Values": ["nope"]}]})
    assert r["TotalCount"] == 0
    fresh.v("ModifyAddressTemplateAttribute", {"AddressTemplateId": ipm, "AddressTemplateName": "office2", "AddressesExtra": [{"Address": "10.9.0.0/16", "Description": "new"}]})
    t2 = fresh.v("DescribeAddressTemplates", {"Filters": [{"Name": "address-template-id", "Values": [ipm]}]})["AddressTemplateSet"][0]
    assert t2["AddressTemplateName"] == "office2" and t2["AddressSet"] == ["10.9.0.0/16"]
    assert t2["AddressExtraSet"][0]["Description"] == "new"

    g = fresh.v("CreateAddressTemplateGroup", {"AddressTemplateGroupName": "all", "AddressTemplateIds": [ipm]})["AddressTemplateGroup"]
    ipmg = g["AddressTemplateGroupId"]
    assert re.match(r"^ipmg-[a-z0-9]{8}$", ipmg) and g["AddressTemplateIdSet"] == [ipm]
    assert error_code(fresh.v, "CreateAddressTemplateGroup", {"AddressTemplateGroupName": "x", "AddressTemplateIds": ["ipm-00000000"]}) == "ResourceNotFound"
    r = fresh.v("DescribeAddressTemplateGroups")
    assert r["TotalCount"] == 1 and r["AddressTemplateGroupSet"][0]["AddressTemplateIdSet"] == [ipm]

    # Modify the group: rename, and members must exist (a failed call changes nothing).
    ipm2 = fresh.v("CreateAddressTemplate", {"AddressTemplateName": "lab", "Addresses": ["fd00::/64"]})["AddressTemplate"]["AddressTemplateId"]
    fresh.v("ModifyAddressTemplateGroupAttribute", {"AddressTemplateGroupId": ipmg, "AddressTemplateGroupName": "all2", "AddressTemplateIds": [ipm, ipm2]})
    before = fresh.v("DescribeAddressTemplateGroups")["AddressTemplateGroupSet"]
    assert before[0]["AddressTemplateGroupName"] == "all2" and before[0]["AddressTemplateIdSet"] == [ipm, ipm2]
    assert [m["AddressTemplateId"] for m in before[0]["AddressTemplateSet"]] == [ipm, ipm2]
    assert error_code(fresh.v, "ModifyAddressTemplateGroupAttribute", {"AddressTemplateGroupId": ipmg, "AddressTemplateIds": [ipm, "ipm-00000000"]}) == "ResourceNotFound"
    assert fresh.v("DescribeAddressTemplateGroups")["AddressTemplateGroupSet"] == before
    fresh.v("ModifyAddressTemplateGroupAttribute", {"AddressTemplateGroupId": ipmg, "AddressTemplateIds": [ipm]})
    fresh.v("DeleteAddressTemplate", {"AddressTemplateId": ipm2})
    # In use by a template group: cannot be deleted.
    assert error_code(fresh.v, "DeleteAddressTemplate", {"AddressTemplateId": ipm}) == "ResourceInUse"
    sg = fresh.group()
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [
        {"Protocol": "TCP", "Port": "22", "AddressTemplate": {"AddressGroupId": ipmg}, "Action": "ACCEPT"},
    ]}})
    r = fresh.rules(sg)["Ingress"][0]
    assert r["AddressTemplate"] == {"AddressId": "", "AddressGroupId": ipmg} and r["CidrBlock"] == ""
    exp = fresh.v("DescribeSecurityGroupExpandedPolicies", {"SecurityGroupId": sg})["SecurityGroupPolicySet"]["Ingress"]
    assert [(e["CidrBlock"], e["PolicyIndex"]) for e in exp] == [("10.9.0.0/16", 0)]
    # In use by a rule: cannot be deleted.
    assert error_code(fresh.v, "DeleteAddressTemplateGroup", {"AddressTemplateGroupId": ipmg}) == "ResourceInUse"
    fresh.v("DeleteSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"PolicyIndex": 0}]}})
    fresh.v("DeleteAddressTemplateGroup", {"AddressTemplateGroupId": ipmg})
    fresh.v("DeleteAddressTemplate", {"AddressTemplateId": ipm})
    assert fresh.v("DescribeAddressTemplates")["TotalCount"] == 0
    assert error_code(fresh.v, "DeleteAddressTemplate", {"AddressTemplateId": ipm}) == "ResourceNotFound"


def test_service_templates_and_groups(fresh):
    t = fresh.v("CreateServiceTemplate", {"ServiceTemplateName": "web", "Services": ["tcp:80", "tcp:443", "udp:53,5353"]})["ServiceTemplate"]
    ppm = t["ServiceTemplateId"]
    assert re.match(r"^ppm-[a-z0-9]{8}$", ppm) and t["ServiceSet"] == ["tcp:80", "tcp:443", "udp:53,5353"]
    assert error_code(fresh.v, "CreateServiceTemplate", {"ServiceTemplateName": "bad", "Services": ["tcp:99999"]}).startswith("InvalidParameterValue")
    assert error_code(fresh.v, "CreateServiceTemplate", {"ServiceTemplateName": "bad", "Services": ["http:80"]}) == "InvalidParameterValue.Malformed"
    g = fresh.v("CreateServiceTemplateGroup", {"ServiceTemplateGroupName": "webs", "ServiceTemplateIds": [ppm]})["ServiceTemplateGroup"]
    ppmg = g["ServiceTemplateGroupId"]
    assert g["ServiceTemplateIdSet"] == [ppm] and g["ServiceTemplateSet"][0]["ServiceTemplateId"] == ppm
    r = fresh.v("DescribeServiceTemplates", {"Filters": [{"Name": "service-port", "Values": ["443"]}]})
    assert r["TotalCount"] == 1
    assert fresh.v("DescribeServiceTemplateGroups")["ServiceTemplateGroupSet"][0]["ServiceTemplateGroupName"] == "webs"
    fresh.v("ModifyServiceTemplateAttribute", {"ServiceTemplateId": ppm, "Services": ["tcp:8080"]})
    fresh.v("ModifyServiceTemplateGroupAttribute", {"ServiceTemplateGroupId": ppmg, "ServiceTemplateGroupName": "renamed"})
    assert fresh.v("DescribeServiceTemplateGroups")["ServiceTemplateGroupSet"][0]["ServiceTemplateGroupName"] == "renamed"
    sg = fresh.group()
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Egress": [
        {"ServiceTemplate": {"ServiceId": ppm}, "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"},
    ]}})
    r = fresh.rules(sg)["Egress"][0]
    assert r["ServiceTemplate"] == {"ServiceId": ppm, "ServiceGroupId": ""} and r["Protocol"] == "" and r["Port"] == ""
    exp = fresh.v("DescribeSecurityGroupExpandedPolicies", {"SecurityGroupId": sg})["SecurityGroupPolicySet"]["Egress"]
    assert [(e["Protocol"], e["Port"]) for e in exp] == [("TCP", "8080")]
    assert error_code(fresh.v, "DeleteServiceTemplate", {"ServiceTemplateId": ppm}) == "ResourceInUse"
    before = fresh.v("DescribeServiceTemplates")
    assert error_code(fresh.v, "DeleteServiceTemplateGroup", {"ServiceTemplateGroupId": "ppmg-bad"}) == "InvalidParameterValue.Malformed"
    fresh.v("DeleteServiceTemplateGroup", {"ServiceTemplateGroupId": ppmg})
    assert error_code(fresh.v, "DeleteServiceTemplate", {"ServiceTemplateId": ppm}) == "ResourceInUse"
    after = fresh.v("DescribeServiceTemplates")
    assert after["ServiceTemplateSet"] == before["ServiceTemplateSet"] and after["TotalCount"] == 1
    fresh.v("DeleteSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Egress": [{"PolicyIndex": 0}]}})
    fresh.v("DeleteServiceTemplate", {"ServiceTemplateId": ppm})
    assert fresh.v("DescribeServiceTemplates")["TotalCount"] == 0
