"""Join tokens through the Python SDK (issue 22): CreateJoinToken,
DescribeJoinTokens and RevokeJoinToken with CommonClient("palisade", ...),
the unsigned JoinCluster a node sends with plain HTTP, and the key it
receives used with the SDK, reading its own ruleset only."""

import json
import urllib.request

from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient

from palisade_api import REGION, error_code, profile


def join(server, token, instance, ip):
    req = urllib.request.Request(
        f"http://{server.endpoint}/",
        data=json.dumps({"JoinToken": token, "InstanceId": instance, "PrivateIpAddresses": [ip]}).encode(),
        headers={"X-TC-Action": "JoinCluster", "X-TC-Version": "2026-11-01", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        assert r.headers["Content-Type"] == "application/json"
        return json.load(r)["Response"]


def test_a_token_made_with_the_sdk_joins_one_node(server, fresh):
    sg = fresh.group("nodes")
    fresh.p("RegisterCluster", {"ClusterId": "cls-sdkjoin1", "ClusterCidr": "10.0.0.0/16",
                                "ContainerCidr": "172.16.0.0/16", "NodeSecurityGroupIds": [sg]})
    made = fresh.p("CreateJoinToken", {"ClusterId": "cls-sdkjoin1", "TtlSeconds": 600, "MaxUses": 1,
                                       "AllowedCidrs": ["10.0.0.0/16"]})
    token = made["JoinToken"]
    assert token.startswith(made["JoinTokenId"] + ".")
    listed = fresh.p("DescribeJoinTokens", {"ClusterId": "cls-sdkjoin1"})
    assert listed["TotalCount"] == 1 and listed["JoinTokenSet"][0]["State"] == "Active"
    assert token.split(".")[1] not in json.dumps(listed)

    joined = join(server, token, "ins-sdkjoin1", "10.0.0.7")
    assert joined["SecurityGroupIds"] == [sg] and joined["ClusterId"] == "cls-sdkjoin1", joined
    inst = fresh.c("DescribeInstances", {"InstanceIds": ["ins-sdkjoin1"]})["InstanceSet"][0]
    assert inst["SecurityGroupIds"] == [sg]
    assert fresh.p("DescribeClusters", {"ClusterIds": ["cls-sdkjoin1"]})["ClusterSet"][0]["Nodes"] == ["ins-sdkjoin1"]

    # The node's own key, through the SDK: its ruleset, nothing else.
    node = CommonClient("palisade", "2026-11-01",
                        credential.Credential(joined["SecretId"], joined["SecretKey"]), REGION,
                        profile(server.endpoint))
    rs = node.call_json("DescribeInstanceRuleset", {"InstanceId": "ins-sdkjoin1"})["Response"]["Ruleset"]
    assert rs["SecurityGroupIds"] == [sg]
    assert error_code(node.call_json, "DescribeClusters", {}) == "AuthFailure.UnauthorizedOperation"

    # Used up, then revoked: refused, nothing registered.
    again = join(server, token, "ins-sdkjoin2", "10.0.0.8")
    assert again["Error"]["Code"] == "AuthFailure.UnauthorizedOperation", again
    fresh.p("RevokeJoinToken", {"JoinTokenId": made["JoinTokenId"]})
    assert fresh.p("DescribeJoinTokens")["JoinTokenSet"][0]["State"] == "Revoked"
    assert fresh.c("DescribeInstances")["TotalCount"] == 1

    # The node leaves with its own key.
    node.call_json("LeaveCluster", {"InstanceId": "ins-sdkjoin1"})
    assert fresh.c("DescribeInstances")["TotalCount"] == 0
    assert fresh.p("DescribeClusters", {"ClusterIds": ["cls-sdkjoin1"]})["ClusterSet"][0]["Nodes"] == []
