"""The lab's pure helpers in both BGP modes: who the ToR peers with, and the configuration in
upstream's kinds (`python3 -m unittest discover -s hack -p '*_test.py'`, which `tasks.py test` runs)."""

import unittest

import labnet


def documents(manifests, kind):
    """name -> text of the documents of kind."""
    out = {}
    for doc in manifests.split("\n---\n"):
        if f"\nkind: {kind}\n" in f"\n{doc}\n":
            out[doc.split("\n  name: ", 1)[1].split("\n", 1)[0]] = doc
    return out


class TopologyTest(unittest.TestCase):
    def test_modes(self):
        for mode, reflectors, tor_peers in (("full-mesh", [], ["lb1", "lb2", "lb3"]),
                                             ("reflector", ["refl1", "refl2"], ["refl1", "refl2"])):
            with self.subTest(mode):
                t = labnet.Topology(3, 0, mode)
                self.assertEqual(t.reflectors, reflectors)
                self.assertEqual(t.tor_peers, tor_peers)
                self.assertEqual([ns for ns in t.all_netns if "refl" in ns], [f"maglb-{r}" for r in reflectors])
                for ns in t.all_netns:
                    self.assertRegex(ns, labnet.LAB_NETNS)

    def test_reflector_addresses(self):
        t = labnet.Topology(3, 0, "reflector")
        self.assertEqual([t.address(r) for r in t.reflectors], ["172.31.0.3", "172.31.0.4"])
        self.assertEqual([t.address6(r) for r in t.reflectors], ["fd00:31::3", "fd00:31::4"])


class ToRConfigTest(unittest.TestCase):
    def test_neighbors(self):
        for mode, want, unwanted in (("full-mesh", ["172.31.0.11", "fd00:31::13"], ["172.31.0.3"]),
                                     ("reflector", ["172.31.0.3", "fd00:31::4"], ["172.31.0.11", "fd00:31::13"])):
            with self.subTest(mode):
                conf = labnet.frr_config(labnet.Topology(3, 0, mode))
                for a in want:
                    self.assertIn(f" neighbor {a} peer-group NODES", conf)
                for a in unwanted:
                    self.assertNotIn(f" neighbor {a} ", conf)
                self.assertEqual(conf.count("maximum-paths 16"), 2)
                self.assertIn(f"bfd profile {labnet.BFD_PROFILE}", conf)


class ManifestsTest(unittest.TestCase):
    def test_full_mesh(self):
        m = labnet.lab_manifests(labnet.Topology(3, 0), "bgp", "ns")
        peers = documents(m, "BGPPeer")
        self.assertEqual(sorted(peers), ["tor", "tor6"])
        self.assertNotIn("nodeSelectors", peers["tor"])
        self.assertEqual(sorted(documents(m, "BGPAdvertisement")), ["demo"])

    def test_reflector(self):
        m = labnet.lab_manifests(labnet.Topology(3, 0, "reflector"), "bgp", "ns")
        peers = documents(m, "BGPPeer")
        self.assertEqual(sorted(peers), ["refl1", "refl1-v6", "refl2", "refl2-v6", "tor", "tor6"])
        for name, address in (("refl1", "172.31.0.3"), ("refl2-v6", "fd00:31::4")):
            self.assertIn(f'peerAddress: "{address}"', peers[name])
            self.assertIn(f"peerASN: {labnet.NODE_ASN}", peers[name])
            self.assertIn("{key: maglb.io/reflector, operator: DoesNotExist}", peers[name])
            self.assertNotIn("bfdProfile", peers[name])
        for name in ("tor", "tor6"):
            self.assertIn(f"peerASN: {labnet.TOR_ASN}", peers[name])
            self.assertIn("{key: maglb.io/reflector, operator: Exists}", peers[name])
            self.assertIn(f"bfdProfile: {labnet.BFD_PROFILE}", peers[name])
        advs = documents(m, "BGPAdvertisement")
        self.assertIn("peers: [refl1, refl1-v6, refl2, refl2-v6]", advs["demo"])
        self.assertNotIn("aggregationLength", advs["demo"])
        self.assertIn("peers: [tor, tor6]", advs["demo-aggregated"])
        self.assertIn("aggregationLength: 26\n  aggregationLengthV6: 121", advs["demo-aggregated"])

    def test_reflector_nodes(self):
        nodes = documents(labnet.node_manifests(labnet.Topology(3, 0, "reflector")), "Node")
        self.assertEqual(sorted(nodes), ["be1", "be2", "lb1", "lb2", "lb3", "refl1", "refl2"])
        for name in ("refl1", "refl2"):
            self.assertIn('maglb.io/reflector: ""', nodes[name])
            self.assertIn('node.kubernetes.io/exclude-from-external-load-balancers: ""', nodes[name])
        self.assertNotIn("maglb.io/reflector", nodes["lb1"])


if __name__ == "__main__":
    unittest.main()
