"""Clusters in the palisade service: RegisterCluster (create / replace),
DescribeClusters, DeregisterClusters, validation and isolation."""

import re

from palisade_api import Api, error_code


def test_cluster_lifecycle(server, fresh):
    nodes = fresh.p("RegisterInstances", {"Instances": [{"PrivateIpAddresses": ["10.0.0.1"]}, {"PrivateIpAddresses": ["10.0.0.2"]}]})["InstanceIdSet"]
    cid = fresh.p("RegisterCluster", {"ClusterName": "prod", "ClusterCidr": "10.0.0.0/16", "ContainerCidr": "172.16.0.0/16",
                                      "Nodes": nodes, "SshSources": ["203.0.113.0/24"]})["ClusterId"]
    assert re.match(r"^cls-[a-z0-9]{8}$", cid)
    c = fresh.p("DescribeClusters")["ClusterSet"][0]
    assert c["ClusterId"] == cid and c["ClusterName"] == "prod"
    assert (c["ClusterCidr"], c["ContainerCidr"]) == ("10.0.0.0/16", "172.16.0.0/16")
    assert c["Nodes"] == nodes and c["Masters"] == [] and c["PeerClusters"] == []
    assert c["SshSources"] == ["203.0.113.0/24"] and c["NodePortSources"] == []
    created = c["CreatedTime"]
    # Registering the same id again replaces the description.
    fresh.p("RegisterCluster", {"ClusterId": cid, "ClusterCidr": "10.0.0.0/16", "ContainerCidr": "172.17.0.0/16", "Nodes": nodes[:1], "PeerClusters": ["cls-peer0001"]})
    c = fresh.p("DescribeClusters", {"ClusterIds": [cid]})["ClusterSet"][0]
    assert c["ContainerCidr"] == "172.17.0.0/16" and c["Nodes"] == nodes[:1] and c["PeerClusters"] == ["cls-peer0001"]
    assert c["CreatedTime"] == created
    before = fresh.p("DescribeClusters")["ClusterSet"]
    assert error_code(fresh.p, "RegisterCluster", {"ClusterId": cid, "ClusterCidr": "10.0.0.0/33", "ContainerCidr": "172.16.0.0/16"}) == "InvalidParameterValue.Malformed"
    assert error_code(fresh.p, "RegisterCluster", {"ClusterId": cid, "ClusterCidr": "10.0.0.0/16"}) == "MissingParameter"
    assert error_code(fresh.p, "RegisterCluster", {"ClusterId": cid, "ClusterCidr": "10.0.0.0/16", "ContainerCidr": "172.16.0.0/16", "Nodes": ["ins-00000000"]}) == "InvalidInstanceId.NotFound"
    assert error_code(fresh.p, "RegisterCluster", {"ClusterId": "cls-BAD", "ClusterCidr": "10.0.0.0/16", "ContainerCidr": "172.16.0.0/16"}) == "InvalidParameterValue.Malformed"
    assert fresh.p("DescribeClusters")["ClusterSet"] == before
    # Another account sees nothing and cannot take the id.
    other = Api(server, server.create_account("clusters-other-" + cid[-8:]))
    assert other.p("DescribeClusters")["TotalCount"] == 0
    assert error_code(other.p, "DescribeClusters", {"ClusterIds": [cid]}) == "ResourceNotFound"
    assert error_code(other.p, "DeregisterClusters", {"ClusterIds": [cid]}) == "ResourceNotFound"
    fresh.p("DeregisterClusters", {"ClusterIds": [cid]})
    assert fresh.p("DescribeClusters")["TotalCount"] == 0
    assert fresh.c("DescribeInstances")["TotalCount"] == 2
