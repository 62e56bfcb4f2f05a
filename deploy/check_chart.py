"""Assertions on the Helm chart's rendered manifests (run by deploy/check-chart).

Usage: check_chart.py EXAMPLE RENDERED.yaml FANOUT_BINARY
Reads the example values and the manifests `helm template` rendered from them and checks ports,
probes, grace period, preStop drain, announced address, the multi-node wiring (Redis URL, node
id and URL from the downward API, the chart's own Redis), selectors that keep Fanout's and
Redis's pods apart, and that values.schema.json knows every key of docs/configuration.md. Then,
for every Fanout Deployment, it runs `FANOUT_BINARY config` on the rendered configuration file
with the environment that Deployment's pods would get (downward API and Secret emulated) and
checks the effective configuration.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from urllib.parse import urlsplit

import yaml

CHART = "deploy/helm/fanout"
# Keys the chart sets from its own values (the schema refuses them under config:).
OWNED = {
    "bind", "udp_port", "udp_port_per_driver", "media_drivers", "ice_tcp_port", "announce_ips", "api_key", "api_secret",
    "drain_timeout", "redis_url", "node_id", "node_url", "room_placement", "turn_embedded",
    "turn_port", "turn_tls_port", "turn_tls_cert", "turn_tls_key", "turn_relay_ports",
}
# The chart's defaults that config: may override.
PRESETS = {"media_ip": "0.0.0.0", "static_dir": "/usr/share/fanout/www", "log_format": "json"}
SECRET = "chart-check-secret-chart-check-secret"
HOST_IP = "192.0.2.21"


def fail(msg):
    sys.exit(f"check_chart: {sys.argv[1]}: {msg}")


values_path, rendered_path, fanout_bin = sys.argv[1:4]
with open(f"{CHART}/values.yaml") as f:
    values = yaml.safe_load(f)
with open(values_path) as f:
    example = yaml.safe_load(f)
with open(f"{CHART}/values.schema.json") as f:
    schema = json.load(f)


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


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# The schema knows every setting of docs/configuration.md, and only those the chart leaves open.
with open("docs/configuration.md") as f:
    text = f.read()
table = text[text.index("\n## Keys"):]
table = table[:table.index("\n## ", 1)]
documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
schema_keys = set(schema["properties"]["config"]["properties"])
if schema["properties"]["config"].get("additionalProperties") is not False:
    fail("values.schema.json must refuse keys under config: that it does not know")
if schema_keys & OWNED:
    fail(f"the schema allows the chart's own keys under config: {sorted(schema_keys & OWNED)}")
if documented != schema_keys | OWNED:
    fail(f"docs/configuration.md and values.schema.json differ: missing from the schema "
         f"{sorted(documented - schema_keys - OWNED)}, unknown to the docs "
         f"{sorted((schema_keys | OWNED) - documented)}")
durations = {
    k for k, v in schema["properties"]["config"]["properties"].items() if "duration" in json.dumps(v)
}

media = values["media"]
turn = values["turn"]
turn_tls = turn["enabled"] and turn["tls"]["enabled"]
drivers, base = media["drivers"], media["udpPort"]
# UDP media ports per pod: one that every driver shares, or one per driver.
udp_ports = drivers if media.get("udpPortPerDriver") else 1
host_net = media["exposure"] == "hostNetwork"
slots = 1 if host_net else media["hostPortSlots"]
redis = values["redis"]
redis_deploy = redis["deploy"]["enabled"]
multi = bool(redis["url"]) or redis_deploy
deployments = by_kind.get("Deployment", [])
fanout_deps = sorted(
    (d for d in deployments if d["metadata"]["labels"]["app.kubernetes.io/name"] == "fanout"),
    key=lambda d: d["metadata"]["name"],
)
redis_deps = [d for d in deployments if d not in fanout_deps]
if len(fanout_deps) != slots:
    fail(f"{len(fanout_deps)} Fanout Deployments, want {slots}")
if len(redis_deps) != (1 if redis_deploy else 0):
    fail(f"{len(redis_deps)} other Deployments, want {1 if redis_deploy else 0} (Redis)")
services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
(fanout_svc,) = [s for s in services.values() if s["metadata"]["labels"]["app.kubernetes.io/name"] == "fanout"]

# The chart's own Redis: no persistence, probed, limited, not root, behind its own Service.
redis_url = redis["url"]
if redis_deploy:
    (rd,) = redis_deps
    name = rd["metadata"]["name"]
    pod = rd["spec"]["template"]
    labels = pod["metadata"]["labels"]
    if rd["spec"]["replicas"] != 1 or rd["spec"]["strategy"]["type"] != "Recreate":
        fail("Redis: one replica, replaced with Recreate (never two directories at once)")
    (c,) = pod["spec"]["containers"]
    image = f"{redis['deploy']['image']['repository']}:{redis['deploy']['image']['tag']}"
    if c["image"] != image or not re.match(r"redis:7(\.|-|$)", c["image"]):
        fail(f"Redis image {c['image']}, want {image}, an official redis:7")
    args = c["args"]
    joined = list(zip(args, args[1:]))
    if ("--save", "") not in joined or ("--appendonly", "no") not in joined:
        fail(f"Redis must not persist (--save \"\" --appendonly no): {args}")
    probe = " ".join(c["readinessProbe"]["exec"]["command"])
    if "redis-cli" not in probe or "ping" not in probe:
        fail(f"Redis readiness must be redis-cli ping: {probe}")
    if not {"cpu", "memory"} <= set(c["resources"].get("requests", {})):
        fail("Redis needs cpu and memory requests")
    sc = pod["spec"]["securityContext"]
    if not sc.get("runAsNonRoot") or not sc.get("runAsUser"):
        fail("Redis must run as a non-root user")
    if c["securityContext"].get("allowPrivilegeEscalation") is not False:
        fail("Redis: no privilege escalation")
    (port,) = c["ports"]
    svc = services.get(name)
    if svc is None:
        fail(f"no Service {name} for Redis")
    if not selects(svc["spec"]["selector"], labels) or selects(rd["spec"]["selector"]["matchLabels"], fanout_deps[0]["spec"]["template"]["metadata"]["labels"]):
        fail("the Redis Service/Deployment selectors must match Redis's pod and only it")
    (sp,) = svc["spec"]["ports"]
    if sp["targetPort"] not in (port["name"], port["containerPort"]) or port["containerPort"] != 6379:
        fail(f"Redis Service port {sp} does not reach the container port {port}")
    for other in [fanout_svc] + by_kind.get("PodDisruptionBudget", []):
        if selects(other["spec"]["selector"].get("matchLabels", other["spec"]["selector"]), labels):
            fail(f"{other['kind']} {other['metadata']['name']} selects the Redis pod")
    for sm in by_kind.get("ServiceMonitor", []):
        if selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]):
            fail("the ServiceMonitor selects the Redis Service")
    redis_url = f"redis://{name}.default.svc:{sp['port']}"
elif any("redis" in n for n in services):
    fail(f"a Redis Service without redis.deploy.enabled: {sorted(services)}")

fanout_bin = os.path.abspath(fanout_bin)
seen_ports = set()
with tempfile.TemporaryDirectory() as tmp:
    (config_map,) = by_kind["ConfigMap"]
    config_path = os.path.join(tmp, "fanout.yaml")
    with open(config_path, "w") as f:
        f.write(config_map["data"]["fanout.yaml"])
    rendered_config = yaml.safe_load(config_map["data"]["fanout.yaml"])
    for slot, dep in enumerate(fanout_deps):
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
        first = base + slot * udp_ports
        if env["FANOUT_UDP_PORT"]["value"] != str(first):
            fail(f"slot {slot}: FANOUT_UDP_PORT {env['FANOUT_UDP_PORT']['value']}, want {first}")
        # Every port a pod of this slot listens on, each range shifted past the previous slot's:
        # UDP media, ICE-TCP, TURN (UDP+TCP, TLS) and, listed only with hostPort, the relays.
        want = [(first + i, "UDP") for i in range(udp_ports)]
        ice_tcp = media["iceTcp"]["port"] + slot * drivers if media["iceTcp"]["enabled"] else None
        if ice_tcp is not None:
            want += [(ice_tcp + i, "TCP") for i in range(drivers)]
        relays = []
        if turn["enabled"]:
            want += [(turn["port"] + slot, "UDP"), (turn["port"] + slot, "TCP")]
            if turn_tls:
                want.append((turn["tls"]["port"] + slot, "TCP"))
            start = turn["relayPorts"]["start"] + slot * turn["relayPorts"]["count"]
            relays = [(start + i, "UDP") for i in range(turn["relayPorts"]["count"])]
        listed = [(p["containerPort"], p["protocol"]) for p in c["ports"] if p.get("name") != "http"]
        want_listed = want + ([] if host_net else relays)
        if listed != want_listed:
            fail(f"slot {slot}: container ports {listed}, want {want_listed}")
        if any(p.get("hostPort") != p["containerPort"] for p in c["ports"] if p.get("name") != "http"):
            fail(f"slot {slot}: every media/TURN port must be the same host port: {c['ports']}")
        if seen_ports & set(want + relays):
            fail(f"slot {slot} reuses ports {sorted(seen_ports & set(want + relays))}")
        seen_ports |= set(want + relays)
        for key, value in [
            ("FANOUT_ICE_TCP_PORT", ice_tcp),
            ("FANOUT_TURN_PORT", turn["port"] + slot if turn["enabled"] else None),
            ("FANOUT_TURN_TLS_PORT", turn["tls"]["port"] + slot if turn_tls else None),
            ("FANOUT_TURN_RELAY_PORTS", f"{relays[0][0]}-{relays[-1][0]}" if relays else None),
        ]:
            got = env.get(key, {}).get("value")
            if got != (None if value is None else str(value)):
                fail(f"slot {slot}: {key} = {got!r}, want {value!r}")
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        if turn_tls:
            if volumes.get("turn-tls", {}).get("secret", {}).get("secretName") != turn["tls"]["secretName"]:
                fail(f"slot {slot}: the TURN certificate must come from Secret {turn['tls']['secretName']}")
            tls_dir = mounts["turn-tls"]["mountPath"]
            if rendered_config.get("turn_tls_cert") != f"{tls_dir}/tls.crt" or rendered_config.get("turn_tls_key") != f"{tls_dir}/tls.key":
                fail(f"turn_tls_cert/key must be the mounted Secret's tls.crt/tls.key: {rendered_config}")
        elif "turn-tls" in volumes or "turn_tls_cert" in rendered_config:
            fail("a TURN certificate without turn.tls.enabled")
        # With hostPort, relays reach the media sockets at the pod's IP (no hairpin at the node).
        # (Pod IPs are IPv4: only IPv4 announced addresses are mapped.)
        public_v4 = [ip for ip in media["announce"]["ips"] if ":" not in ip]
        hairpin = turn["enabled"] and not host_net and bool(
            public_v4 or (not media["announce"]["ips"] and media["announce"]["fromNodeIP"]))
        nat = env.get("FANOUT_NAT_MAP", {}).get("value")
        if hairpin:
            public = public_v4 or ["$(HOST_IP)"]
            if nat != ",".join(f"$(POD_IP)={ip}" for ip in public):
                fail(f"slot {slot}: FANOUT_NAT_MAP {nat!r} must map the pod's IP to the announced one")
        elif nat is not None:
            fail(f"slot {slot}: FANOUT_NAT_MAP {nat!r} without a need for it")
        announce = env.get("FANOUT_ANNOUNCE_IPS")
        if media["announce"]["ips"]:
            if announce is None or announce.get("value") != ",".join(media["announce"]["ips"]):
                fail(f"announced address {announce}")
        elif media["announce"]["fromNodeIP"]:
            if announce is None or announce["valueFrom"]["fieldRef"]["fieldPath"] != "status.hostIP":
                fail(f"the node's IP must be announced: {announce}")
        if env["FANOUT_API_SECRET"]["valueFrom"]["secretKeyRef"]["key"] != values["secret"]["key"]:
            fail("the API secret must come from the Secret")
        http_port = values["http"]["port"]
        if multi:
            if env["FANOUT_REDIS_URL"].get("value") != redis_url:
                fail(f"FANOUT_REDIS_URL {env['FANOUT_REDIS_URL']}, want {redis_url}")
            if env["FANOUT_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] != "metadata.name":
                fail("FANOUT_NODE_ID must be the pod's name")
            if env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] != "status.podIP":
                fail("POD_IP must be the pod's IP")
            if env["FANOUT_NODE_URL"].get("value") != f"http://$(POD_IP):{http_port}":
                fail(f"FANOUT_NODE_URL {env['FANOUT_NODE_URL']}")
        elif {"FANOUT_REDIS_URL", "FANOUT_NODE_ID", "FANOUT_NODE_URL"} & set(env):
            fail("multi-node environment without Redis")
        # The kubelet expands $(VAR) only from variables defined before.
        names = [e["name"] for e in c["env"]]
        for e in c["env"]:
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")):
                if ref not in names or names.index(ref) > names.index(e["name"]):
                    fail(f"{e['name']} refers to $({ref}), which must come before it")
        owned_here = set(rendered_config) | {
            k.removeprefix("FANOUT_").lower() for k in env if k.startswith("FANOUT_")
        }
        want_owned = OWNED - ({"announce_ips"} if not (media["announce"]["ips"] or media["announce"]["fromNodeIP"]) else set()) \
            - ({"redis_url", "node_id", "node_url"} if not multi else set()) \
            - ({"ice_tcp_port"} if ice_tcp is None else set()) \
            - ({"turn_port", "turn_relay_ports"} if not turn["enabled"] else set()) \
            - ({"turn_tls_port", "turn_tls_cert", "turn_tls_key"} if not turn_tls else set())
        if want_owned - owned_here:
            fail(f"the chart does not set {sorted(want_owned - owned_here)}")

        # The real binary on the rendered file, with the environment a pod of this Deployment
        # gets (the downward API and the Secret emulated, $(VAR) expanded as the kubelet does).
        pod_name = f"{dep['metadata']['name']}-6d4cf56db6-x7q{slot}z"
        pod_ip = HOST_IP if host_net else f"10.244.{slot}.17"
        fields = {"metadata.name": pod_name, "status.podIP": pod_ip, "status.hostIP": HOST_IP}
        pod_env = {}
        for e in c["env"]:
            if "value" in e:
                pod_env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                            lambda m: pod_env.get(m.group(1), m.group(0)), e["value"])
            elif "fieldRef" in e["valueFrom"]:
                pod_env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
            else:
                pod_env[e["name"]] = SECRET
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")} | pod_env
        # Secret volumes emulated: their mount paths moved into the temporary directory.
        run_config = config_path
        if turn_tls:
            tls_dir = mounts["turn-tls"]["mountPath"]
            local = os.path.join(tmp, "turn-tls")
            os.makedirs(local, exist_ok=True)
            for f_name in ("tls.crt", "tls.key"):
                open(os.path.join(local, f_name), "w").close()
            run_config = os.path.join(tmp, f"fanout-slot{slot}.yaml")
            with open(run_config, "w") as f:
                f.write(config_map["data"]["fanout.yaml"].replace(tls_dir, local))
        out = subprocess.run([fanout_bin, "config", "--config", run_config], env=run_env,
                             capture_output=True, text=True, cwd=tmp)
        if out.returncode != 0:
            fail(f"slot {slot}: fanout config refused the rendered configuration: {out.stderr.strip()}")
        eff = tomllib.loads(out.stdout)

        def seconds(v):
            if isinstance(v, (int, float)):
                return float(v)
            units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
            parts = re.findall(r"(\d+)\s*([a-z]*)", v)
            return sum(int(n) * units[u or "s"] for n, u in parts)

        expect = {
            "bind": f"0.0.0.0:{http_port}", "udp_port": first, "media_drivers": drivers,
            "udp_port_per_driver": bool(media.get("udpPortPerDriver")),
            "api_key": values["apiKey"], "api_secret": "<redacted>",
            "room_placement": values["roomPlacement"],
        } | PRESETS | values["config"]
        if media["announce"]["ips"]:
            expect["announce_ips"] = media["announce"]["ips"]
        elif media["announce"]["fromNodeIP"]:
            expect["announce_ips"] = [HOST_IP]
        if multi:
            expect |= {"redis_url": redis_url, "node_id": pod_name, "node_url": f"http://{pod_ip}:{http_port}"}
        expect["turn_embedded"] = turn["enabled"]
        if ice_tcp is not None:
            expect["ice_tcp_port"] = ice_tcp
        if turn["enabled"]:
            expect |= {"turn_port": turn["port"] + slot, "turn_relay_ports": f"{relays[0][0]}-{relays[-1][0]}"}
        if turn_tls:
            expect |= {"turn_tls_port": turn["tls"]["port"] + slot,
                       "turn_tls_cert": os.path.join(tmp, "turn-tls", "tls.crt"),
                       "turn_tls_key": os.path.join(tmp, "turn-tls", "tls.key")}
        if hairpin:
            expect["nat_map"] = [f"{pod_ip}={ip}" for ip in (public_v4 or [HOST_IP])]
        for key, want_value in expect.items():
            got = eff.get(key)
            if key in durations:
                ok = got is not None and seconds(got) == seconds(want_value)
            else:
                ok = got == want_value
            if not ok:
                fail(f"slot {slot}: effective {key} = {got!r}, want {want_value!r}")
        if seconds(eff["drain_timeout"]) != values["drainTimeoutSeconds"]:
            fail(f"effective drain_timeout {eff['drain_timeout']}, want {values['drainTimeoutSeconds']} s")
        if not multi and "redis_url" in eff:
            fail("a single node must not get a redis_url")

if values["secret"]["existingSecret"] and by_kind.get("Secret"):
    fail("an existing Secret must not be created again")
if values["podDisruptionBudget"]["enabled"] and not by_kind.get("PodDisruptionBudget"):
    fail("no PodDisruptionBudget")
hpas = by_kind.get("HorizontalPodAutoscaler", [])
if values["autoscaling"]["enabled"]:
    targets = sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas)
    if targets != [d["metadata"]["name"] for d in fanout_deps]:
        fail(f"one HorizontalPodAutoscaler per Fanout Deployment: {targets}")
    if any("replicas" in d["spec"] for d in fanout_deps):
        fail("an autoscaled Deployment must leave replicas to the autoscaler")
elif hpas:
    fail("a HorizontalPodAutoscaler without autoscaling.enabled")
else:
    for d in fanout_deps:
        if d["spec"]["replicas"] != values["replicas"]:
            fail(f"{d['metadata']['name']}: replicas {d['spec']['replicas']}, want {values['replicas']}")
if values["serviceMonitor"]["enabled"] and not by_kind.get("ServiceMonitor"):
    fail("no ServiceMonitor")
print(f"check_chart: {values_path}: {len(docs)} manifests ok, `fanout config` accepts "
      f"{len(fanout_deps)} Deployment(s)' configuration{' (multi-node)' if multi else ''}")
