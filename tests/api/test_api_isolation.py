"""Accounts: no action of one account can read, change, reference or bind
another account's resources; it gets ResourceNotFound (CVM:
InvalidSecurityGroupId.NotFound / InvalidInstanceId.NotFound), as if they did
not exist, and nothing changes."""

from palisade_api import Api, error_code


def test_other_accounts_resources_are_invisible(server, fresh):
    alice = fresh
    bob = Api(server, server.create_account("bob-" + alice.creds["AccountId"][-8:]))
    sg = alice.group("alice-web")
    alice.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}]}})
    ipm = alice.v("CreateAddressTemplate", {"AddressTemplateName": "a", "Addresses": ["10.0.0.1"]})["AddressTemplate"]["AddressTemplateId"]
    ins = alice.p("RegisterInstances", {"Instances": [{"PrivateIpAddresses": ["10.0.0.1"]}]})["InstanceIdSet"][0]
    before = alice.rules(sg)

    assert bob.v("DescribeSecurityGroups")["TotalCount"] == 0
    assert error_code(bob.v, "DescribeSecurityGroups", {"SecurityGroupIds": [sg]}) == "ResourceNotFound"
    assert error_code(bob.v, "DescribeSecurityGroupPolicies", {"SecurityGroupId": sg}) == "ResourceNotFound"
    assert error_code(bob.v, "ModifySecurityGroupAttribute", {"SecurityGroupId": sg, "GroupName": "pwned"}) == "ResourceNotFound"
    assert error_code(bob.v, "CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"Protocol": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]}}) == "ResourceNotFound"
    assert error_code(bob.v, "ModifySecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Version": "0"}}) == "ResourceNotFound"
    assert error_code(bob.v, "DeleteSecurityGroup", {"SecurityGroupId": sg}) == "ResourceNotFound"
    assert error_code(bob.v, "CloneSecurityGroup", {"SecurityGroupId": sg}) == "ResourceNotFound"
    # Reference another account's group or template from one's own rule.
    mine = bob.group("bob")
    assert error_code(bob.v, "CreateSecurityGroupPolicies", {"SecurityGroupId": mine, "SecurityGroupPolicySet": {"Ingress": [{"Protocol": "ALL", "SecurityGroupId": sg, "Action": "ACCEPT"}]}}) == "ResourceNotFound"
    assert error_code(bob.v, "CreateSecurityGroupPolicies", {"SecurityGroupId": mine, "SecurityGroupPolicySet": {"Ingress": [{"Protocol": "ALL", "AddressTemplate": {"AddressId": ipm}, "Action": "ACCEPT"}]}}) == "ResourceNotFound"
    assert error_code(bob.v, "DeleteAddressTemplate", {"AddressTemplateId": ipm}) == "ResourceNotFound"
    assert bob.v("DescribeAddressTemplates")["TotalCount"] == 0
    # Bind: neither the group nor the instance exists for bob.
    bob_ins = bob.p("RegisterInstances", {"Instances": [{"PrivateIpAddresses": ["10.0.0.9"]}]})["InstanceIdSet"][0]
    assert error_code(bob.c, "AssociateSecurityGroups", {"SecurityGroupIds": [sg], "InstanceIds": [bob_ins]}) == "InvalidSecurityGroupId.NotFound"
    assert error_code(bob.c, "AssociateSecurityGroups", {"SecurityGroupIds": [mine], "InstanceIds": [ins]}) == "InvalidInstanceId.NotFound"
    assert bob.c("DescribeInstances", {"InstanceIds": [ins]})["TotalCount"] == 0
    assert error_code(bob.p, "DescribeInstanceRuleset", {"InstanceId": ins}) == "ResourceNotFound"
    assert error_code(bob.p, "DeregisterInstances", {"InstanceIds": [ins]}) == "ResourceNotFound"
    # Alice's data is untouched.
    assert alice.rules(sg) == before
    g = alice.v("DescribeSecurityGroups", {"SecurityGroupIds": [sg]})["SecurityGroupSet"][0]
    assert g["SecurityGroupName"] == "alice-web"
    assert alice.c("DescribeInstances")["TotalCount"] == 1
