"""Models the traffic of one rendering of the Helm chart and proves its NetworkPolicies allow
exactly that. Run by .ci/run on each rendering (default, all-in-one, production).

The workloads: every Deployment and the CronJob's pod of the rendered manifests; the ingress
controller, the platform's callers and Prometheus as the values describe them (one stand-in
pod per peer of networkPolicy.ingressFrom, .platformFrom, .metricsFrom); someone else in the
cluster (a pod in another namespace, and one in the release's namespace); the cluster DNS and
the outside services the components use (MongoDB, Stripe, SMTP, the OTLP collector, the
identity provider's JWKS).

The paths each one NEEDS: gRPC from each caller to each service of `payouts config callers`
(the binary's authorization table, the one source of truth; all in one, the components call
each other in process and only the platform comes over the network), HTTP from the ingress
controller to the gateway, HTTP from the CronJob to the gateway's /api/cron (when rendered),
Prometheus to every metrics port, and egress to what each container's settings point at.

Then it evaluates the rendered NetworkPolicies with Kubernetes' semantics for every (source,
destination, port): a pod selected by any policy of a type (Ingress, Egress) is isolated for
that type, and a connection is allowed when the source's egress and the destination's ingress
both allow it (a rule matches when one of its peers matches by podSelector / namespaceSelector
/ ipBlock and one of its ports matches, named ports resolved against the destination
container's ports). It fails when a needed path is blocked, or a path no one needs is open
between pods. Egress to the outside is reported, not failed, for a workload no Egress policy
selects (the chart does not restrict that egress; docs/kubernetes.md says so).

It also fails when the Ingress publishes /api/cron while ingress.exposeCron is false.

usage: check_traffic.py <payouts binary> <chart dir> <rendered.yaml> [-f values.yaml]... [--set key=value]...
"""

import argparse
import ipaddress
import subprocess
import sys
import urllib.parse

import yaml

# `helm template` renders into the "default" namespace unless told otherwise.
RELEASE_NAMESPACE = "default"
COMPONENT = "app.kubernetes.io/component"
CRON_PATH = "/api/cron/platform-balance-check"


class Workload:
    """A pod (ours, a stand-in for someone else's) or an address outside the cluster."""

    def __init__(self, name, namespace=None, namespace_labels=None, labels=None, ip=None, ports=None, ours=False):
        self.name = name
        self.namespace = namespace
        self.namespace_labels = dict(namespace_labels or {})
        if namespace is not None:
            self.namespace_labels.setdefault("kubernetes.io/metadata.name", namespace)
        self.labels = dict(labels or {})
        self.ip = ipaddress.ip_address(ip)
        # name -> (port, protocol)
        self.ports = dict(ports or {})
        self.ours = ours
        self.env = set()
        self.component = self.labels.get(COMPONENT)

    @property
    def is_pod(self):
        return self.namespace is not None


def deep_merge(base, override):
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def load_values(chart, files, sets):
    with open(f"{chart}/values.yaml") as f:
        values = yaml.safe_load(f)
    for path in files:
        with open(path) as f:
            deep_merge(values, yaml.safe_load(f) or {})
    for assignment in sets:
        key, _, raw = assignment.partition("=")
        if raw.startswith("{"):
            raise SystemExit(f"--set {assignment}: list syntax is not supported here, use a values file")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return values


def matches(selector, labels):
    """A Kubernetes label selector; an empty selector matches everything."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def satisfying(selector):
    """Labels that a selector matches: how a stand-in pod for a described peer is labelled."""
    labels = dict((selector or {}).get("matchLabels") or {})
    for expression in (selector or {}).get("matchExpressions") or []:
        if expression["operator"] == "In":
            labels[expression["key"]] = expression["values"][0]
        elif expression["operator"] == "Exists":
            labels[expression["key"]] = "present"
    return labels


class Addresses:
    def __init__(self):
        self.pods = ipaddress.ip_network("10.244.0.0/16").hosts()
        self.outside = ipaddress.ip_network("203.0.113.0/24").hosts()

    def pod(self):
        return str(next(self.pods))

    def external(self):
        return str(next(self.outside))


def stand_ins(role, peers, addresses):
    """One stand-in workload per NetworkPolicy peer the values describe."""
    result = []
    for index, peer in enumerate(peers or []):
        name = f"{role}#{index + 1}" if len(peers) > 1 else role
        if "ipBlock" in peer:
            network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            excluded = [ipaddress.ip_network(e) for e in peer["ipBlock"].get("except") or []]
            ip = next(h for h in network.hosts() if not any(h in e for e in excluded)) if network.num_addresses > 1 else network.network_address
            result.append(Workload(name, ip=str(ip)))
            continue
        namespace_selector = peer.get("namespaceSelector")
        if namespace_selector is None:
            namespace, namespace_labels = RELEASE_NAMESPACE, {}
        else:
            namespace_labels = satisfying(namespace_selector)
            namespace = namespace_labels.get("kubernetes.io/metadata.name", f"{role}-namespace")
        labels = satisfying(peer.get("podSelector"))
        labels.setdefault("check/stand-in", role)
        result.append(Workload(name, namespace, namespace_labels, labels, addresses.pod()))
    return result


def our_workloads(documents, addresses):
    workloads, config = [], {}
    for doc in documents:
        if doc.get("kind") == "ConfigMap":
            config.update(doc.get("data") or {})
    for doc in documents:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        if kind == "Deployment":
            template = spec["template"]
        elif kind == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
        else:
            continue
        ports, env = {}, set()
        for container in template["spec"]["containers"]:
            for port in container.get("ports") or []:
                ports[port.get("name", str(port["containerPort"]))] = (port["containerPort"], port.get("protocol", "TCP"))
            env |= {e["name"] for e in container.get("env") or []}
            if container.get("envFrom"):
                env |= set(config)
        workload = Workload(doc["metadata"]["name"], RELEASE_NAMESPACE, {}, template["metadata"]["labels"], addresses.pod(), ports, ours=True)
        workload.kind = kind
        workload.env = env
        workload.template = template
        workloads.append(workload)
    return workloads, config


class Policy:
    def __init__(self, doc):
        self.name = doc["metadata"]["name"]
        self.namespace = doc["metadata"].get("namespace", RELEASE_NAMESPACE)
        self.spec = doc.get("spec") or {}
        types = self.spec.get("policyTypes")
        if types is None:
            types = ["Ingress"] + (["Egress"] if "egress" in self.spec else [])
        self.types = set(types)

    def selects(self, pod, direction):
        return pod.is_pod and pod.namespace == self.namespace and direction in self.types and matches(self.spec.get("podSelector") or {}, pod.labels)


def peer_matches(peer, policy_namespace, other):
    if "ipBlock" in peer:
        network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        excluded = [ipaddress.ip_network(e) for e in peer["ipBlock"].get("except") or []]
        return other.ip in network and not any(other.ip in e for e in excluded)
    if not other.is_pod:
        return False
    namespace_selector = peer.get("namespaceSelector")
    if namespace_selector is None:
        in_namespace = other.namespace == policy_namespace
    else:
        in_namespace = matches(namespace_selector, other.namespace_labels)
    return in_namespace and matches(peer.get("podSelector") or {}, other.labels)


def port_matches(rule_ports, port, protocol, destination_ports):
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        wanted = rule_port.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            if destination_ports.get(wanted) == (port, protocol):
                return True
            continue
        if wanted <= port <= rule_port.get("endPort", wanted):
            return True
    return False


def side_allows(policies, subject, other, port, protocol, destination_ports, direction):
    """Whether `subject`'s policies of `direction` let the connection with `other` through."""
    selecting = [p for p in policies if p.selects(subject, direction)]
    if not selecting:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy.spec.get(rules_key) or []:
            if not port_matches(rule.get("ports"), port, protocol, destination_ports):
                continue
            peers = rule.get(peers_key)
            if not peers or any(peer_matches(peer, policy.namespace, other) for peer in peers):
                return True
    return False


def allowed(policies, source, destination, port_name):
    port, protocol = destination.ports[port_name]
    return side_allows(policies, source, destination, port, protocol, destination.ports, "Egress") and side_allows(
        policies, destination, source, port, protocol, destination.ports, "Ingress"
    )


def egress_restricted(policies, workload):
    return any(p.selects(workload, "Egress") for p in policies)


def lines(binary, *args):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def outside(name, url_or_host, default_port, addresses, protocol="TCP"):
    """An address outside the cluster, or a stand-in pod for an in-cluster host (name.namespace)."""
    parsed = urllib.parse.urlsplit(url_or_host if "://" in url_or_host else f"tcp://{url_or_host}")
    port = parsed.port or default_port
    host = parsed.hostname or ""
    parts = host.split(".")
    if len(parts) >= 2 and (len(parts) == 2 or parts[2] in ("svc",)):
        namespace = parts[1]
        return Workload(name, namespace, {}, {"check/stand-in": name}, addresses.pod(), {"port": (port, protocol)})
    return Workload(name, ip=addresses.external(), ports={"port": (port, protocol)})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("chart")
    parser.add_argument("rendered")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    values = load_values(args.chart, args.values, args.set)
    with open(args.rendered) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    policies = [Policy(d) for d in documents if d.get("kind") == "NetworkPolicy"]
    addresses = Addresses()
    ours, config = our_workloads(documents, addresses)
    problems, notes = [], []
    all_in_one = values.get("allInOne", False)
    by_component = {w.component: w for w in ours if w.kind == "Deployment"}
    gateway = by_component.get("all" if all_in_one else "gateway")
    if gateway is None:
        raise SystemExit(f"{args.rendered}: no gateway Deployment rendered")
    cron_jobs = [w for w in ours if w.kind == "CronJob"]
    np = values.get("networkPolicy") or {}

    ingress_controllers = stand_ins("ingress-controller", np.get("ingressFrom"), addresses)
    platform = stand_ins("platform", np.get("platformFrom"), addresses)
    prometheus = stand_ins("prometheus", np.get("metricsFrom"), addresses)
    if not prometheus and (values.get("serviceMonitor") or {}).get("enabled"):
        # Scraping is asked for but Prometheus is not named: it stands where it usually does.
        prometheus = [Workload("prometheus (not in metricsFrom)", "monitoring", {}, {"app.kubernetes.io/name": "prometheus"}, addresses.pod())]
    anyone = [
        Workload("anyone, another namespace", "elsewhere", {}, {"app": "anything"}, addresses.pod()),
        Workload("anyone, this namespace", RELEASE_NAMESPACE, {}, {"app": "anything"}, addresses.pod()),
        Workload("anyone, outside the cluster", ip=addresses.external()),
    ]
    dns = Workload("cluster DNS", "kube-system", {}, {"k8s-app": "kube-dns"}, addresses.pod(), {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")})

    # The paths each workload needs: (source name, destination name, port name).
    needed, public = set(), set()
    for service, caller in lines(args.binary, "config", "callers"):
        if all_in_one:
            if caller == "platform":
                needed |= {(p.name, gateway.name, "grpc") for p in platform}
            continue
        target = by_component.get(service)
        if target is None:
            problems.append(f"no Deployment for the {service} service")
            continue
        if caller == "platform":
            needed |= {(p.name, target.name, "grpc") for p in platform}
        elif caller in by_component:
            needed.add((by_component[caller].name, target.name, "grpc"))
        else:
            problems.append(f"{caller} calls {service} (payouts config callers) but no Deployment runs it")
    if ingress_controllers:
        needed |= {(i.name, gateway.name, "http") for i in ingress_controllers}
    else:
        # No ingress controller named: the gateway's HTTP port is public (Stripe must reach the
        # webhook paths through whatever exposes it); someone else stands in for the controller.
        needed |= {(a.name, gateway.name, "http") for a in anyone if a.is_pod}
        public.add((gateway.name, "http"))
    for cron in cron_jobs:
        needed.add((cron.name, gateway.name, "http"))
        problems += check_cron_target(cron, gateway, documents)
    for scraper in prometheus:
        needed |= {(scraper.name, w.name, "metrics") for w in ours if "metrics" in w.ports}

    # Egress to what each container's settings point at.
    externals = {"cluster DNS": dns}
    wants = {w.name: {"cluster DNS"} for w in ours}
    for workload in ours:
        if "MONGODB_URI" in workload.env:
            externals.setdefault("MongoDB", outside("MongoDB", "mongodb.example.net", 27017, addresses))
            wants[workload.name].add("MongoDB")
        if "STRIPE_SECRET_KEY" in workload.env:
            externals.setdefault("Stripe", outside("Stripe", "https://api.stripe.com", 443, addresses))
            wants[workload.name].add("Stripe")
        if "SMTP_URL" in workload.env:
            externals.setdefault("SMTP", outside("SMTP", "smtp.example.com", 465, addresses))
            wants[workload.name].add("SMTP")
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in workload.env and config.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            externals.setdefault("OTLP", outside("OTLP", config["OTEL_EXPORTER_OTLP_ENDPOINT"], 4317, addresses))
            wants[workload.name].add("OTLP")
        jwks = next((e.get("value") for c in workload.template["spec"]["containers"] for e in c.get("env") or [] if e["name"] == "ADMIN_JWT_JWKS_URL"), None)
        if jwks:
            externals.setdefault("JWKS", outside("JWKS", jwks, 443, addresses))
            wants[workload.name].add("JWKS")

    # Evaluate every (source, destination, port) between pods.
    sources = ours + ingress_controllers + platform + prometheus + anyone
    columns = [(w, port) for w in ours for port in sorted(w.ports)]
    matrix = {}
    for source in sources:
        for destination, port in columns:
            if source is destination:
                continue
            is_open = allowed(policies, source, destination, port)
            key = (source.name, destination.name, port)
            if key in needed:
                mark = "Y" if is_open else "X"
                if not is_open:
                    problems.append(f"{source.name} -> {destination.name}:{port} is needed and blocked")
            elif (destination.name, port) in public:
                mark = "p" if is_open else "."
            else:
                mark = "!" if is_open else "."
                if is_open:
                    problems.append(f"{source.name} -> {destination.name}:{port} is open and no one needs it")
            matrix[(source.name, destination.name, port)] = mark
    # Egress to the outside (and the cluster DNS).
    external_columns = [(e, port) for e in externals.values() for port in sorted(e.ports)]
    for source in ours:
        restricted = egress_restricted(policies, source)
        for destination, port in external_columns:
            is_open = allowed(policies, source, destination, port)
            if destination.name in wants[source.name]:
                mark = "Y" if is_open else "X"
                if not is_open:
                    problems.append(f"{source.name} -> {destination.name}:{port} is needed and blocked")
            elif not is_open:
                mark = "."
            elif restricted:
                mark = "!"
                problems.append(f"{source.name} -> {destination.name}:{port} is open and no one needs it")
            else:
                mark = "e"
                notes.append(f"{source.name} -> {destination.name}:{port}")
            matrix[(source.name, destination.name, port)] = mark

    problems += check_ingress(values, documents)
    print_matrix(args.rendered, sources, columns + external_columns, matrix, gateway.name)
    if notes:
        print(f"  {len(notes)} egress paths open and not needed: the chart does not restrict these workloads' egress (docs/kubernetes.md)")
    for problem in problems:
        print(f"{args.rendered}: {problem}")
    checked = len(matrix)
    print(f"traffic check: {args.rendered}: {len(sources)} workloads, {checked} paths, {len(needed)} needed, {len(problems)} problems")
    return 1 if problems or not policies or not needed else 0


def check_cron_target(cron, gateway, documents):
    """The CronJob's URL must name a Service that sends its port to the gateway's HTTP port."""
    url = next((a for c in cron.template["spec"]["containers"] for a in c.get("args") or [] if a.startswith("http")), None)
    if url is None:
        return [f"{cron.name} calls no URL"]
    parsed = urllib.parse.urlsplit(url)
    if not parsed.path.startswith("/api/cron/"):
        return [f"{cron.name} calls {parsed.path}, not the gateway's /api/cron"]
    for doc in documents:
        if doc.get("kind") != "Service" or doc["metadata"]["name"] != parsed.hostname.split(".")[0]:
            continue
        if not matches({"matchLabels": doc["spec"]["selector"]}, gateway.labels):
            return [f"{cron.name} calls Service {doc['metadata']['name']}, which does not select {gateway.name}"]
        for port in doc["spec"]["ports"]:
            if port["port"] == parsed.port and port.get("targetPort") in ("http", gateway.ports["http"][0]):
                return []
        return [f"{cron.name} calls port {parsed.port} of Service {doc['metadata']['name']}, not the gateway's HTTP port"]
    return [f"{cron.name} calls {parsed.hostname}, which is no Service of this release"]


def check_ingress(values, documents):
    """/api/cron is reached in the cluster; on the Ingress only when ingress.exposeCron says so."""
    if (values.get("ingress") or {}).get("exposeCron"):
        return []
    problems = []
    for doc in documents:
        if doc.get("kind") != "Ingress":
            continue
        for rule in doc["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                prefix = path["path"].rstrip("/")
                covers = CRON_PATH == prefix or CRON_PATH.startswith(prefix + "/")
                if path.get("pathType") == "Exact":
                    covers = path["path"] == CRON_PATH
                if covers:
                    problems.append(f"Ingress {doc['metadata']['name']} publishes {path['path']} (the cron endpoint) while ingress.exposeCron is false")
    return problems


def print_matrix(rendered, sources, columns, matrix, gateway_name):
    print(f"\n{rendered}: who reaches what (rows: sources; columns below)")
    print("  Y needed, open   X needed, BLOCKED   ! open, not needed   . closed   p public (gateway HTTP, no ingress controller named)   e egress not restricted")
    for index, (destination, port) in enumerate(columns, 1):
        number, protocol = destination.ports[port]
        print(f"  {index:>2} {destination.name}:{port} ({number}/{protocol})")
    width = max(len(s.name) for s in sources)
    header = "".join(f"{i % 100:>3}" for i in range(1, len(columns) + 1))
    print(f"  {'':<{width}} {header}")
    for source in sources:
        cells = "".join(f"{matrix.get((source.name, d.name, p), '-'):>3}" for d, p in columns)
        print(f"  {source.name:<{width}} {cells}")


if __name__ == "__main__":
    sys.exit(main())
