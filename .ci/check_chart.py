"""Checks rendered Helm manifests against the binary: every environment variable the chart
sets is a setting `payouts` reads (`payouts config variables`), and every gRPC probe names a
service the binary registers (`payouts config services`). Run by .ci/run.

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
    print(f"chart check: {seen_env} environment variables and {seen_probes} gRPC probes in {len(files)} renderings, {len(problems)} problems")
    return 1 if problems or seen_env == 0 or seen_probes == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
