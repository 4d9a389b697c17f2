"""Checks rendered Helm manifests against the binary: every environment variable the chart
sets, and every key of its ConfigMap, is a setting `payouts` reads (`payouts config
variables`), and every gRPC probe names a service the binary registers (`payouts config
services`). Every workload (each Deployment, the CronJob) runs as a ServiceAccount of its own,
rendered with it, with no token mounted. Every component certificate comes from an Issuer of
the same rendering (the release's own CA), never an issuer shared with others. Every pod with
a gRPC port outside loopback speaks mutual TLS (GRPC_TLS_*), split or all in one, unless the
rendering opts into plaintext (PAYOUTS_ALLOW_PLAINTEXT_GRPC=true). In the
renderings given after --pinned, every image is pinned by digest (name@sha256:...). Who may
reach whom (the NetworkPolicies against the binary's caller table) is .ci/check_traffic.py's.
Run by .ci/run.

usage: check_chart.py <payouts binary> <rendered.yaml>... [--pinned <rendered.yaml>...]
"""

import re
import subprocess
import sys

import yaml



def settings_map(doc):
    """A ConfigMap of settings (every one but the Grafana dashboard's, which holds JSON)."""
    labels = doc.get("metadata", {}).get("labels") or {}
    return doc.get("kind") == "ConfigMap" and labels.get("app.kubernetes.io/component") != "dashboard"

def lines(binary, *args):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def main():
    binary, files = sys.argv[1], sys.argv[2:]
    pinned = set()
    if "--pinned" in files:
        at = files.index("--pinned")
        pinned = set(files[at + 1 :])
        files = files[:at] + [f for f in files[at + 1 :] if f not in files[:at]]
    variables = lines(binary, "config", "variables")
    exact = {v for v in variables if not v.endswith("*")}
    prefixes = [v[:-1] for v in variables if v.endswith("*")]
    services = {line.split()[1] for line in lines(binary, "config", "services")}
    known = lambda name: name in exact or any(name.startswith(p) for p in prefixes)
    problems, seen_env, seen_probes = [], 0, 0
    for path in files:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        accounts = {d["metadata"]["name"]: d for d in documents if d.get("kind") == "ServiceAccount"}
        account_users = {}
        issuers = {d["metadata"]["name"] for d in documents if d.get("kind") == "Issuer"}
        config = {}
        for doc in documents:
            if settings_map(doc):
                config.update(doc.get("data") or {})
        for doc in documents:
            spec = doc.get("spec") or {}
            if doc.get("kind") != "Certificate" or spec.get("isCA"):
                continue
            ref = spec.get("issuerRef") or {}
            if ref.get("kind", "Issuer") != "Issuer" or ref.get("name") not in issuers:
                problems.append(f"{path}: Certificate {doc['metadata']['name']} comes from {ref.get('kind', 'Issuer')} {ref.get('name')}, not this release's own CA Issuer")
        for doc in documents:
            kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
            if settings_map(doc):
                for key in doc.get("data", {}):
                    seen_env += 1
                    if not known(key):
                        problems.append(f"{path}: ConfigMap {name} sets {key}, which payouts does not read")
            spec = doc.get("spec", {})
            pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
            if not pod:
                continue
            account = pod.get("serviceAccountName")
            if account is None or account not in accounts:
                problems.append(f"{path}: {kind} {name} runs as {account or 'the namespace default ServiceAccount'}, not one of its own rendered with it")
            else:
                account_users.setdefault(account, []).append(name)
                if accounts[account].get("automountServiceAccountToken") is not False:
                    problems.append(f"{path}: ServiceAccount {account} does not set automountServiceAccountToken: false")
            if pod.get("automountServiceAccountToken") is not False:
                problems.append(f"{path}: {kind} {name} mounts a service-account token")
            for container in pod.get("containers", []):
                image = container.get("image", "")
                env_names = {e["name"] for e in container.get("env", [])}
                grpc_addr = config.get("GRPC_ADDR", "127.0.0.1:50051") if container.get("envFrom") else "127.0.0.1:50051"
                listens = any(port.get("name") == "grpc" for port in container.get("ports", []))
                loopback = grpc_addr.startswith(("127.", "[::1]", "localhost:"))
                plaintext_allowed = config.get("PAYOUTS_ALLOW_PLAINTEXT_GRPC") == "true"
                tls = {"GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE"} <= env_names
                if listens and not loopback and not tls and not plaintext_allowed:
                    problems.append(f"{path}: {kind} {name} serves gRPC on {grpc_addr} without mutual TLS (GRPC_TLS_*)")
                if path in pinned and not re.search(r"@sha256:[0-9a-f]{64}$", image):
                    problems.append(f"{path}: {kind} {name} runs {image}, not pinned by digest")
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
        for account, users in account_users.items():
            if len(users) > 1:
                problems.append(f"{path}: ServiceAccount {account} is shared by {', '.join(users)}")
    for problem in problems:
        print(problem)
    print(f"chart check: {seen_env} environment variables and {seen_probes} gRPC probes in {len(files)} renderings, {len(problems)} problems")
    return 1 if problems or seen_env == 0 or seen_probes == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
