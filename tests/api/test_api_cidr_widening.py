"""Issue 23: a short block whose network masks to 0.0.0.0 (`9.9.9.9/3`,
`10.0.0.0/1`, `0.0.0.0/8`) was stored and described as 0.0.0.0/0, so a rule
for TCP 22 from an eighth of the IPv4 space opened SSH to the whole Internet.
Through the real SDK: every such block is refused with InvalidParameterValue
and nothing is stored; blocks that only start low are kept exactly; a
describe-then-create round trip never widens anything."""

import pytest

from palisade_api import error_code

ZERO_NETWORK = ["9.9.9.9/3", "9.9.9.9/3 ", "10.0.0.0/1", "1.2.3.4/7", "0.0.0.0/8", "0.0.0.0/32"]


def ssh(cidr):
    return {"Protocol": "TCP", "Port": "22", "CidrBlock": cidr, "Action": "ACCEPT"}


@pytest.mark.parametrize("cidr", ZERO_NETWORK)
def test_zero_network_blocks_are_refused_and_store_nothing(fresh, cidr):
    sg = fresh.group()
    before = fresh.rules(sg)
    code = error_code(fresh.v, "CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [ssh(cidr)]}})
    assert code.startswith("InvalidParameterValue"), code
    assert fresh.rules(sg) == before
    code = error_code(fresh.v, "CreateAddressTemplate", {"AddressTemplateName": "t", "Addresses": ["192.0.2.1", cidr]})
    assert code.startswith("InvalidParameterValue"), code
    assert fresh.v("DescribeAddressTemplates", {})["TotalCount"] == 0


def test_blocks_are_described_as_written_and_round_trip(fresh):
    sg = fresh.group()
    written = ["128.0.0.0/1", "9.9.9.9/8", "0.0.0.0/0", "0.0.0.0", "203.0.113.7"]
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [ssh(c) for c in written]}})
    described = [r["CidrBlock"] for r in fresh.rules(sg)["Ingress"]]
    assert described == ["128.0.0.0/1", "9.0.0.0/8", "0.0.0.0/0", "0.0.0.0", "203.0.113.7"]
    # What tccli users do: describe, then create the same rules elsewhere.
    copy = fresh.group("copy")
    rules = [ssh(c) for c in described]
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": copy, "SecurityGroupPolicySet": {"Ingress": rules}})
    assert [r["CidrBlock"] for r in fresh.rules(copy)["Ingress"]] == described
    # IPv6 is literal: ::/1 stays half the space.
    fresh.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Egress": [{"Protocol": "ALL", "Ipv6CidrBlock": "2001:db8::/1", "Action": "ACCEPT"}]}})
    assert fresh.rules(sg)["Egress"][0]["Ipv6CidrBlock"] == "::/1"
