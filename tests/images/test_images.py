"""Offline tests of images/ and the top-level Makefile.

Docker and Packer are neither running nor installed here, so nothing is
built. What can be checked is checked:

* the Makefile: `make -n` of every target prints the expected commands, with
  a PATH that holds no docker, cargo or packer; `make clean` removes only out/;
* images/build/Dockerfile, read as text: pinned images and versions, the
  static musl binary copied into the final stage, every download checked
  against a pinned SHA-256 by fetch.sh, a build context limited by its own
  .dockerignore; fetch.sh itself, run on file:// URLs;
* images/ami/flatcar.pkr.hcl: parses as HCL2 (python-hcl2), is formatted
  (`terraform fmt`, which formats HCL as `packer fmt` does), looks up the
  Flatcar AMI, installs to the /opt/bin paths the rendered units use and the
  CNI plugins (a pinned release, checked against its SHA-512) to
  /opt/cni/bin, every plugin the rendered Flannel chain needs among them,
  tags the AMI; provision.sh, run into a DESTDIR;
* the shell scripts: `bash -n`, shellcheck, and entrypoint.sh / bashrc run
  against stand-ins for docker and nodeboot.

Run with `python3 -m pytest -q tests/images`. Needs make, curl, git,
terraform and shellcheck (Debian's `shellcheck` package) on PATH, and
python-hcl2 8.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import textwrap
from pathlib import Path

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
DOCKERFILE = IMAGES / "build" / "Dockerfile"
DOCKERIGNORE = IMAGES / "build" / "Dockerfile.dockerignore"
FETCH = IMAGES / "build" / "fetch.sh"
ENTRYPOINT = IMAGES / "build" / "entrypoint.sh"
BASHRC = IMAGES / "build" / "bashrc"
PACKER = IMAGES / "ami" / "flatcar.pkr.hcl"
PROVISION = IMAGES / "ami" / "provision.sh"
EXAMPLE = REPO / "environments" / "example.tfvars"
FLANNEL = REPO / "manifests" / "addons" / "flannel.yaml"

MUSL = "x86_64-unknown-linux-musl"
MUSL_BUILD = f"cargo build --release --locked --target {MUSL}"
FLATCAR_OWNER = "075585003325"
SHELL_SCRIPTS = sorted([*IMAGES.rglob("*.sh"), BASHRC])
CNI_BIN_DIR = "/opt/cni/bin"  # where containerd (Flatcar's config) and Flannel look
# The containernetworking/plugins release each Kubernetes minor is built and
# tested with: "cni" in build/dependencies.yaml of its release branch
# (release-1.31: v1.5.1, cherry-picked in kubernetes/kubernetes#126988).
CNI_PLUGINS_FOR_KUBERNETES = {"1.31": "1.5.1"}


# --- helpers -----------------------------------------------------------------


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        hint = " (apt-get install shellcheck; tests/setup installs it)"
        hint = hint if name == "shellcheck" else ""
        pytest.fail(f"{name} is not on PATH{hint}")
    return path


def unquote(value):
    """python-hcl2 keeps the quotes of string literals and labels; drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def cargo_version() -> str:
    match = re.search(r'^version = "(.+)"$', (REPO / "Cargo.toml").read_text(), re.M)
    assert match, "Cargo.toml has no package version"
    return match.group(1)


def git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def tfvars(name: str) -> str:
    match = re.search(rf'^{name}\s*=\s*"(.*)"', EXAMPLE.read_text(), re.M)
    assert match, f"{name} not in {EXAMPLE}"
    return match.group(1)


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def sha(algorithm: str, path: Path) -> str:
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


def rust_constant(pattern: str) -> str:
    """Group 1 of `pattern` in the one Rust source under src/ that matches it,
    found by content rather than by path (modules move; the constant stays)."""
    hits = {}
    for source in sorted((REPO / "src").rglob("*.rs")):
        found = re.search(pattern, source.read_text(), re.M)
        if found:
            hits[str(source.relative_to(REPO))] = found.group(1)
    assert len(hits) == 1, f"{pattern!r} must match exactly one file under src/, matched {hits}"
    return next(iter(hits.values()))


# --- the Makefile ----------------------------------------------------------------


@pytest.fixture(scope="module")
def make_path(tmp_path_factory) -> str:
    """A PATH with only what the Makefile's own $(shell ...) calls use: make -n
    must not need docker, cargo or packer."""
    bin_dir = tmp_path_factory.mktemp("make-bin")
    for name in ("sed", "head", "git"):
        (bin_dir / name).symlink_to(tool(name))
    for absent in ("docker", "cargo", "packer"):
        assert shutil.which(absent, path=str(bin_dir)) is None
    return str(bin_dir)


def make(*args: str, path: str, cwd: Path = REPO, dry_run: bool = True, **env: str):
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MAKE") and k not in ("MFLAGS", "CARGO_TARGET_DIR")
    }
    clean.update(MAKEFLAGS="", PATH=path, **env)
    flags = ["-n"] if dry_run else []
    return subprocess.run(
        [tool("make"), *flags, "--no-print-directory", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_n(*args: str, path: str, **env: str) -> list[str]:
    """The commands `make -n` prints, continuation lines joined, spaces collapsed."""
    done = make(*args, path=path, **env)
    assert done.returncode == 0, done.stderr
    text = done.stdout.replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def test_make_default_target_builds_the_build_container(make_path):
    version, commit = cargo_version(), git_commit()
    assert make_n(path=make_path) == [
        "images/build/check-pins.sh images/build/Dockerfile",
        f"docker build -f images/build/Dockerfile -t nodeboot/build:{version} "
        f"--build-arg NODEBOOT_VERSION={version} --build-arg NODEBOOT_COMMIT={commit} .",
    ]


def test_make_refuses_to_build_the_container_while_a_pin_is_missing(make_path, tmp_path):
    """The checksums and digests committed empty (nothing here can know them)
    stop `make` before docker runs; given as build arguments, the build goes on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.args"
    write_script(bin_dir / "docker", f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    path = f"{bin_dir}:{make_path}:{Path(tool('bash')).parent}"
    done = make(path=path, dry_run=False)
    assert done.returncode != 0 and not log.exists(), "docker ran with unpinned inputs"
    for name in UNPINNED_HERE:
        assert f"{name} is not pinned" in done.stderr, done.stderr
    pins = " ".join(f"--build-arg {name}={pinned(name)}" for name in UNPINNED_HERE)
    done = make(f"DOCKER_BUILD_ARGS={pins}", path=path, dry_run=False)
    assert done.returncode == 0, done.stderr
    assert "build" in log.read_text().split()


def test_make_binary_is_the_static_musl_build(make_path):
    assert make_n("binary", path=make_path) == [MUSL_BUILD]


def test_make_render_renders_the_example_where_terraform_reads(make_path):
    """The dev build without the AWS SDK (the README's first command), into
    build/<environment>/ignition (tests/terraform/test_platform.py checks
    that this is terraform/main.tf's ignition_dir)."""
    assert make_n("render", path=make_path) == [
        "cargo run --locked --no-default-features -- render"
        " --env environments/example.tfvars --out build/example/ignition",
    ]


def test_make_render_follows_env_file(make_path, tmp_path):
    env = tmp_path / "staging.tfvars"
    env.write_text(EXAMPLE.read_text().replace('"example"', '"staging"', 1))
    commands = make_n("render", path=make_path, ENV_FILE=str(env))
    assert commands == [
        "cargo run --locked --no-default-features -- render"
        f" --env {env} --out build/staging/ignition"
    ]


def test_make_test_runs_the_suite(make_path):
    assert make_n("test", path=make_path) == ["tests/run"]


def test_make_ami_builds_the_binary_then_runs_packer(make_path):
    """The bake gets the SHA-256 of the binary just built: it checks the
    upload against it and tags the AMI with it."""
    version, commit = cargo_version(), git_commit()
    binary = f"target/{MUSL}/release/nodeboot"
    assert make_n("ami", path=make_path) == [
        MUSL_BUILD,
        "mkdir -p out/ami",
        f"{binary} images --env environments/example.tfvars >out/ami/images.txt",
        "packer init images/ami/flatcar.pkr.hcl",
        f"packer build -var nodeboot_binary={binary} "
        f"-var nodeboot_sha256=$(sha256sum {binary} | cut -d' ' -f1) "
        f"-var nodeboot_version={version} -var nodeboot_commit={commit} "
        "-var images_file=out/ami/images.txt images/ami/flatcar.pkr.hcl",
    ]


def test_make_shell_and_play_start_the_container(make_path):
    image = f"nodeboot/build:{cargo_version()}"
    assert make_n("shell", "ENV_NAME=prod", path=make_path) == [
        f"NODEBOOT_IMAGE={image} images/build/entrypoint.sh -e prod"
    ]
    assert make_n("play", path=make_path) == [
        f"NODEBOOT_IMAGE={image} images/build/entrypoint.sh --play"
    ]


def test_make_clean_removes_only_out(make_path):
    assert make_n("clean", path=make_path) == ["rm -rf out"]


def test_make_clean_keeps_the_cargo_target_dir(make_path, tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "Cargo.toml", tmp_path / "Cargo.toml")
    (tmp_path / "out" / "example").mkdir(parents=True)
    (tmp_path / "out" / "example" / "etcd.ign").write_text("{}")
    (tmp_path / "target" / "release").mkdir(parents=True)
    (tmp_path / "target" / "release" / "nodeboot").write_text("binary")
    path = f"{make_path}:{Path(tool('rm')).parent}"
    done = make("clean", path=path, cwd=tmp_path, dry_run=False)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "target" / "release" / "nodeboot").read_text() == "binary"


# --- the Dockerfile ------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str, list[str]]]:
    """(KEYWORD, arguments, comment lines just above) of each instruction,
    continuation lines joined; the parser directive and comments are skipped."""
    result, comments, pending = [], [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            comments = comments + [stripped.lstrip("# ")] if stripped else []
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = " ".join((pending + stripped).split())
        pending = ""
        keyword, _, args = text.partition(" ")
        result.append((keyword.upper(), args, comments))
        comments = []
    return result


def stages(path: Path) -> list[dict]:
    """Each stage: its name, its FROM image and its instructions."""
    found = []
    for keyword, args, comments in instructions(path):
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append({"name": name, "image": words[0], "body": []})
        elif found:
            found[-1]["body"].append((keyword, args, comments))
    return found


def arg_defaults(path: Path) -> dict[str, str]:
    defaults = {}
    for keyword, args, _ in instructions(path):
        if keyword == "ARG":
            name, _, value = args.partition("=")
            defaults[name] = value
    return defaults


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def runs(stage: dict) -> str:
    return "\n".join(args for keyword, args, _ in stage["body"] if keyword == "RUN")


def test_dockerfile_images_are_pinned_by_tag_and_digest_never_latest():
    defaults = arg_defaults(DOCKERFILE)
    digests = {k for k in defaults if k.endswith("_DIGEST")}
    assert digests == {"RUST_IMAGE_DIGEST", "DEBIAN_IMAGE_DIGEST"}
    for stage in stages(DOCKERFILE):
        reference, at, digest = stage["image"].partition("@")
        assert at and re.fullmatch(r"\$\{(\w+_DIGEST)\}", digest), f"{stage['image']} has no digest"
        assert digest[2:-1] in digests
        image = substitute(reference, defaults)
        repository, _, tag = image.rpartition(":")
        assert repository and tag, f"{stage['image']} has no tag"
        assert "latest" not in tag, f"{image} is not pinned"
    for keyword, args, _ in instructions(DOCKERFILE):
        assert "latest" not in args, f"{keyword} {args}"


# The pins this machine cannot know (no registry or release host answers
# here): committed empty, required by check-pins.sh before any build.
UNPINNED_HERE = (
    "AWSCLI_SHA256",
    "DEBIAN_IMAGE_DIGEST",
    "ETCD_SHA256",
    "KUBECTL_SHA256",
    "RUST_IMAGE_DIGEST",
    "TERRAFORM_SHA256",
)
CHECK_PINS = IMAGES / "build" / "check-pins.sh"


def pinned(name: str) -> str:
    return f"sha256:{'c' * 64}" if name.endswith("_DIGEST") else "A" * 64


def check_pins(*args: str, **env: str):
    return subprocess.run(
        [str(CHECK_PINS), str(DOCKERFILE), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_pin_is_committed_or_required():
    """Each *_SHA256 is 64 hex digits and each *_DIGEST sha256:<64 hex> in
    the Dockerfile, or empty: then it is one check-pins.sh requires."""
    defaults = arg_defaults(DOCKERFILE)
    pins = {k: v for k, v in defaults.items() if k.endswith(("_SHA256", "_DIGEST"))}
    empty = {k for k, v in pins.items() if v == ""}
    for name, value in pins.items():
        if name.endswith("_DIGEST"):
            assert value == "" or re.fullmatch(r"sha256:[0-9a-f]{64}", value), f"{name}={value!r}"
    assert empty == set(UNPINNED_HERE), "a pin was filled in: drop it from UNPINNED_HERE"
    done = check_pins()
    assert done.returncode == 2
    refused = set(re.findall(r"(\w+) is not pinned", done.stderr))
    assert refused == empty, done.stderr


def test_check_pins_takes_build_arguments_and_refuses_malformed_ones():
    given = [
        f"--build-arg={n}={pinned(n)}" if i % 2 else f"--build-arg {n}={pinned(n)}"
        for i, n in enumerate(UNPINNED_HERE)
    ]
    args = [word for arg in given for word in arg.split(" ")]
    assert check_pins(*args).returncode == 0
    # `--build-arg NAME` takes the value from the environment, as docker does.
    others = [f"--build-arg={n}={pinned(n)}" for n in UNPINNED_HERE if n != "TERRAFORM_SHA256"]
    done = check_pins(*others, "--build-arg", "TERRAFORM_SHA256", TERRAFORM_SHA256="b" * 64)
    assert done.returncode == 0, done.stderr
    for name, bad in [
        ("TERRAFORM_SHA256", "ab" * 31),
        ("RUST_IMAGE_DIGEST", "c" * 64),
        ("ETCD_SHA256", "TODO"),
    ]:
        done = check_pins(*args, "--build-arg", f"{name}={bad}")
        assert done.returncode == 2 and f"{name} is not pinned" in done.stderr, (name, done.stderr)
        assert len(re.findall("is not pinned", done.stderr)) == 1


def test_dockerfile_rust_stage_builds_the_static_musl_binary():
    nodeboot = stages(DOCKERFILE)[0]
    assert nodeboot["name"] == "nodeboot"
    assert nodeboot["image"].startswith("rust:${RUST_VERSION}")
    body = runs(nodeboot)
    assert "musl-tools" in body and f"rustup target add {MUSL}" in body
    assert MUSL_BUILD in body
    assert "program interpreter" in body and "NEEDED" in body, "no check that it is static"


def test_dockerfile_final_stage_copies_the_musl_binary_and_installs_the_tools():
    final = stages(DOCKERFILE)[-1]
    copies = [args for keyword, args, _ in final["body"] if keyword == "COPY"]
    assert f"--from=nodeboot /src/target/{MUSL}/release/nodeboot /usr/local/bin/nodeboot" in copies
    assert "--from=tools /out/bin/ /usr/local/bin/" in copies
    assert "--from=tools /opt/aws-cli /opt/aws-cli" in copies
    tools = runs(next(s for s in stages(DOCKERFILE) if s["name"] == "tools"))
    for name in ("terraform", "kubectl", "etcdctl"):
        assert f"/out/bin/{name}" in tools, f"the tools stage does not install {name}"
    assert "./aws/install --install-dir /opt/aws-cli" in tools
    smoke = runs(final)
    for command in (
        "nodeboot --version",
        "terraform version",
        "kubectl version --client",
        "aws --version",
        "etcdctl version",
    ):
        assert command in smoke, f"the final stage does not run `{command}`"
    keywords = {keyword: args for keyword, args, _ in final["body"]}
    assert keywords["ENTRYPOINT"] == '["/usr/local/bin/entrypoint.sh"]'
    assert "NODEBOOT_IN_CONTAINER=1" in keywords["ENV"]


def test_dockerfile_every_version_arg_is_pinned_and_used():
    text = DOCKERFILE.read_text()
    defaults = arg_defaults(DOCKERFILE)
    versions = {k: v for k, v in defaults.items() if k.endswith("_VERSION")}
    assert {
        "RUST_VERSION",
        "TERRAFORM_VERSION",
        "KUBECTL_VERSION",
        "ETCD_VERSION",
        "AWSCLI_VERSION",
    } <= set(versions)
    for name, value in versions.items():
        if name.startswith("NODEBOOT_"):
            continue  # a label, from `make`
        assert re.fullmatch(r"\d+(\.\d+)+", value), f"{name}={value!r} is not a pinned version"
        assert f"${{{name}}}" in text, f"{name} is declared but never used"
    assert re.fullmatch(r"1\.11\.\d+", versions["TERRAFORM_VERSION"])


def test_dockerfile_versions_match_the_example_environment():
    defaults = arg_defaults(DOCKERFILE)
    assert minor(defaults["KUBECTL_VERSION"]) == minor(tfvars("kubernetes_version"))
    assert defaults["ETCD_VERSION"] == tfvars("etcd_version")


def test_dockerfile_every_download_is_checked_with_sha256():
    defaults = arg_defaults(DOCKERFILE)
    fetched = set()
    for stage in stages(DOCKERFILE):
        declared: set[str] = set()
        for keyword, args, _ in stage["body"]:
            assert keyword != "ADD", "ADD fetches without a checksum; use fetch.sh"
            if keyword == "ARG":
                declared.add(args.partition("=")[0])
                continue
            if keyword != "RUN":
                continue
            command = re.search(r"(^|&&|\|\||;|\|)\s*(curl|wget)\s", args)
            assert not command, f"download outside fetch.sh: {args}"
            urls = re.findall(r"https?://\S+", args)
            calls = re.findall(r'fetch\.sh "(https://[^"]+)" "\$\{(\w+_SHA256)\}" (\S+)', args)
            assert len(calls) == len(urls), f"a URL not fetched by fetch.sh: {args}"
            for _url, sha_arg, _out in calls:
                assert sha_arg in declared, f"{sha_arg} is not an ARG of this stage"
                fetched.add(sha_arg)
    shas = {k for k in defaults if k.endswith("_SHA256")}
    assert fetched == shas == {"TERRAFORM_SHA256", "KUBECTL_SHA256", "ETCD_SHA256", "AWSCLI_SHA256"}
    fetch = FETCH.read_text()
    assert "sha256sum --check --strict" in fetch and "--proto" in fetch


def test_dockerfile_sha256_args_are_placeholders_with_their_source_or_checksums():
    for keyword, args, comments in instructions(DOCKERFILE):
        name, _, value = args.partition("=")
        if keyword != "ARG" or not name.endswith("_SHA256"):
            continue
        assert value == "" or re.fullmatch(r"[0-9a-f]{64}", value), f"{name}={value!r}"
        assert any("https://" in line for line in comments), (
            f"the comment above ARG {name} must say where upstream publishes the checksum"
        )


def test_build_context_is_limited_to_what_the_image_is_built_from():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the ignore file must start by excluding everything"
    allowed = [p[1:].rstrip("/") for p in patterns[1:] if p.startswith("!")]
    for entry in allowed:
        assert not re.match(r"(secrets|target|out|build)\b", entry), entry
        assert not entry.startswith("environments/") or entry.endswith(".askama"), entry
    for keyword, args, _ in instructions(DOCKERFILE):
        if keyword != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
            assert any(source == a or source.startswith(a + "/") for a in allowed), (
                f"COPY {source} is excluded from the build context by {DOCKERIGNORE.name}"
            )


def test_rust_stage_copies_every_file_the_build_reads():
    """Cargo's inputs: the manifest, the sources, askama's template directories
    and any file the code includes at compile time."""
    copied = set()
    for keyword, args, _ in stages(DOCKERFILE)[0]["body"]:
        if keyword == "COPY":
            copied.update(source.rstrip("/") for source in args.split()[:-1])

    def is_copied(path: str) -> bool:
        return any(path == c or path.startswith(c + "/") for c in copied)

    needed = ["Cargo.toml", "Cargo.lock", "askama.toml", "src"]
    askama_dirs = re.search(r"dirs = \[(.*)\]", (REPO / "askama.toml").read_text()).group(1)
    for directory in re.findall(r'"([^"]+)"', askama_dirs):
        templates = [p for p in (REPO / directory).rglob("*") if p.is_file()]
        if directory == "environments":  # the environment files are not templates
            templates = [p for p in templates if p.suffix == ".askama"]
        needed += [str(p.relative_to(REPO)) for p in templates]
    for source in (REPO / "src").rglob("*.rs"):
        for included in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', source.read_text()):
            needed.append(str((source.parent / included).resolve().relative_to(REPO)))
    missing = [path for path in needed if not is_copied(path)]
    assert not missing, f"the nodeboot stage does not COPY {missing}"


# --- fetch.sh ----------------------------------------------------------------


def fetch(url: str, checksum: str, out: Path):
    env = dict(os.environ, FETCH_PROTO="=file")
    return subprocess.run(
        [str(FETCH), url, checksum, str(out)], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def artefact(tmp_path) -> Path:
    path = tmp_path / "terraform.zip"
    path.write_bytes(b"an artefact\n" * 100)
    return path


def test_fetch_keeps_a_download_that_matches(artefact, tmp_path):
    out = tmp_path / "got"
    done = fetch(artefact.as_uri(), sha("sha256", artefact).upper(), out)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == artefact.read_bytes()


def test_fetch_refuses_a_download_that_does_not_match(artefact, tmp_path):
    out = tmp_path / "got"
    done = fetch(artefact.as_uri(), "0" * 64, out)
    assert done.returncode != 0
    assert "does not match" in done.stderr
    assert list(tmp_path.iterdir()) == [artefact], "fetch.sh left a file behind"


@pytest.mark.parametrize("checksum", ["", "TODO", "ab" * 31])
def test_fetch_refuses_a_missing_checksum_before_downloading(artefact, tmp_path, checksum):
    out = tmp_path / "got"
    done = fetch(artefact.as_uri(), checksum, out)
    assert done.returncode == 1
    assert "_SHA256 build argument" in done.stderr
    assert not out.exists()


def test_fetch_allows_only_https_by_default(artefact, tmp_path):
    out = tmp_path / "got"
    env = {k: v for k, v in os.environ.items() if k != "FETCH_PROTO"}
    done = subprocess.run(
        [str(FETCH), artefact.as_uri(), sha("sha256", artefact), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and not out.exists()


# --- the Packer template -------------------------------------------------------


@pytest.fixture(scope="module")
def packer() -> dict:
    with PACKER.open() as f:
        return hcl2.load(f)


def variables(doc: dict) -> dict[str, dict]:
    return {unquote(k): v for entry in doc["variable"] for k, v in entry.items() if k[0] != "_"}


def packer_locals(doc: dict) -> dict:
    return {k: unquote(v) for entry in doc["locals"] for k, v in entry.items() if k[0] != "_"}


def flatcar_source(doc: dict) -> dict:
    (entry,) = doc["source"]
    return entry['"amazon-ebs"']['"flatcar"']


def provisioners(doc: dict) -> list[tuple[str, dict]]:
    (build,) = doc["build"]
    return [(unquote(k), v) for entry in build["provisioner"] for k, v in entry.items()]


def test_packer_template_is_hcl2(packer):
    assert "__is_block__" in str(packer), "`import hcl2` is not python-hcl2 8"
    assert {"packer", "variable", "locals", "source", "build"} <= set(packer)
    (settings,) = packer["packer"]
    (plugins,) = settings["required_plugins"]
    assert unquote(plugins["amazon"]["source"]) == "github.com/hashicorp/amazon"


def test_packer_template_is_formatted(tmp_path):
    """`packer fmt` and `terraform fmt` share HCL's formatter (hclwrite)."""
    if shutil.which("packer"):
        done = subprocess.run(
            ["packer", "fmt", "-check", "-diff", str(PACKER)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    copy = tmp_path / "flatcar.tf"
    shutil.copy(PACKER, copy)
    env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_CLI_CONFIG_FILE=os.devnull)
    done = subprocess.run(
        [tool("terraform"), "fmt", "-check", "-diff", copy.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
def test_packer_template_validates_with_packer():
    done = subprocess.run(
        ["packer", "validate", "-syntax-only", str(PACKER)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_packer_plugin_is_pinned_to_one_release(packer):
    """Packer has no lock file and no checksum for a plugin: the exact
    version is the pin (images/README.md)."""
    (settings,) = packer["packer"]
    (plugins,) = settings["required_plugins"]
    assert re.fullmatch(r"= \d+\.\d+\.\d+", unquote(plugins["amazon"]["version"])), plugins


def test_packer_starts_from_the_pinned_flatcar_release(packer):
    """The source AMI is the one of a Flatcar release number, never the newest."""
    source = flatcar_source(packer)
    (ami_filter,) = source["source_ami_filter"]
    assert [unquote(o) for o in ami_filter["owners"]] == [FLATCAR_OWNER]
    assert ami_filter["most_recent"] is False
    filters = {unquote(k): unquote(v) for k, v in ami_filter["filters"].items()}
    assert filters["name"] == "Flatcar-${var.channel}-${var.flatcar_release}-hvm"
    release = variables(packer)["flatcar_release"]
    # Flatcar numbers a stable release N.2.P (beta N.1.P, alpha N.0.P).
    assert re.fullmatch(r"\d+\.2\.\d+", unquote(release["default"]))
    assert unquote(variables(packer)["channel"]["default"]) == "stable" == tfvars("flatcar_channel")
    (validation,) = release["validation"]
    assert "var.flatcar_release" in validation["condition"]
    assert filters["virtualization-type"] == "hvm"
    assert filters["architecture"] == "x86_64"
    assert unquote(source["ssh_username"]) == "core"
    # Terraform runs the image baked here: this account's, by the AMI name.
    main_tf = (REPO / "terraform" / "main.tf").read_text()
    assert "owners      = [var.aws_account]" in main_tf
    assert 'values = ["nodeboot-flatcar-${var.flatcar_channel}-*"]' in main_tf
    assert unquote(source["ami_name"]).startswith("nodeboot-flatcar-${var.channel}-")


def test_packer_variables(packer):
    declared = variables(packer)
    assert {
        "region",
        "channel",
        "instance_type",
        "nodeboot_binary",
        "nodeboot_sha256",
        "flatcar_release",
        "nodeboot_version",
        "nodeboot_commit",
        "kubelet_version",
        "kubelet_url",
        "kubelet_sha512",
        "cni_plugins_version",
        "cni_plugins_url",
        "cni_plugins_sha512",
    } <= set(declared)
    for name, body in declared.items():
        assert "type" in body and "description" in body, name
    assert "default" not in declared["kubelet_sha512"], "the kubelet checksum must be given"
    assert "default" not in declared["nodeboot_sha256"], "the binary's checksum must be given"
    (validation,) = declared["nodeboot_sha256"]["validation"]
    assert validation["condition"] == '${can(regex("^[0-9a-f]{64}$", var.nodeboot_sha256))}'
    assert unquote(declared["nodeboot_binary"]["default"]) == f"target/{MUSL}/release/nodeboot"
    assert unquote(declared["kubelet_version"]["default"]) == tfvars("kubernetes_version")
    channels = rust_constant(r"FLATCAR_CHANNELS: \[&str; \d\] = \[(.*)\];")
    (validation,) = declared["channel"]["validation"]
    assert validation["condition"] == f"${{contains([{channels}], var.channel)}}"


def test_packer_installs_the_binaries_into_opt_bin(packer):
    paths = packer_locals(packer)
    assert paths["nodeboot_path"] == "/opt/bin/nodeboot" == tfvars("nodeboot_path")
    kubelet_binary = rust_constant(r'KUBELET_BINARY: &str = "(.*)";')
    assert paths["kubelet_path"] == "/opt/bin/kubelet" == kubelet_binary
    assert paths["nodeboot_store"] == "/opt/nodeboot"

    (upload, boot, install, reset) = provisioners(packer)
    assert upload[0] == "file"
    assert upload[1]["source"] == "${var.nodeboot_binary}"
    assert unquote(upload[1]["destination"]) == "/tmp/nodeboot"
    assert boot[0] == "file"
    assert unquote(boot[1]["source"]) == "${path.root}/boot/"
    assert install[0] == "shell"
    assert unquote(install[1]["script"]) == "${path.root}/provision.sh"
    assert "sudo" in install[1]["execute_command"]
    env = install[1]["env"]
    assert unquote(env["NODEBOOT_UPLOAD"]) == "/tmp/nodeboot"
    assert env["NODEBOOT_SHA256"] == "${var.nodeboot_sha256}"
    assert env["NODEBOOT_PATH"] == "${local.nodeboot_path}"
    assert env["NODEBOOT_STORE"] == "${local.nodeboot_store}"
    assert unquote(env["BOOT_CHECK_UPLOAD"]) == unquote(boot[1]["destination"])
    assert env["BOOT_CHECK_UNIT"] == "${local.boot_check_unit}"
    assert env["BOOT_CHECK_DROPIN"] == "${local.boot_check_dropin}"
    assert env["KUBELET_PATH"] == "${local.kubelet_path}"
    assert env["KUBELET_URL"] == "${local.kubelet_url}"
    assert env["KUBELET_SHA512"] == "${var.kubelet_sha512}"
    assert reset[0] == "shell"
    (command,) = reset[1]["inline"]
    assert shlex.split(unquote(command)) == [
        "sudo",
        "flatcar-reset",
        "--keep-paths",
        "${local.nodeboot_path}",
        "${local.nodeboot_store}",
        "${local.kubelet_path}",
        "${local.cni_bin_dir}",
        "${local.boot_check_unit}",
        "${local.boot_check_dropin}",
        "${local.containerd_store}",
        "${local.docker_store}",
        "${local.kernel_modules_conf}",
        "${local.kernel_sysctl_conf}",
    ], "flatcar-reset would wipe what the bake installed"
    assert env["IMAGES"] == "${local.images_text}"


def test_packer_tags_the_ami_with_the_nodeboot_version_and_commit(packer):
    tags = {unquote(k): v for k, v in packer_locals(packer)["tags"].items()}
    assert tags["nodeboot.io/version"] == "${var.nodeboot_version}"
    assert tags["nodeboot.io/commit"] == "${var.nodeboot_commit}"
    assert tags["nodeboot.io/nodeboot-sha256"] == "${var.nodeboot_sha256}"
    assert tags["nodeboot.io/flatcar-release"] == "${var.flatcar_release}"
    assert tags["nodeboot.io/cni-plugins-version"] == "${var.cni_plugins_version}"
    assert tags["nodeboot.io/cni-plugins-sha512"] == "${lower(var.cni_plugins_sha512)}"
    (manifest,) = [v for entry in packer["build"][0]["post-processor"] for v in entry.values()]
    assert manifest["custom_data"]["cni_plugins_version"] == "${var.cni_plugins_version}"
    assert manifest["custom_data"]["nodeboot_sha256"] == "${var.nodeboot_sha256}"
    assert manifest["custom_data"]["flatcar_release"] == "${var.flatcar_release}"
    assert manifest["custom_data"]["cni_plugins_sha512"] == "${lower(var.cni_plugins_sha512)}"
    source = flatcar_source(packer)
    assert source["tags"].startswith("${merge(local.tags,")
    assert source["snapshot_tags"] == "${local.tags}"


# --- the CNI plugins the bake installs ------------------------------------------


def flannel_config_file(key: str) -> dict:
    """A file of the Flannel ConfigMap (`cni-conf.json`, `net-conf.json`) as
    the template has it. `nodeboot render` copies this block unchanged when it
    holds no template expression (checked here; tests/cni checks the rendered
    file against the real plugins)."""
    lines = FLANNEL.read_text().splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.strip() == f"{key}: |"]
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    text = textwrap.dedent("\n".join(body))
    assert "{{" not in text and "{%" not in text, f"{key} is templated: read the rendered file"
    return json.loads(text)


def plugins_the_cni_chain_needs(conflist: dict) -> set[str]:
    """Every plugin binary the runtime or a plugin of `conflist` executes.
    The flannel plugin hands its `delegate` to the delegate's `type`, default
    `bridge`, with an `ipam` whose `type` defaults to `host-local` (its README,
    "flannel plugin will always set"); a chained plugin may have an `ipam` of
    its own. containerd runs `loopback` for every sandbox's `lo` as well.
    `flannel` itself is left out: Flannel's DaemonSet copies it (checked
    below)."""
    needed = {"loopback"}
    for plugin in conflist["plugins"]:
        if plugin["type"] == "flannel":
            needed.add(plugin.get("delegate", {}).get("type", "bridge"))
            needed.add(plugin.get("ipam", {}).get("type", "host-local"))
        else:
            needed.add(plugin["type"])
            if "ipam" in plugin:
                needed.add(plugin["ipam"]["type"])
    return needed


def test_the_flannel_daemonset_installs_only_its_own_plugin():
    text = FLANNEL.read_text()
    assert re.search(r"- -f\s+- /flannel\s+- /opt/cni/bin/flannel\n", text)
    assert text.count(f"path: {CNI_BIN_DIR}") == 1
    assert plugins_the_cni_chain_needs(flannel_config_file("cni-conf.json")) >= {
        "bridge",
        "host-local",
        "portmap",
        "loopback",
    }, "the derivation lost a plugin the Flannel chain is known to run"


def test_packer_pins_the_cni_plugins_kubernetes_is_tested_with(packer):
    declared = variables(packer)
    version = unquote(declared["cni_plugins_version"]["default"])
    assert re.fullmatch(r"1\.\d+\.\d+", version), f"{version!r} is not a pinned v1.x release"
    kubernetes = minor(tfvars("kubernetes_version"))
    assert kubernetes in CNI_PLUGINS_FOR_KUBERNETES, (
        f"which CNI plugins release Kubernetes {kubernetes} expects is not recorded here"
    )
    assert version == CNI_PLUGINS_FOR_KUBERNETES[kubernetes]
    assert "default" not in declared["cni_plugins_sha512"], "the checksum must be given"
    (validation,) = declared["cni_plugins_sha512"]["validation"]
    assert validation["condition"] == (
        '${can(regex("^[0-9a-fA-F]{128}$", var.cni_plugins_sha512))}'
    )
    assert ".sha512" in declared["cni_plugins_sha512"]["description"]
    paths = packer_locals(packer)
    assert paths["cni_bin_dir"] == CNI_BIN_DIR
    assert paths["cni_plugins_url"] == (
        '${var.cni_plugins_url != "" ? var.cni_plugins_url : '
        '"https://github.com/containernetworking/plugins/releases/download/'
        'v${var.cni_plugins_version}/cni-plugins-linux-amd64-v${var.cni_plugins_version}.tgz"}'
    )
    (_, _, install, _) = provisioners(packer)
    env = install[1]["env"]
    assert env["CNI_PLUGINS_URL"] == "${local.cni_plugins_url}"
    assert env["CNI_PLUGINS_SHA512"] == "${var.cni_plugins_sha512}"
    assert env["CNI_BIN_DIR"] == "${local.cni_bin_dir}"
    assert env["CNI_PLUGINS"] == '${join(" ", local.cni_plugins)}'


def test_the_bake_installs_every_plugin_the_rendered_cni_chain_needs(packer):
    required = {unquote(name) for name in packer_locals(packer)["cni_plugins"]}
    needed = plugins_the_cni_chain_needs(flannel_config_file("cni-conf.json"))
    assert needed <= required, f"the bake does not require {sorted(needed - required)}"


# --- provision.sh --------------------------------------------------------------


CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")


def cni_archive(tmp_path: Path, plugins=CNI_PLUGINS, extra=()) -> Path:
    """A stand-in for cni-plugins-linux-amd64-v<version>.tgz: one script per
    plugin that answers CNI_COMMAND=VERSION as the real ones do, and the
    release's LICENSE and README.md (not executables)."""
    tree = tmp_path / "cni-tree"
    tree.mkdir()
    for name in (*plugins, *extra):
        answer = json.dumps({"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"], "p": name})
        write_script(
            tree / name,
            f'#!/bin/sh\n[ "$CNI_COMMAND" = VERSION ] || exit 1\necho {shlex.quote(answer)}\n',
        )
    (tree / "LICENSE").write_text("Apache License\n")
    (tree / "README.md").write_text("plugins\n")
    archive = tmp_path / "cni-plugins.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(tree.iterdir()):
            tar.add(path, arcname=f"./{path.name}")
    return archive


BOOT_CHECK = IMAGES / "ami" / "boot"
STORE = "/opt/nodeboot"
UNIT = "/etc/systemd/system/verify-nodeboot.service"
DROPIN = "/etc/systemd/system/nodeboot-.service.d"


SANDBOX = "registry.k8s.io/pause:3.8"  # a stand-in for Flatcar's containerd config
KERNEL_MODULES = "/etc/modules-load.d/nodeboot-kubernetes.conf"
KERNEL_SYSCTL = "/etc/sysctl.d/90-nodeboot-kubernetes.conf"


# What `nodeboot images` prints for the example (two of each runtime).
BAKED = "\n".join(
    [
        "containerd registry.k8s.io/kube-apiserver:v1.31.4@sha256:" + "a" * 64,
        "containerd registry.k8s.io/kube-proxy:v1.31.4@sha256:" + "b" * 64,
        "docker quay.io/coreos/etcd:v3.5.17@sha256:" + "c" * 64,
        "docker registry.k8s.io/kubectl:v1.31.4@sha256:" + "d" * 64,
    ]
)


def runtimes(tmp_path: Path) -> Path:
    """ctr and docker stand-ins on PATH: each records its arguments and
    answers the listing and the inspection as the real ones would after the
    pulls it recorded."""
    bin_dir = tmp_path / "runtimes"
    bin_dir.mkdir()
    log = tmp_path / "runtime-calls"
    write_script(
        bin_dir / "ctr",
        f'#!/bin/sh\necho "ctr $*" >>{log}\n'
        f'case "$*" in *"images ls --quiet"*) sed -n "s/^ctr .* images pull .* //p" {log} ;;\n'
        f'*"images ls"*) echo "REF TYPE DIGEST"; echo "{SANDBOX} x sha256:{"e" * 64}" ;; esac\n',
    )
    write_script(
        bin_dir / "containerd",
        '#!/bin/sh\n[ "$*" = "config dump" ] || exit 1\n'
        f"echo '    sandbox_image = \"{SANDBOX}\"'\n",
    )
    write_script(bin_dir / "docker", f'#!/bin/sh\necho "docker $*" >>{log}\n')
    return bin_dir


def provision(
    tmp_path: Path,
    kubelet=None,
    kubelet_sha512=None,
    cni=None,
    cni_sha512=None,
    nodeboot_sha256=None,
    images=BAKED,
):
    if kubelet is None:
        kubelet = write_script(tmp_path / "kubelet", "#!/bin/sh\necho Kubernetes v1.31.4\n")
    if cni is None:
        cni = cni_archive(tmp_path)
    upload = write_script(tmp_path / "upload-nodeboot", "#!/bin/sh\necho nodeboot 0.1.0\n")
    boot = tmp_path / "upload-boot"
    shutil.copytree(BOOT_CHECK, boot)
    env = dict(
        os.environ,
        DESTDIR=str(tmp_path / "root"),
        NODEBOOT_UPLOAD=str(upload),
        NODEBOOT_SHA256=nodeboot_sha256 or sha("sha256", upload),
        NODEBOOT_PATH="/opt/bin/nodeboot",
        NODEBOOT_STORE=STORE,
        BOOT_CHECK_UPLOAD=str(boot),
        BOOT_CHECK_UNIT=UNIT,
        BOOT_CHECK_DROPIN=DROPIN,
        KUBELET_PATH="/opt/bin/kubelet",
        KUBELET_URL=kubelet.as_uri(),
        KUBELET_SHA512=kubelet_sha512 or sha("sha512", kubelet),
        CNI_PLUGINS_URL=cni.as_uri(),
        CNI_PLUGINS_SHA512=cni_sha512 or sha("sha512", cni).upper(),
        CNI_BIN_DIR=CNI_BIN_DIR,
        CNI_PLUGINS=" ".join(CNI_PLUGINS),
        IMAGES=images,
        KERNEL_MODULES_CONF=KERNEL_MODULES,
        KERNEL_SYSCTL_CONF=KERNEL_SYSCTL,
        PATH=f"{runtimes(tmp_path)}:{os.environ['PATH']}",
    )
    return subprocess.run([str(PROVISION)], env=env, capture_output=True, text=True, timeout=60)


def test_provision_pulls_every_image_by_digest_into_its_runtime(tmp_path):
    """containerd's CRI looks a pod's image up as repository@digest, so that
    is what the bake pulls into namespace k8s.io; etcd and kubectl into
    docker; then containerd's own sandbox (pause) image, as its config names
    it; the list, with the sandbox's digest, stays in the store."""
    done = provision(tmp_path)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "runtime-calls").read_text().splitlines()
    pulls = [c for c in calls if " pull " in c]
    ctr_pull = "ctr --namespace k8s.io images pull --platform linux/amd64 registry.k8s.io"
    assert pulls == [
        f"{ctr_pull}/kube-apiserver@sha256:" + "a" * 64,
        f"{ctr_pull}/kube-proxy@sha256:" + "b" * 64,
        "docker pull --quiet quay.io/coreos/etcd@sha256:" + "c" * 64,
        "docker pull --quiet registry.k8s.io/kubectl@sha256:" + "d" * 64,
        f"ctr --namespace k8s.io images pull --platform linux/amd64 {SANDBOX}",
    ]
    store = tmp_path / "root" / STORE.lstrip("/")
    sandbox = f"sandbox {SANDBOX}@sha256:" + "e" * 64
    assert (store / "images").read_text() == BAKED + "\n" + sandbox + "\n"


@pytest.mark.parametrize(
    "line",
    [
        "containerd registry.k8s.io/kube-apiserver:v1.31.4",
        "containerd registry.k8s.io/kube-apiserver@sha256:" + "a" * 64,
        "podman registry.k8s.io/kube-apiserver:v1.31.4@sha256:" + "a" * 64,
        "docker quay.io/coreos/etcd:v3.5.17@sha256:" + "C" * 64,
    ],
)
def test_provision_refuses_an_image_not_pinned_by_tag_and_digest(tmp_path, line):
    done = provision(tmp_path, images=BAKED + "\n" + line)
    assert done.returncode != 0 and "IMAGES:" in done.stderr, done.stderr
    assert not (tmp_path / "root").exists(), "something was installed before the check"
    assert not (tmp_path / "runtime-calls").exists(), "something was pulled before the check"


def test_the_bakes_images_are_what_nodeboot_images_lists_for_the_environment():
    """make ami hands Packer the output of `nodeboot images`: every image of
    the rendered manifests, add-ons and units (tests/pinned_images.rs)."""
    # The suite's shared build (tests/run's cargo test leaves it there).
    target = os.environ.get("CARGO_TARGET_DIR", "/var/cache/nodeboot/target")
    binary = Path(target) / "debug" / "nodeboot"
    if not binary.exists():
        pytest.skip(f"no debug build of nodeboot in {target}")
    done = subprocess.run(
        [str(binary), "images", "--env", str(EXAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    line_form = r"(containerd|docker) \S+:[^@/:\s]+@sha256:[0-9a-f]{64}"
    assert lines and all(re.fullmatch(line_form, line) for line in lines), lines
    assert {line.split()[0] for line in lines} == {"containerd", "docker"}


def test_packer_bakes_the_images_and_keeps_their_stores(packer):
    (variable,) = [v for k, v in variables(packer).items() if k == "images_file"]
    assert "nodeboot images" in unquote(variable["description"])
    local = packer_locals(packer)
    assert local["containerd_store"] == "/var/lib/containerd"
    assert local["docker_store"] == "/var/lib/docker"
    text = PACKER.read_text()
    assert '"nodeboot.io/images-sha256"       = sha256("${local.images_text}\\n")' in text
    assert re.search(r"\bIMAGES\s+= local\.images_text", text)
    reset = next(line for line in text.splitlines() if "flatcar-reset --keep-paths" in line)
    assert "${local.containerd_store}" in reset and "${local.docker_store}" in reset


def test_provision_installs_both_binaries_mode_0755(tmp_path):
    kubelet = write_script(tmp_path / "kubelet", "#!/bin/sh\necho Kubernetes v1.31.4\n")
    uploaded = "#!/bin/sh\necho nodeboot 0.1.0\n"
    done = provision(tmp_path, kubelet)
    assert done.returncode == 0, done.stderr
    assert "nodeboot 0.1.0" in done.stdout and "Kubernetes v1.31.4" in done.stdout
    for name in ("nodeboot", "kubelet"):
        installed = tmp_path / "root" / "opt" / "bin" / name
        assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    assert (tmp_path / "root/opt/bin/kubelet").read_bytes() == kubelet.read_bytes()
    assert not (tmp_path / "upload-nodeboot").exists() and not (tmp_path / "upload-boot").exists()
    # The baked binary and the SHA-256 it was baked with live in the store;
    # the units' path leads there (relative: the same under DESTDIR).
    store = tmp_path / "root" / STORE.lstrip("/")
    assert (store / "nodeboot").read_text() == uploaded
    digest = hashlib.sha256(uploaded.encode()).hexdigest()
    assert (store / "nodeboot.sha256").read_text() == f"{digest}  nodeboot\n"
    link = tmp_path / "root/opt/bin/nodeboot"
    assert link.is_symlink() and os.readlink(link) == "../nodeboot/nodeboot"
    # The boot check ran on the builder as it runs at every boot.
    assert f"is the baked nodeboot, SHA-256 {digest}" in done.stdout


def test_provision_refuses_a_nodeboot_upload_that_does_not_match(tmp_path):
    """The bake's check: the binary that reached the builder is the one
    whose SHA-256 `make ami` computed (and the AMI will carry)."""
    done = provision(tmp_path, nodeboot_sha256="0" * 64)
    assert done.returncode != 0 and "does not match nodeboot_sha256" in done.stderr
    assert not (tmp_path / "root").exists(), "something was installed before the check"
    other = tmp_path / "other"
    other.mkdir()
    done = provision(other, nodeboot_sha256="abc")
    assert done.returncode != 0 and "NODEBOOT_SHA256 is not 64 hex digits" in done.stderr


def test_provision_installs_the_boot_check(tmp_path):
    done = provision(tmp_path)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "root"
    check = root / STORE.lstrip("/") / "verify-nodeboot"
    assert stat.S_IMODE(check.stat().st_mode) == 0o755
    assert (root / UNIT.lstrip("/")).read_bytes() == (
        BOOT_CHECK / "verify-nodeboot.service"
    ).read_bytes()
    dropin = root / DROPIN.lstrip("/") / "10-verify-nodeboot.conf"
    assert (
        dropin.read_bytes()
        == (BOOT_CHECK / "nodeboot-.service.d" / "10-verify-nodeboot.conf").read_bytes()
    )


def test_provision_refuses_a_kubelet_that_does_not_match(tmp_path):
    kubelet = write_script(tmp_path / "kubelet", "#!/bin/sh\necho tampered\n")
    done = provision(tmp_path, kubelet, kubelet_sha512="0" * 128)
    assert done.returncode != 0 and "does not match kubelet_sha512" in done.stderr
    assert not (tmp_path / "root").exists()


def test_provision_installs_every_plugin_of_the_release_into_opt_cni_bin(tmp_path):
    cni = cni_archive(tmp_path, extra=("tuning", "bandwidth"))
    done = provision(tmp_path, cni=cni)
    assert done.returncode == 0, done.stderr
    installed = tmp_path / "root" / CNI_BIN_DIR.lstrip("/")
    names = sorted(p.name for p in installed.iterdir())
    assert names == sorted([*CNI_PLUGINS, "tuning", "bandwidth"]), "not the release's executables"
    for path in installed.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    for name in CNI_PLUGINS:  # each required plugin ran on the builder and answered VERSION
        assert f'"p": "{name}"' in done.stdout, done.stdout


def test_provision_refuses_cni_plugins_that_do_not_match(tmp_path):
    done = provision(tmp_path, cni_sha512="f" * 128)
    assert done.returncode != 0 and "does not match cni_plugins_sha512" in done.stderr
    assert not (tmp_path / "root").exists(), "something was installed before every check"


def test_provision_refuses_a_release_without_a_required_plugin(tmp_path):
    cni = cni_archive(tmp_path, plugins=("bridge", "host-local", "loopback"))
    done = provision(tmp_path, cni=cni)
    assert done.returncode != 0 and "has no portmap plugin" in done.stderr
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("checksum", ["", "ab" * 32, "z" * 128])
def test_provision_refuses_a_cni_checksum_that_is_not_sha512(tmp_path, checksum):
    done = provision(tmp_path, cni_sha512=checksum or " ")
    assert done.returncode != 0 and "CNI_PLUGINS_SHA512" in done.stderr
    assert not (tmp_path / "root").exists()


# --- the boot check (verify-nodeboot.service) ------------------------------------


def verify(store: Path, link: Path):
    return subprocess.run(
        [str(BOOT_CHECK / "verify-nodeboot"), str(store), str(link)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def baked(tmp_path) -> Path:
    """A root as the bake leaves it (provision.sh into a DESTDIR)."""
    done = provision(tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "root"


def test_boot_check_passes_on_the_baked_binary(baked):
    done = verify(baked / "opt/nodeboot", baked / "opt/bin/nodeboot")
    assert done.returncode == 0, done.stderr
    assert "is the baked nodeboot" in done.stdout


def test_boot_check_refuses_a_changed_binary(baked):
    binary = baked / "opt/nodeboot/nodeboot"
    binary.write_text(binary.read_text() + "# changed\n")
    done = verify(baked / "opt/nodeboot", baked / "opt/bin/nodeboot")
    assert done.returncode == 1
    assert "is not the binary this image was baked with" in done.stderr
    assert "nodeboot.io/nodeboot-sha256" in done.stderr


def test_boot_check_refuses_a_link_to_another_binary(baked):
    other = write_script(baked / "opt/bin/other", "#!/bin/sh\n")
    link = baked / "opt/bin/nodeboot"
    link.unlink()
    link.symlink_to(other.name)
    done = verify(baked / "opt/nodeboot", link)
    assert done.returncode == 1 and "not to the baked" in done.stderr


@pytest.mark.parametrize("record", ["", "not a checksum  nodeboot\n", None])
def test_boot_check_refuses_without_a_record(baked, record):
    path = baked / "opt/nodeboot/nodeboot.sha256"
    if record is None:
        path.unlink()
    else:
        path.write_text(record)
    done = verify(baked / "opt/nodeboot", baked / "opt/bin/nodeboot")
    assert done.returncode == 1 and "nodeboot.sha256" in done.stderr


def test_boot_check_accepts_the_binary_ignition_wrote(baked):
    """nodeboot_source = "s3": Ignition replaced the link with a file it
    checked against nodeboot_sha512 (overwrite: true deletes the link)."""
    link = baked / "opt/bin/nodeboot"
    link.unlink()
    write_script(link, "#!/bin/sh\necho nodeboot from s3\n")
    done = verify(baked / "opt/nodeboot", link)
    assert done.returncode == 0, done.stderr
    assert "written by Ignition" in done.stdout
    link.unlink()
    done = verify(baked / "opt/nodeboot", link)
    assert done.returncode == 1 and "no nodeboot at" in done.stderr


def test_boot_check_unit_runs_the_baked_paths(packer):
    paths = packer_locals(packer)
    unit = (BOOT_CHECK / "verify-nodeboot.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    assert exec_start == [
        f"{paths['nodeboot_store']}/verify-nodeboot",
        paths["nodeboot_store"],
        paths["nodeboot_path"],
    ]
    assert re.search(r"^Type=oneshot$", unit, re.M) and re.search(
        r"^RemainAfterExit=yes$", unit, re.M
    )
    assert paths["boot_check_unit"] == UNIT and paths["boot_check_dropin"] == DROPIN


def rendered_unit_names() -> set[str]:
    """Every unit nodeboot renders: its templates, and one unit per boot stage."""
    names = {
        p.name for p in (REPO / "units").glob("*.service") if p.name != "nodeboot-stage.service"
    }
    stages_rs = next(
        p
        for p in (REPO / "src").rglob("units.rs")
        if 'format!("nodeboot-{stage}.service")' in p.read_text()
    )
    assert stages_rs, "the stage units are no longer named nodeboot-<stage>.service"
    return names | {
        "nodeboot-discover.service",
        "nodeboot-attach.service",
        "nodeboot-secrets.service",
    }


def test_every_rendered_unit_waits_for_the_boot_check(tmp_path, baked):
    """Real systemd (systemd-analyze verify --root on the baked tree) reads
    the drop-in for every nodeboot-*.service; the other rendered units
    require one of them, so a failed check starts none of them."""
    systemd_analyze = tool("systemd-analyze")
    system = baked / "etc/systemd/system"
    for name in ("nodeboot-attach.service", "nodeboot-manifests.service", "kubelet.service"):
        (system / name).write_text(
            "[Unit]\nDescription=stand-in\n[Service]\nType=oneshot\nExecStart=/bin/true\n"
        )
    dumps = {}
    for name in ("nodeboot-attach.service", "nodeboot-manifests.service", "kubelet.service"):
        done = subprocess.run(
            [systemd_analyze, "verify", f"--root={baked}", name],
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        dumps[name] = done.stdout + done.stderr
    for name in ("nodeboot-attach.service", "nodeboot-manifests.service"):
        assert "nodeboot-.service.d/10-verify-nodeboot.conf" in dumps[name], dumps[name]
        assert re.search(r"Requires: verify-nodeboot\.service", dumps[name]), dumps[name]
        assert re.search(r"After: verify-nodeboot\.service", dumps[name]), dumps[name]
    assert "10-verify-nodeboot.conf" not in dumps["kubelet.service"]
    for name in rendered_unit_names():
        if name.startswith("nodeboot-"):
            continue
        text = (REPO / "units" / name).read_text()
        requires = re.search(r"^Requires=(.*)$", text, re.M)
        assert requires and any(u.startswith("nodeboot-") for u in requires.group(1).split()), (
            f"{name} does not require a nodeboot unit: it would start without the boot check"
        )


# --- shell scripts -------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shell_script_parses(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_shell_scripts_pass_shellcheck():
    done = subprocess.run(
        [tool("shellcheck"), "--shell=bash", *map(str, SHELL_SCRIPTS)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_scripts_are_executable():
    for script in (FETCH, ENTRYPOINT, PROVISION):
        assert os.access(script, os.X_OK), script


# --- entrypoint.sh on the host: the docker run it makes ------------------------


@pytest.fixture
def host(tmp_path):
    """A fake docker that records its arguments, and an empty home."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.args"
    write_script(bin_dir / "docker", f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    home = tmp_path / "home"
    home.mkdir()
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and not k.startswith("NODEBOOT_")
    }
    base.update(PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(home), USER="Jest.Doe")

    def run(*args: str, **env: str):
        done = subprocess.run(
            [str(ENTRYPOINT), *args],
            env={**base, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        recorded = log.read_text().splitlines() if log.exists() else None
        return done, recorded

    run.home = home
    return run


def option_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == option]


def test_entrypoint_passes_aws_variables_by_name_only(host):
    done, args = host(
        "-e",
        "prod",
        "nodeboot",
        "validate",
        AWS_ACCESS_KEY_ID="AKIAEXAMPLEKEY",
        AWS_SECRET_ACCESS_KEY="s3cr3t-value",
        AWS_SESSION_TOKEN="t0ken-value",
        AWS_REGION="eu-west-1",
    )
    assert done.returncode == 0, done.stderr
    image = f"nodeboot/build:{cargo_version()}"
    assert args[:3] == ["run", "--rm", "-i"]
    assert args[args.index(image) :] == [image, "-e", "prod", "--", "nodeboot", "validate"]
    env = option_values(args[: args.index(image)], "-e")
    assert env == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"]
    assert not any(secret in " ".join(args) for secret in ("AKIAEXAMPLEKEY", "s3cr3t", "t0ken"))
    assert not any(".aws" in a for a in args)
    assert option_values(args, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    assert option_values(args, "-v") == [f"{REPO}:/workspace"]


def test_entrypoint_mounts_aws_files_with_the_environment_as_profile(host):
    (host.home / ".aws").mkdir()
    (host.home / ".aws" / "credentials").write_text("[prod]\n")
    done, args = host("-e", "prod")
    assert done.returncode == 0, done.stderr
    assert option_values(args, "-v") == [
        f"{REPO}:/workspace",
        f"{host.home}/.aws:/home/nodeboot/.aws:ro",
    ]
    assert "AWS_PROFILE=prod" in option_values(args, "-e")
    assert "--play" not in args


def test_entrypoint_without_arguments_is_the_playground(host):
    done, args = host(NODEBOOT_IMAGE="nodeboot/build:test")
    assert done.returncode == 0, done.stderr
    assert args[args.index("nodeboot/build:test") :] == [
        "nodeboot/build:test",
        "-e",
        "play-jest-doe",
        "--play",
        "--",
    ]
    assert "no AWS credentials" in done.stderr


@pytest.mark.parametrize("name", ["../etc", "Prod", "ab", "prod-", "x" * 33])
def test_entrypoint_refuses_an_invalid_environment_name(host, name):
    done, args = host("-e", name)
    assert done.returncode == 2 and "invalid environment name" in done.stderr
    assert args is None, "docker was started"


# --- entrypoint.sh in the container ---------------------------------------------


@pytest.fixture
def container(tmp_path):
    """The container side: a workspace and a fake nodeboot that logs its
    arguments and writes the file `env new` would."""
    workspace = tmp_path / "workspace"
    (workspace / "environments").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "nodeboot.log"
    write_script(
        bin_dir / "nodeboot",
        f"""#!/bin/sh
echo "$*" >> {log}
if [ "$1 $2" = "env new" ]; then echo 'environment = "'$3'"' > "$5/$3.tfvars"; fi
""",
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and not k.startswith("NODEBOOT_")
    }
    base.update(
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        HOME=str(tmp_path),
        NODEBOOT_IN_CONTAINER="1",
        NODEBOOT_WORKSPACE=str(workspace),
    )
    show = ["sh", "-c", 'echo "$NODEBOOT_ENV $ENV_FILE $(pwd)"']

    def run(*args: str):
        done = subprocess.run(
            [str(ENTRYPOINT), *args, "--", *show],
            env=base,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        calls = log.read_text().splitlines() if log.exists() else []
        return done, calls

    run.workspace = workspace
    return run


def test_entrypoint_creates_a_missing_playground_once(container):
    done, calls = container("-e", "play-jest", "--play")
    assert done.returncode == 0, done.stderr
    assert calls == ["env new play-jest --dir environments"]
    assert (container.workspace / "environments" / "play-jest.tfvars").exists()
    ws = container.workspace
    assert done.stdout.strip() == f"play-jest environments/play-jest.tfvars {ws}"
    done, calls = container("-e", "play-jest", "--play")
    assert done.returncode == 0 and len(calls) == 1, "env new ran again"


def test_entrypoint_needs_an_existing_file_outside_the_playground(container):
    done, calls = container("-e", "prod")
    assert done.returncode == 2
    assert "no environment file environments/prod.tfvars" in done.stderr
    assert "nodeboot env new prod" in done.stderr
    assert calls == [] and done.stdout == ""
    (container.workspace / "environments" / "prod.tfvars").write_text('environment = "prod"\n')
    done, calls = container("-e", "prod")
    assert done.returncode == 0, done.stderr
    assert calls == [] and done.stdout.startswith("prod environments/prod.tfvars ")


# --- bashrc: the seed's aliases -------------------------------------------------


def helpers(tmp_path: Path, script: str, env_file: str | None = "environments/prod.tfvars"):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    write_script(bin_dir / "nodeboot", f'#!/bin/sh\necho "$*" >> {log}\n')
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    env.pop("ENV_FILE", None)
    if env_file:
        env["ENV_FILE"] = env_file
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", f". {BASHRC}\n{script}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, (log.read_text().splitlines() if log.exists() else [])


def test_bashrc_maps_the_seed_aliases_to_nodeboot(tmp_path):
    done, calls = helpers(
        tmp_path,
        "\n".join(
            [
                "aws-instances",
                "aws-elbs",
                "fetch-secrets common/ca.pem",
                "upload-secrets --force",
                "run",
                "terraform.sh output",
                "prereqs",
                "ssh-config",
                "validate",
            ]
        ),
    )
    assert done.returncode == 0, done.stderr
    env = "--env environments/prod.tfvars"
    assert calls == [
        f"aws instances {env}",
        f"aws elbs {env}",
        f"secrets fetch {env} common/ca.pem",
        f"secrets upload {env} --force",
        f"up {env}",
        f"outputs {env}",
        f"prereqs {env}",
        f"ssh-config {env}",
        f"validate {env}",
    ]


def test_bashrc_terraform_sh_keeps_only_output(tmp_path):
    done, calls = helpers(tmp_path, "terraform.sh apply")
    assert done.returncode == 2 and calls == []


def test_bashrc_helpers_need_an_environment(tmp_path):
    done, calls = helpers(tmp_path, "run", env_file=None)
    assert done.returncode == 2 and "ENV_FILE is not set" in done.stderr
    assert calls == []


def test_provision_sets_the_kernel_up_for_the_pod_network(tmp_path, packer):
    """br_netfilter (bridged pod traffic through kube-proxy's iptables rules)
    and forwarding, at every boot: what kubeadm's preflight asks of a node."""
    done = provision(tmp_path)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "root"

    def settings(path: str) -> list[str]:
        text = (root / path.lstrip("/")).read_text()
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    assert set(settings(KERNEL_MODULES)) == {"br_netfilter", "overlay"}
    sysctls = dict(line.replace(" ", "").split("=") for line in settings(KERNEL_SYSCTL))
    assert sysctls == {
        "net.bridge.bridge-nf-call-iptables": "1",
        "net.bridge.bridge-nf-call-ip6tables": "1",
        "net.ipv4.ip_forward": "1",
    }
    local = packer_locals(packer)
    assert (local["kernel_modules_conf"], local["kernel_sysctl_conf"]) == (
        KERNEL_MODULES,
        KERNEL_SYSCTL,
    )
