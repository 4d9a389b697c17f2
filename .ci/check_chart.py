"""Checks rendered Helm manifests against the binary: every environment variable the chart
sets is a setting `payouts` reads (`payouts config variables`), every gRPC probe names a
service the binary registers (`payouts config services`), and each service's NetworkPolicy
lets through exactly the components the mutual-TLS authorization table names as its callers
(`payouts config callers`), and the platform's workloads only where the platform may call.
Run by .ci/run.

usage: check_chart.py <payouts binary> <rendered.yaml>...
"""

import subprocess
import sys

import yaml


def lines(binary, *args):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def main():
    binary, files = sys.argv[1], sys.argv[2:]
    variables = lines(binary, "config", "variables")
    exact = {v for v in variables if not v.endswith("*")}
    prefixes = [v[:-1] for v in variables if v.endswith("*")]
    services = {line.split()[1] for line in lines(binary, "config", "services")}
    callers = {}
    for line in lines(binary, "config", "callers"):
        service, caller = line.split()
        callers.setdefault(service, set()).add(caller)
    seen_policies = 0
    known = lambda name: name in exact or any(name.startswith(p) for p in prefixes)
    problems, seen_env, seen_probes = [], 0, 0
    for path in files:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        for doc in documents:
            kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
            if kind == "ConfigMap":
                for key in doc.get("data", {}):
                    seen_env += 1
                    if not known(key):
                        problems.append(f"{path}: ConfigMap {name} sets {key}, which payouts does not read")
            spec = doc.get("spec", {})
            component = spec.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
            if kind == "NetworkPolicy" and component in callers:
                seen_policies += 1
                grpc_from = [
                    peer
                    for rule in spec.get("ingress", [])
                    if any(port.get("port") == "grpc" for port in rule.get("ports", []))
                    for peer in rule.get("from", [])
                ]
                components = {
                    peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                    for peer in grpc_from
                    if "namespaceSelector" not in peer and "app.kubernetes.io/component" in peer.get("podSelector", {}).get("matchLabels", {})
                }
                others = [peer for peer in grpc_from if "namespaceSelector" in peer or "app.kubernetes.io/component" not in peer.get("podSelector", {}).get("matchLabels", {})]
                wanted = callers[component] - {"platform"}
                if components != wanted:
                    problems.append(f"{path}: NetworkPolicy {name} lets {sorted(components)} call {component}, the authorization table {sorted(wanted)}")
                if others and "platform" not in callers[component]:
                    problems.append(f"{path}: NetworkPolicy {name} lets the platform reach {component}, which serves the platform no RPC")
            pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
            if not pod:
                continue
            for container in pod.get("containers", []):
                is_payouts = "payouts" in container.get("image", "")
                for env in container.get("env", []) if is_payouts else []:
                    seen_env += 1
                    if not known(env["name"]):
                        problems.append(f"{path}: {kind} {name} sets {env['name']}, which payouts does not read")
                for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                    grpc = container.get(probe_name, {}).get("grpc")
                    if grpc is None:
                        continue
                    seen_probes += 1
                    service = grpc.get("service", "")
                    if service and service not in services:
                        problems.append(f"{path}: {kind} {name} {probe_name} asks for {service!r}, which payouts does not register")
    for problem in problems:
        print(problem)
    print(f"chart check: {seen_env} environment variables, {seen_probes} gRPC probes and {seen_policies} service NetworkPolicies in {len(files)} renderings, {len(problems)} problems")
    return 1 if problems or seen_env == 0 or seen_probes == 0 or seen_policies == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
