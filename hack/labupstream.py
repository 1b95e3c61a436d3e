"""Upstream MetalLB in the lab (`tasks.py dev-env --metallb upstream`, the e2e pass `upgrade`):
what upstream's own Helm chart installs, taken from `helm template` of the chart in the Go
module cache (go.universe.tf/metallb@vX/charts/metallb) with UPGRADE_VALUES — its CRDs, and the
arguments and environment of its controller and speaker — so that the lab runs upstream's
binaries, and then MagLB's, exactly as that chart starts them.

Pure helpers here (picking objects out of the rendering, resolving the downward API) do no I/O;
render() runs go and helm.
"""

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from labcluster import LabError

MODULE = "go.universe.tf/metallb"
RELEASE = "metallb"
# The values of the lab's release, and of the guide's `helm upgrade` (docs/upgrade.md): native
# BGP (no FRR container) and no memberlist (layer 2 liveness then follows the Node objects).
UPGRADE_VALUES = {"speaker": {"frr": {"enabled": False}, "memberlist": {"enabled": False}}}
# v0.15's CRDs declare the AS numbers of BGPPeer v1beta2 as int32 with a maximum of 2^32-1,
# which kube-apiserver refuses since 1.33; v0.16 declares them int64, as this makes them.
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Upstream:
    """Upstream MetalLB's release the lab runs: its version, the directory of its built
    metallb-controller and metallb-speaker, and the helm binary that renders its chart."""
    version: str
    bin_dir: Path
    helm: Path

    def binary(self, component):
        return self.bin_dir / f"metallb-{component}"

    def describe(self):
        return {"version": self.version, "bin_dir": str(self.bin_dir), "helm": str(self.helm)}

    @staticmethod
    def from_description(d):
        return Upstream(d["version"], Path(d["bin_dir"]), Path(d["helm"])) if d else None


def chart_dir(version):
    """Upstream's chart, from the Go module cache (downloaded when missing)."""
    with tempfile.TemporaryDirectory() as outside_any_module:
        proc = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@v{version}"], cwd=outside_any_module,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        module = json.loads(proc.stdout)
    except ValueError:
        raise LabError(f"go mod download {MODULE}@v{version}: {proc.stdout.strip()}") from None
    if proc.returncode != 0 or module.get("Error"):
        raise LabError(f"go mod download {MODULE}@v{version}: {module.get('Error') or proc.stdout.strip()}")
    return Path(module["Dir"]) / "charts" / "metallb"


def render(upstream, namespace, out_dir):
    """helm template of upstream's chart with UPGRADE_VALUES into out_dir: values.yaml,
    rendered.yaml (everything), crds.yaml (its CRDs, installable) and components.json (each
    component's container arguments and environment)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    values = out_dir / "values.yaml"
    values.write_text(yaml.safe_dump(UPGRADE_VALUES))
    proc = subprocess.run([str(upstream.helm), "template", RELEASE, str(chart_dir(upstream.version)),
                           "--namespace", namespace, "--values", str(values)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise LabError(f"helm template of upstream MetalLB v{upstream.version}'s chart: {proc.stderr.strip()}")
    (out_dir / "rendered.yaml").write_text(proc.stdout)
    objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
    crds = [installable(o) for o in objects if o["kind"] == "CustomResourceDefinition"]
    (out_dir / "crds.yaml").write_text(yaml.safe_dump_all(crds))
    (out_dir / "components.json").write_text(json.dumps(components(objects), indent=2) + "\n")


def installable(crd):
    """The CRD with every integer declared int32 but allowed above INT32_MAX declared int64."""
    def fix(node):
        if isinstance(node, dict):
            if node.get("format") == "int32" and node.get("maximum", 0) > INT32_MAX:
                node["format"] = "int64"
            for v in node.values():
                fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)
    fix(crd)
    return crd


def components(objects):
    """{"controller": {"args": [...], "env": [...]}, "speaker": ...}: the container of the
    chart's controller Deployment and speaker DaemonSet."""
    found = {}
    for o in objects:
        if o["kind"] not in ("Deployment", "DaemonSet"):
            continue
        for c in o["spec"]["template"]["spec"]["containers"]:
            if c["name"] in ("controller", "speaker"):
                found[c["name"]] = {"args": c.get("args") or [], "env": c.get("env") or []}
    missing = {"controller", "speaker"} - set(found)
    if missing:
        raise LabError(f"upstream's chart rendered no {', '.join(sorted(missing))} container")
    return found


def resolve_env(env, fields):
    """A container's environment as a dict, the downward API's fieldRefs taken from fields
    (fieldPath -> value), as a kubelet would."""
    resolved = {}
    for e in env:
        if "value" in e:
            resolved[e["name"]] = str(e["value"])
            continue
        path = (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        if path not in fields:
            raise LabError(f"environment variable {e['name']}: the lab cannot provide {e.get('valueFrom')}")
        resolved[e["name"]] = fields[path]
    return resolved


def load_components(out_dir):
    try:
        return json.loads((out_dir / "components.json").read_text())
    except OSError:
        raise LabError(f"{out_dir / 'components.json'} missing: the lab did not render upstream's chart") from None


def speaker_pod_name(node):
    return f"{RELEASE}-speaker-{node}"


def speaker_pod_manifest(node, namespace):
    """The Pod object a speaker of the chart's DaemonSet would be: upstream's speaker looks
    itself up by METALLB_POD_NAME (its status objects name it as their owner). No kubelet runs
    it; the lab runs the process."""
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {speaker_pod_name(node)}
  namespace: {namespace}
  labels:
    app.kubernetes.io/name: metallb
    app.kubernetes.io/instance: {RELEASE}
    app.kubernetes.io/component: speaker
spec:
  nodeName: {node}
  hostNetwork: true
  containers:
  - name: speaker
    image: quay.io/metallb/speaker
"""
