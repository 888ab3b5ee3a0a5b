"""Checks that the packaging in deploy/ keeps the promises it makes.

deploy/check runs this with the Python of its venv (PyYAML comes with
kubernetes-validate; tomllib is in the standard library from 3.11):

    check_packaging.py config FILE...    TOML that names only known keys
    check_packaging.py dockerfile        multi-stage, non-root, no secrets in
    check_packaging.py unit              the systemd unit's sandbox and secrets
    check_packaging.py k8s               kustomization and pod security
    check_packaging.py selftest          each check above fails on a broken copy

Schema validity of the manifests and of the unit is left to
kubernetes-validate and systemd-analyze; these checks cover what a schema
cannot see: non-root, no capabilities, where the secrets come from. Each
prints one line per problem and exits 1 if there was any.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent

# The keys of `vault-server --config FILE`: the flags' names in snake_case,
# with the type each value must have.
KNOWN_KEYS: dict[str, type] = {
    "listen": str,
    "data_dir": str,
    "keyring": str,
    "policy": str,
    "tls_cert": str,
    "tls_key": str,
    "client_ca": str,
    "health_listen": str,
    "metrics_listen": str,
    "audit_log": str,
    "audit_retention_days": int,
    "log_format": str,
    "lock_memory": bool,
    "max_connections": int,
    "max_call_duration": str,
    "min_free_mib": int,
    # For trials only; the example mentions them in comments.
    "dev": bool,
    "insecure_plaintext": bool,
}
NOT_IN_EXAMPLE = {"dev", "insecure_plaintext"}

# Every other key must appear in the commented example, so it documents them
# all.
EXAMPLE_CONFIG = DEPLOY / "vault.toml"

# The server's own list: the fields of its configuration-file struct.
SERVER_CONFIG_SOURCE = DEPLOY.parent / "vault-server" / "src" / "config.rs"

SECRET_WORDS = re.compile(r"key|keyring|secret|password|passwd|token|\.pem\b|vault-dev", re.I)


# --- configuration ---------------------------------------------------------


def config_problems(path: Path, text: str, *, complete: bool) -> list[str]:
    """Problems of one configuration file: TOML syntax, unknown keys, types."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [f"{path}: not valid TOML: {err}"]

    problems = []
    for key, value in config.items():
        expected = KNOWN_KEYS.get(key)
        if expected is None:
            known = ", ".join(KNOWN_KEYS)
            problems.append(f"{path}: unknown key {key!r} (known: {known})")
        # bool is an int in Python: compare types exactly.
        elif type(value) is not expected:
            problems.append(f"{path}: {key} should be a {expected.__name__}, not {value!r}")

    if config.get("log_format", "text") not in ("text", "json"):
        problems.append(f"{path}: log_format must be \"text\" or \"json\"")
    duration = config.get("max_call_duration", "30s")
    if isinstance(duration, str) and not re.fullmatch(r"\d+(ms|s|m|h)", duration):
        problems.append(f"{path}: max_call_duration {duration!r} is not like \"30s\"")
    for key in ("listen", "health_listen", "metrics_listen"):
        address = config.get(key)
        ip_port = r"(\[[0-9a-fA-F:]+\]|[0-9.]+):\d+"
        if isinstance(address, str) and not re.fullmatch(ip_port, address):
            problems.append(f"{path}: {key} {address!r} is not an IP:PORT address")

    if complete:
        for key in sorted(KNOWN_KEYS.keys() - NOT_IN_EXAMPLE - config.keys()):
            problems.append(f"{path}: the example leaves out the key {key!r}")
    return problems


def server_keys(source: str) -> set[str] | None:
    """The field names of `FileConfig` in the server's config.rs, if found."""
    found = re.search(r"pub struct FileConfig \{(.*?)\n\}", source, re.S)
    if not found:
        return None
    return set(re.findall(r"^\s*(?:pub\s+)?(\w+):", found.group(1), re.M))


def check_config(paths: list[str]) -> list[str]:
    problems = []
    keys = server_keys(SERVER_CONFIG_SOURCE.read_text())
    if keys is None:
        problems.append(f"{SERVER_CONFIG_SOURCE}: no FileConfig struct to compare keys with")
    elif keys != KNOWN_KEYS.keys():
        missing = sorted(keys - KNOWN_KEYS.keys())
        extra = sorted(KNOWN_KEYS.keys() - keys)
        problems.append(
            f"check_packaging.py: KNOWN_KEYS differs from the server's FileConfig "
            f"(server only: {missing}, here only: {extra})"
        )
    for name in paths:
        path = Path(name)
        complete = path.resolve() == EXAMPLE_CONFIG
        problems += config_problems(path, path.read_text(), complete=complete)
    return problems


# --- Dockerfile -------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def dockerfile_problems(text: str, dockerignore: str) -> list[str]:
    """Multi-stage, non-root final stage, no secret copied or baked in."""
    instructions = dockerfile_instructions(text)
    problems = []

    stages = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    if len(stages) < 2:
        problems.append("Dockerfile: one FROM only; build and runtime must be separate stages")
    final = instructions[stages[-1]:] if stages else instructions
    final_from = final[0][1] if final else ""
    if final_from.endswith(":latest") or (":" not in final_from and "@" not in final_from):
        problems.append(f"Dockerfile: the runtime image {final_from!r} is not pinned to a tag")

    users = [args for word, args in final if word == "USER"]
    if not users:
        problems.append("Dockerfile: the final stage sets no USER, so it runs as root")
    else:
        user = users[-1].split(":")[0]
        if user in ("root", "0") or not user.isdigit():
            problems.append(f"Dockerfile: final USER {users[-1]!r} must be a fixed non-zero uid")

    if not any(w == "RUN" and "cargo build --release --locked" in a for w, a in instructions):
        problems.append("Dockerfile: the build is not `cargo build --release --locked`")
    entrypoints = [args for word, args in final if word == "ENTRYPOINT"]
    if not entrypoints or "vault-server" not in entrypoints[-1]:
        problems.append("Dockerfile: the ENTRYPOINT is not vault-server")

    for word, args in instructions:
        if word == "ADD" and re.search(r"\bhttps?://|\bgit@", args):
            problems.append(f"Dockerfile: ADD fetches from the network: {args}")
        if word in ("COPY", "ADD") and "--from=" not in args:
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for source in sources:
                if SECRET_WORDS.search(source):
                    problems.append(f"Dockerfile: {word} {source} looks like a secret")
        name = args.split("=")[0]
        if word in ("ENV", "ARG") and SECRET_WORDS.search(name):
            problems.append(f"Dockerfile: {word} {name} bakes a secret into the image")
        if word == "RUN" and "VAULT_KEYRING" in args:
            problems.append("Dockerfile: a RUN step touches the keyring")

    ignored = {line.strip() for line in dockerignore.splitlines()}
    for needed in ("target/", "vault-dev/", "**/*.key", "**/keyring", ".git/"):
        if needed not in ignored:
            problems.append(f".dockerignore: does not exclude {needed}")
    return problems


def check_dockerfile() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    dockerignore = (DEPLOY.parent / ".dockerignore").read_text()
    return dockerfile_problems(text, dockerignore)


# --- systemd unit -----------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every Key=value of a unit, each key with all its values in order."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# Settings the unit must have, with the one value each must take.
UNIT_REQUIRED = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "LimitCORE": "0",
    "UMask": "0077",
    "Restart": "on-failure",
    "StateDirectory": "vault",
}


def unit_problems(text: str) -> list[str]:
    """The sandbox, the non-root user and the credentials of the unit."""
    settings = unit_settings(text)
    last = {key: values[-1] for key, values in settings.items()}
    problems = []

    for key, value in UNIT_REQUIRED.items():
        if last.get(key) != value:
            problems.append(f"unit: {key}= should be {value!r}, is {last.get(key)!r}")
    if "@system-service" not in settings.get("SystemCallFilter", []):
        problems.append("unit: SystemCallFilter= does not allow only @system-service")

    user = last.get("User", "")
    if last.get("DynamicUser") != "yes" and user in ("", "root", "0"):
        problems.append("unit: runs as root (set User= or DynamicUser=yes)")
    capabilities = set(last.get("CapabilityBoundingSet", "ALL").split())
    if not capabilities <= {"CAP_IPC_LOCK"}:
        problems.append(f"unit: CapabilityBoundingSet= keeps {sorted(capabilities)}")
    if last.get("LimitMEMLOCK") != "infinity" and "CAP_IPC_LOCK" not in last.get(
        "AmbientCapabilities", ""
    ):
        problems.append("unit: lock_memory needs LimitMEMLOCK=infinity or CAP_IPC_LOCK")

    credentials = settings.get("LoadCredential", [])
    if not any(c.startswith("keyring:") for c in credentials):
        problems.append("unit: the keyring is not a LoadCredential=")
    exec_start = last.get("ExecStart", "")
    if "--keyring %d/keyring" not in exec_start:
        problems.append("unit: ExecStart does not read the keyring from %d/keyring")
    if "--config" not in exec_start:
        problems.append("unit: ExecStart does not pass --config")
    if "-HUP $MAINPID" not in last.get("ExecReload", ""):
        problems.append("unit: ExecReload does not send SIGHUP")
    environment = [v for key, vs in settings.items() if key.startswith("Environment") for v in vs]
    if any("KEYRING" in value for value in environment):
        problems.append("unit: the keyring must not come through the environment")
    return problems


def check_unit() -> list[str]:
    return unit_problems((DEPLOY / "vault-server.service").read_text())


# --- Kubernetes -------------------------------------------------------------


def k8s_problems(folder: Path) -> list[str]:
    """Kustomization completeness and the pod's security promises."""
    import yaml  # from the venv, with kubernetes-validate

    problems = []
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    resources = kustomization.get("resources", [])
    on_disk = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    for name in sorted(set(resources) - on_disk):
        problems.append(f"k8s: kustomization lists {name}, which does not exist")
    for name in sorted(on_disk - set(resources)):
        problems.append(f"k8s: {name} is not listed in kustomization.yaml")
    for generator in kustomization.get("configMapGenerator", []):
        for name in generator.get("files", []):
            if not (folder / name).is_file():
                problems.append(f"k8s: configMapGenerator file {name} does not exist")

    documents = [
        doc
        for name in resources
        if (folder / name).is_file()
        for doc in yaml.safe_load_all((folder / name).read_text())
        if doc
    ]
    by_kind = {}
    for doc in documents:
        by_kind.setdefault(doc.get("kind"), []).append(doc)

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        problems.append(f"k8s: expected one Deployment, found {len(deployments)}")
    for deployment in deployments:
        problems += deployment_problems(deployment)
    if not by_kind.get("NetworkPolicy"):
        problems.append("k8s: no NetworkPolicy")
    for policy in by_kind.get("NetworkPolicy", []):
        problems += network_policy_problems(policy)
    return problems


def deployment_problems(deployment: dict) -> list[str]:
    spec = deployment.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    problems = []

    if spec.get("replicas") != 1:
        problems.append("k8s: sled has one writer: replicas must be 1")
    if spec.get("strategy", {}).get("type") != "Recreate":
        problems.append("k8s: the strategy must be Recreate, never two pods on the data")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("k8s: the pod mounts a service-account token it does not need")
    pod_security = pod.get("securityContext", {})
    if pod_security.get("runAsNonRoot") is not True or not pod_security.get("runAsUser"):
        problems.append("k8s: the pod must run as a fixed non-root uid")

    for container in pod.get("containers", []):
        name = container.get("name")
        security = container.get("securityContext", {})
        expected = {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
        }
        for key, value in expected.items():
            if security.get(key) is not value:
                problems.append(f"k8s: container {name}: securityContext.{key} must be {value}")
        if security.get("capabilities", {}).get("drop") != ["ALL"] or security.get(
            "capabilities", {}
        ).get("add"):
            problems.append(f"k8s: container {name}: must drop ALL capabilities and add none")
        seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"k8s: container {name}: seccompProfile must be RuntimeDefault")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if container.get(probe, {}).get("grpc", {}).get("port") != 7401:
                problems.append(f"k8s: container {name}: {probe} must be a grpc probe on 7401")
        for variable in container.get("env", []):
            if "value" in variable and SECRET_WORDS.search(variable["name"]):
                problems.append(f"k8s: container {name}: {variable['name']} holds a literal secret")

    for volume in pod.get("volumes", []):
        sources = [volume.get("secret")] if "secret" in volume else []
        if "projected" in volume:
            sources = [volume["projected"]]
        for source in sources:
            mode = source.get("defaultMode", 0o644)
            if mode & 0o007:
                problems.append(f"k8s: volume {volume['name']}: secret files readable by others")
    return problems


def network_policy_problems(policy: dict) -> list[str]:
    spec = policy.get("spec", {})
    problems = []
    if "Egress" not in spec.get("policyTypes", []):
        problems.append("k8s: the NetworkPolicy does not restrict egress")
    for rule in spec.get("ingress", []):
        ports = {port.get("port") for port in rule.get("ports", [])}
        if not ports:
            problems.append("k8s: an ingress rule admits every port")
        if 7400 in ports:
            for peer in rule.get("from", []):
                selector = peer.get("podSelector")
                if not selector or selector == {}:
                    problems.append("k8s: port 7400 is open to whole namespaces, not callers")
        if not rule.get("from"):
            problems.append(f"k8s: ports {sorted(ports)} are open to everyone")
    return problems


def check_k8s() -> list[str]:
    problems = k8s_problems(DEPLOY / "k8s")
    shipped = (DEPLOY / "policy.toml").read_text()
    if (DEPLOY / "k8s" / "policy.toml").read_text() != shipped:
        problems.append("k8s: k8s/policy.toml differs from deploy/policy.toml; copy it again")
    try:
        tomllib.loads(shipped)
    except tomllib.TOMLDecodeError as err:
        problems.append(f"deploy/policy.toml: not valid TOML: {err}")
    return problems


# --- self-test --------------------------------------------------------------


def selftest() -> list[str]:
    """Breaks a copy of each file in a known way; each check must notice."""
    import yaml

    failures = []

    def expect(what: str, problems: list[str], needle: str) -> None:
        if not any(needle in problem for problem in problems):
            failures.append(f"selftest: {what} went unnoticed (wanted {needle!r}, got {problems})")

    def expect_clean(what: str, problems: list[str]) -> None:
        if problems:
            failures.append(f"selftest: {what} should pass, got {problems}")

    config = EXAMPLE_CONFIG.read_text()
    expect_clean("the shipped vault.toml", config_problems(EXAMPLE_CONFIG, config, complete=True))

    def broken_config(text: str, complete: bool = False) -> list[str]:
        return config_problems(EXAMPLE_CONFIG, text, complete=complete)

    expect("an unknown key", broken_config(config + 'listen_addr = "x"\n'), "unknown key")
    expect("broken TOML", broken_config(config + "listen = \n"), "not valid TOML")
    not_bool = config.replace("lock_memory = true", 'lock_memory = "yes"')
    expect("a string for a bool", broken_config(not_bool), "lock_memory should be a bool")
    no_reserve = config.replace("min_free_mib = 64", "")
    expect("a missing key", broken_config(no_reserve, complete=True), "leaves out the key")
    server = "pub struct FileConfig {\n    listen: Option<SocketAddr>,\n    new_key: bool,\n}"
    if server_keys(server) != {"listen", "new_key"}:
        failures.append("selftest: the server's FileConfig fields are not read correctly")

    docker = (DEPLOY / "Dockerfile").read_text()
    ignore = (DEPLOY.parent / ".dockerignore").read_text()

    def broken_docker(text: str, ignored: str = ignore) -> list[str]:
        return dockerfile_problems(text, ignored)

    expect_clean("the shipped Dockerfile", broken_docker(docker))
    expect("no USER", broken_docker(re.sub(r"(?m)^USER .*$", "", docker)), "sets no USER")
    as_root = re.sub(r"(?m)^USER .*$", "USER root", docker)
    expect("USER root", broken_docker(as_root), "fixed non-zero uid")
    single = docker[docker.index("FROM gcr.io") :]
    expect("a single stage", broken_docker(single), "one FROM only")
    copied = docker + "COPY vault-dev/keyring /etc/vault/keyring\n"
    expect("a copied keyring", broken_docker(copied), "looks like a secret")
    baked = docker + "ENV VAULT_KEYRING_CONTENTS=abc\n"
    expect("a baked-in secret", broken_docker(baked), "bakes a secret")
    unignored = ignore.replace("vault-dev/", "")
    expect("an unignored vault-dev", broken_docker(docker, unignored), "exclude vault-dev/")

    unit = (DEPLOY / "vault-server.service").read_text()
    expect_clean("the shipped unit", unit_problems(unit))
    as_root = unit.replace("User=vault", "User=root")
    expect("a root unit", unit_problems(as_root), "runs as root")
    unsandboxed = unit.replace("ProtectSystem=strict", "ProtectSystem=full")
    expect("a lost sandbox", unit_problems(unsandboxed), "ProtectSystem")
    admin = unit.replace("CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_SYS_ADMIN\n")
    expect("a broad capability set", unit_problems(admin), "CapabilityBoundingSet")
    from_env = unit + "Environment=VAULT_KEYRING_CONTENTS=x\n"
    expect("an environment keyring", unit_problems(from_env), "through the environment")

    deployment_text = (DEPLOY / "k8s" / "deployment.yaml").read_text()
    deployment = yaml.safe_load(deployment_text)
    expect_clean("the shipped Deployment", deployment_problems(deployment))
    broken = yaml.safe_load(deployment_text)
    broken["spec"]["replicas"] = 2
    security = broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["readOnlyRootFilesystem"] = False
    security["capabilities"] = {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    problems = deployment_problems(broken)
    expect("two replicas", problems, "replicas must be 1")
    expect("a writable root", problems, "readOnlyRootFilesystem")
    expect("an added capability", problems, "add none")
    policy = yaml.safe_load((DEPLOY / "k8s" / "networkpolicy.yaml").read_text())
    expect_clean("the shipped NetworkPolicy", network_policy_problems(policy))
    del policy["spec"]["ingress"][0]["from"][0]["podSelector"]
    expect("a namespace-wide 7400", network_policy_problems(policy), "whole namespaces")
    return failures


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    checks = {
        "config": lambda: check_config(rest),
        "dockerfile": check_dockerfile,
        "unit": check_unit,
        "k8s": check_k8s,
        "selftest": selftest,
    }
    if command not in checks:
        print(f"check_packaging: unknown check {command!r}", file=sys.stderr)
        return 2
    problems = checks[command]()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
