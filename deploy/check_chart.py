"""Assertions on the Helm chart's rendered manifests (run by deploy/check).

Usage: check_chart.py EXAMPLE RENDERED.yaml CONFIG_OUT
Reads the example values and the manifests `helm template` rendered from them, checks ports,
probes, grace period, preStop drain and announced address, and writes the rendered Fanout
configuration file to CONFIG_OUT for `fanout config` to accept.
"""
import sys

import yaml


def fail(msg):
    sys.exit(f"check_chart: {sys.argv[1]}: {msg}")


values_path, rendered_path, config_out = sys.argv[1:4]
with open("deploy/helm/fanout/values.yaml") as f:
    values = yaml.safe_load(f)
with open(values_path) as f:
    example = yaml.safe_load(f)


def merge(a, b):
    for k, v in b.items():
        a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return a


values = merge(values, example)
with open(rendered_path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)

media = values["media"]
drivers, base = media["drivers"], media["udpPort"]
host_net = media["exposure"] == "hostNetwork"
slots = 1 if host_net else media["hostPortSlots"]
deployments = by_kind.get("Deployment", [])
if len(deployments) != slots:
    fail(f"{len(deployments)} Deployments, want {slots}")
seen_ports = set()
for slot, dep in enumerate(sorted(deployments, key=lambda d: d["metadata"]["name"])):
    pod = dep["spec"]["template"]["spec"]
    if bool(pod.get("hostNetwork")) != host_net:
        fail(f"{dep['metadata']['name']}: hostNetwork {pod.get('hostNetwork')}")
    grace = pod["terminationGracePeriodSeconds"]
    if grace < values["drainTimeoutSeconds"] + 10:
        fail(f"grace period {grace} s is shorter than the drain timeout")
    (c,) = pod["containers"]
    if c["readinessProbe"]["httpGet"]["path"] != "/readyz" or c["livenessProbe"]["httpGet"]["path"] != "/healthz":
        fail("probes must be /readyz (readiness) and /healthz (liveness)")
    if "kill -TERM 1" not in " ".join(c["lifecycle"]["preStop"]["exec"]["command"]):
        fail("preStop must start the drain")
    env = {e["name"]: e for e in c["env"]}
    first = base + slot * drivers
    if env["FANOUT_UDP_PORT"]["value"] != str(first):
        fail(f"slot {slot}: FANOUT_UDP_PORT {env['FANOUT_UDP_PORT']['value']}, want {first}")
    udp = [p for p in c["ports"] if p["protocol"] == "UDP"]
    want = list(range(first, first + drivers))
    if [p["containerPort"] for p in udp] != want or [p["hostPort"] for p in udp] != want:
        fail(f"slot {slot}: UDP ports {udp}, want {want} as container and host ports")
    if seen_ports & set(want):
        fail(f"slot {slot} reuses ports {seen_ports & set(want)}")
    seen_ports |= set(want)
    announce = env.get("FANOUT_ANNOUNCE_IPS")
    if media["announce"]["ips"]:
        if announce is None or announce.get("value") != ",".join(media["announce"]["ips"]):
            fail(f"announced address {announce}")
    elif media["announce"]["fromNodeIP"]:
        if announce is None or announce["valueFrom"]["fieldRef"]["fieldPath"] != "status.hostIP":
            fail(f"the node's IP must be announced: {announce}")
    if env["FANOUT_API_SECRET"]["valueFrom"]["secretKeyRef"]["key"] != values["secret"]["key"]:
        fail("the API secret must come from the Secret")
(config_map,) = by_kind["ConfigMap"]
with open(config_out, "w") as f:
    f.write(config_map["data"]["fanout.yaml"])
if values["secret"]["existingSecret"] and by_kind.get("Secret"):
    fail("an existing Secret must not be created again")
if values["podDisruptionBudget"]["enabled"] and not by_kind.get("PodDisruptionBudget"):
    fail("no PodDisruptionBudget")
if values["autoscaling"]["enabled"] and len(by_kind.get("HorizontalPodAutoscaler", [])) != slots:
    fail("one HorizontalPodAutoscaler per Deployment")
if values["serviceMonitor"]["enabled"] and not by_kind.get("ServiceMonitor"):
    fail("no ServiceMonitor")
print(f"check_chart: {values_path}: {len(docs)} manifests ok")
