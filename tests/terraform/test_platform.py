"""The platform as an operator runs it for years (issue 14), on real plans.

Two kinds of plan of the root module with environments/example.tfvars, both
through `terraform test -json -verbose`, which prints each run's plan as
JSON:

* mocked: `mock_provider "aws"` (no provider configuration at all), as in
  test_terraform.py;
* real schema: the AWS provider from the local mirror, configured with
  dummy credentials and every start-up call skipped, and `override_data`
  for the data sources that would ask AWS (the AMI, the KMS key, the
  account, the public zone). Every resource is then validated by the real
  provider, and `aws_iam_policy_document` renders the real policy JSON.

The policies are read from the real plan (the node roles' inline policies)
and from a plan of modules/iam alone (the secrets bucket's policy, which
needs the S3 endpoint's id), then evaluated against the requests a node's
boot makes (the ones tests/iam.rs drives against the emulator) and against
requests that must be refused.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
import shutil
from pathlib import Path

import pytest
from test_terraform import (  # noqa: F401  (initialized_copy is a fixture)
    EXAMPLE,
    MOCK_PROVIDER,
    MODULES,
    NODEBOOT_ACTIONS,
    REPO,
    TF,
    blocks,
    diagnostics_text,
    initialized_copy,
    parse,
    run_statuses,
    terraform,
    unquote,
)

ACCOUNT = "123456789012"
REGION = "eu-west-1"
KMS_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"
ZONE_ID = "Z0123456789ABCDEFGHIJ"
ENDPOINT = "vpce-0123456789abcdef0"
BUCKET = "example-nodeboot-secrets-eu-west-1"
NODEBOOT_SHA256 = "0123456789abcdef" * 4  # the AMI's nodeboot.io/nodeboot-sha256

REAL_PROVIDER = f"""
provider "aws" {{
  region                      = "{REGION}"
  access_key                  = "offline"
  secret_key                  = "offline"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}}

override_data {{
  target = data.aws_ami.flatcar
  values = {{
    id   = "ami-0123456789abcdef0"
    tags = {{ "nodeboot.io/nodeboot-sha256" = "{NODEBOOT_SHA256}" }}
  }}
}}

override_data {{
  target = data.aws_kms_key.master
  values = {{ arn = "{KMS_ARN}" }}
}}

override_data {{
  target = module.network.data.aws_caller_identity.current
  values = {{ account_id = "{ACCOUNT}" }}
}}

override_data {{
  target = module.dns.data.aws_route53_zone.public
  values = {{ zone_id = "{ZONE_ID}", name = "example.com", name_servers = ["ns-1.example.net"] }}
}}

override_resource {{
  target          = module.network.aws_subnet.this["secure-0"]
  override_during = plan
  values          = {{ id = "subnet-secure0" }}
}}

override_resource {{
  target          = module.network.aws_subnet.this["secure-1"]
  override_during = plan
  values          = {{ id = "subnet-secure1" }}
}}

override_resource {{
  target          = module.network.aws_subnet.this["secure-2"]
  override_during = plan
  values          = {{ id = "subnet-secure2" }}
}}

override_resource {{
  target          = module.etcd.aws_security_group.etcd
  override_during = plan
  values          = {{ id = "sg-etcd" }}
}}

override_resource {{
  target          = module.compute.aws_security_group.compute
  override_during = plan
  values          = {{ id = "sg-compute" }}
}}

override_resource {{
  target          = module.lb.aws_security_group.kubeapi["public"]
  override_during = plan
  values          = {{ id = "sg-kubeapi-public" }}
}}

override_resource {{
  target          = module.lb.aws_security_group.kubeapi["internal"]
  override_during = plan
  values          = {{ id = "sg-kubeapi-internal" }}
}}

override_resource {{
  target          = module.bastion.aws_security_group.bastion
  override_during = plan
  values          = {{ id = "sg-bastion" }}
}}

override_resource {{
  target          = module.network.aws_vpc.this
  override_during = plan
  values          = {{ id = "vpc-0example" }}
}}

override_resource {{
  target          = module.network.aws_vpc_endpoint.s3
  override_during = plan
  values          = {{ id = "{ENDPOINT}" }}
}}

override_resource {{
  target          = module.network.aws_eip.nat[0]
  override_during = plan
  values          = {{ public_ip = "198.51.100.10" }}
}}

override_resource {{
  target          = module.network.aws_eip.nat[1]
  override_during = plan
  values          = {{ public_ip = "198.51.100.11" }}
}}

override_resource {{
  target          = module.network.aws_eip.nat[2]
  override_during = plan
  values          = {{ public_ip = "198.51.100.12" }}
}}

override_data {{
  target = module.dns.data.aws_route53_zone.parent
  values = {{ zone_id = "ZPARENT0123456789", name = "example.com", name_servers = ["ns-1.example.net"] }}
}}
"""


def plans(copy: Path, name: str, provider: str, runs: str) -> tuple[dict, dict, str]:
    """Runs `terraform test -verbose` on one test file; returns the run
    statuses, each run's plan (JSON) and a readable summary."""
    directory = f"tests_{name}"
    shutil.rmtree(copy / directory, ignore_errors=True)
    (copy / directory).mkdir()
    (copy / directory / f"{name}.tftest.hcl").write_text(provider + runs)
    result = terraform(
        "test",
        "-json",
        "-verbose",
        f"-test-directory={directory}",
        f"-var-file={EXAMPLE}",
        cwd=copy,
    )
    messages = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_run = {m["@testrun"]: m["test_plan"] for m in messages if m.get("type") == "test_plan"}
    text = "\n".join(
        [m["@message"] for m in messages if m.get("type") not in ("diagnostic", "test_plan")]
        + [diagnostics_text([m["diagnostic"]]) for m in messages if "diagnostic" in m]
    )
    problems = [m for m in messages if m.get("@level") in ("warn", "error")]
    assert not problems, text + result.stderr
    return run_statuses(messages), by_run, text + result.stderr


def changes(plan: dict) -> dict[str, dict]:
    """address -> planned `after` values of every resource."""
    return {
        c["address"]: c["change"]["after"]
        for c in plan["resource_changes"]
        if c["mode"] == "managed"
    }


def of_type(plan: dict, kind: str) -> dict[str, dict]:
    return {
        c["address"]: c["change"]["after"]
        for c in plan["resource_changes"]
        if c["type"] == kind and c["mode"] == "managed"
    }


def after_unknown(plan: dict, address: str) -> dict:
    return next(c["change"]["after_unknown"] for c in plan["resource_changes"] if c["address"] == address)


@pytest.fixture(scope="module")
def real_plans(initialized_copy):  # noqa: F811
    """The real-schema plans: the example, 5 members on 3 zones, one member."""
    statuses, by_run, text = plans(
        initialized_copy(),
        "real_schema",
        REAL_PROVIDER,
        """
run "example" {
  command = plan
}

run "five_members" {
  command = plan

  variables {
    etcd_count = 5
  }
}

run "one_member" {
  command = plan

  variables {
    etcd_count = 1
  }
}

run "created_zone" {
  command = plan

  variables {
    public_zone_id   = "create"
    public_zone_name = "example.example.com"
  }
}
""",
    )
    assert set(statuses.values()) == {"pass"}, text
    return by_run


# --- 0. what a plan creates ----------------------------------------------------------

# How the READMEs quote the counts: "141 resources for the example, 149 with 5 members".
QUOTED_COUNTS = re.compile(r"(\d+) (?:planned )?resources\s+for\s+the\s+example,\s+(\d+)\s+with\s+5\s+members")


def test_the_readmes_quote_the_planned_resource_counts(real_plans):
    """The number of resources each plan creates, and the figures README.md
    and terraform/README.md give for them."""
    counts = {
        run: len([c for c in plan["resource_changes"] if c["mode"] == "managed"])
        for run, plan in real_plans.items()
    }
    for run, plan in real_plans.items():
        actions = {tuple(c["change"]["actions"]) for c in plan["resource_changes"] if c["mode"] == "managed"}
        assert actions == {("create",)}, run
    # A member is a volume, an interface and its address reservation, and a
    # record etcd-<i>; five members on three zones fill no new group.
    assert counts["five_members"] - counts["example"] == 2 * 4
    quoted = {
        readme: [(int(a), int(b)) for a, b in QUOTED_COUNTS.findall(" ".join((REPO / readme).read_text().split()))]
        for readme in ("README.md", "terraform/README.md")
    }
    for readme, figures in quoted.items():
        assert figures, f"{readme} quotes no planned resource count"
        for figure in figures:
            assert figure == (counts["example"], counts["five_members"]), (
                f"{readme} says {figure[0]} resources for the example and {figure[1]} with 5 members; "
                f"the plans create {counts['example']} and {counts['five_members']}"
            )


# --- 1. one etcd group per zone ---------------------------------------------------


def etcd_groups(plan: dict) -> dict[str, dict]:
    return {
        a.split('"')[1]: v
        for a, v in of_type(plan, "aws_autoscaling_group").items()
        if a.startswith("module.etcd.")
    }


def test_one_etcd_group_per_zone_sized_to_its_members(real_plans):
    """Member i lives in zone i % 3: 5 members are 2, 2 and 1 per zone."""
    sizes = {
        run: {z: (g["min_size"], g["max_size"], g["desired_capacity"]) for z, g in etcd_groups(p).items()}
        for run, p in real_plans.items()
        if run != "created_zone"
    }
    assert sizes == {
        "example": {z: (1, 1, 1) for z in ("eu-west-1a", "eu-west-1b", "eu-west-1c")},
        "five_members": {
            "eu-west-1a": (2, 2, 2),
            "eu-west-1b": (2, 2, 2),
            "eu-west-1c": (1, 1, 1),
        },
        # No group where no member lives: a node there would find nothing to claim.
        "one_member": {"eu-west-1a": (1, 1, 1)},
    }
    for zone, group in etcd_groups(real_plans["five_members"]).items():
        assert group["name"] == f"example-etcd-{zone}-asg"
        assert group["suspended_processes"] == ["AZRebalance"], zone


def test_each_etcd_group_stays_in_its_zones_secure_subnet(real_plans):
    """The secure subnets' ids are given at plan time (override_resource)."""
    groups = etcd_groups(real_plans["five_members"])
    assert {z: g["vpc_zone_identifier"] for z, g in groups.items()} == {
        "eu-west-1a": ["subnet-secure0"],
        "eu-west-1b": ["subnet-secure1"],
        "eu-west-1c": ["subnet-secure2"],
    }


# --- 2. member data protected ------------------------------------------------------


def etcd_resources() -> dict:
    return {
        (unquote(kind), unquote(name)): body
        for path in sorted((MODULES / "etcd").glob("*.tf"))
        for kind, named in blocks(parse(path), "resource")
        for name, body in named.items()
        if not name.startswith("__")
    }


def test_member_volumes_cannot_be_destroyed_by_a_plan():
    volume = etcd_resources()[("aws_ebs_volume", "member")]
    lifecycle = volume["lifecycle"][0]
    assert lifecycle["prevent_destroy"] is True
    assert volume["final_snapshot"] is True


def test_member_interfaces_and_addresses_cannot_be_destroyed_by_a_plan():
    """Everything a member is made of stops a plan that would delete it:
    its volume (above), its interface and its address reservation."""
    resources = etcd_resources()
    members = {kind for kind, name in resources if name == "member"}
    assert members == {"aws_ebs_volume", "aws_network_interface", "aws_ec2_subnet_cidr_reservation"}
    for kind in sorted(members):
        lifecycle = resources[(kind, "member")].get("lifecycle", [{}])[0]
        assert lifecycle.get("prevent_destroy") is True, f"{kind}.member has no prevent_destroy"


def test_a_plan_that_deletes_a_member_volume_stops(initialized_copy):  # noqa: F811
    """Lowering etcd_count before the members are removed from etcd would
    delete their data: prevent_destroy stops the plan. (A changed zone list
    would replace volumes; a mocked provider cannot say "replace", so that
    case is `nodeboot validate`'s, tests/validate.rs.) The test's own
    teardown cannot destroy the applied members either, which is the point."""
    statuses, _, text = plans_expecting_failure(
        initialized_copy(),
        "fewer_members",
        """
run "apply_example" {
  command = apply
}

run "one_member_left" {
  command = plan

  variables {
    etcd_count = 1
  }
}
""",
    )
    assert statuses == {"apply_example": "pass", "one_member_left": "error"}, text
    for member in (1, 2):
        for kind in ("aws_ebs_volume", "aws_network_interface", "aws_ec2_subnet_cidr_reservation"):
            assert f"Resource module.etcd.{kind}.member[{member}] has lifecycle.prevent_destroy" in text, text


# A mocked apply needs values the provider's validation accepts.
MOCK_APPLY = MOCK_PROVIDER.rstrip().rstrip("}") + """
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
  }
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/x/0123456789abcdef" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/x/0123456789abcdef" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_iam_policy" {
    defaults = { arn = "arn:aws:iam::123456789012:policy/mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mock" }
  }
}
"""


def plans_expecting_failure(copy: Path, name: str, runs: str) -> tuple[dict, dict, str]:
    directory = f"tests_{name}"
    shutil.rmtree(copy / directory, ignore_errors=True)
    (copy / directory).mkdir()
    (copy / directory / f"{name}.tftest.hcl").write_text(MOCK_APPLY + runs)
    result = terraform(
        "test", "-json", f"-test-directory={directory}", f"-var-file={EXAMPLE}", cwd=copy
    )
    messages = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    text = "\n".join(
        [m["@message"] for m in messages if m.get("type") != "diagnostic"]
        + [diagnostics_text([m["diagnostic"]]) for m in messages if "diagnostic" in m]
    )
    return run_statuses(messages), {}, text + result.stderr


def nodeboot_binary() -> Path:
    """The debug build the other test suites use (`cargo build` first)."""
    import os  # noqa: PLC0415

    if os.environ.get("NODEBOOT_BIN"):
        return Path(os.environ["NODEBOOT_BIN"])
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates = [Path(os.environ["CARGO_TARGET_DIR"]) / "debug/nodeboot"]
    else:  # as the lab: the newer of the shared and the local build
        shared = Path("/var/cache/nodeboot/target/debug/nodeboot")
        candidates = [shared, REPO / "target/debug/nodeboot"]
    built = [c for c in candidates if c.exists()]
    if not built:
        pytest.fail(f"{candidates[0]} does not exist: run `cargo build` (or set NODEBOOT_BIN)")
    return max(built, key=lambda c: c.stat().st_mtime)


def test_down_lets_destroy_delete_the_members(initialized_copy, tmp_path):  # noqa: F811
    """Issue 23 item 7: `nodeboot down`'s override, in a copy of the tree,
    lifts prevent_destroy where Terraform merges it: the same mocked apply as
    the test above, then the test's own teardown (a destroy) deletes every
    resource, the members' volumes, ENIs and reservations included (the
    test above shows the same teardown stopping without it)."""
    import subprocess  # noqa: PLC0415

    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run(
        [nodeboot_binary(), "down", "--env", EXAMPLE, "--confirm", "example", "--dry-run"]
        + ["--terraform-dir", TF],
        cwd=work, capture_output=True, text=True, check=False, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    override = work / "build/example/down/terraform/modules/etcd/nodeboot_down_override.tf"
    # Where the tree reads the user data from: its ../build, as for the
    # initialized copy.
    copy = tmp_path / "terraform"
    shutil.copytree(initialized_copy(), copy, symlinks=True)
    (tmp_path / "build").symlink_to(initialized_copy().parent / "build")
    shutil.copy(override, copy / "modules/etcd" / override.name)
    apply = 'run "apply_example" {\n  command = apply\n}\n'
    statuses, _, text = plans_expecting_failure(copy, "down", apply)
    assert statuses == {"apply_example": "pass"}, text
    assert "left some resources" not in text and "prevent_destroy" not in text, text
    assert "Failure!" not in text, text
    # Without it, the same teardown stops at the members.
    (copy / "modules/etcd" / override.name).unlink()
    _, _, text = plans_expecting_failure(copy, "down", apply)
    assert "left some resources" in text, text
    for kind in ("aws_ebs_volume", "aws_network_interface"):
        refused = rf"Resource module\.etcd\.{kind}\.member\[\d\] has lifecycle\.prevent_destroy"
        assert re.search(refused, text), text


def test_member_volumes_get_daily_snapshots(real_plans):
    plan = real_plans["example"]
    volumes = of_type(plan, "aws_ebs_volume")
    policies = of_type(plan, "aws_dlm_lifecycle_policy")
    assert len(policies) == 1
    details = next(iter(policies.values()))["policy_details"][0]
    assert details["resource_types"] == ["VOLUME"]
    target = details["target_tags"]
    # DLM takes a volume with ANY of the target tags: every member volume has
    # all of them, and nothing else the environment creates has one.
    assert len(volumes) == 3
    for address, volume in volumes.items():
        assert target.items() <= volume["tags"].items(), address
    others = {a: v for a, v in changes(plan).items() if a not in volumes}
    for address, values in others.items():
        tags = (values or {}).get("tags") or {}
        assert not (target.items() & tags.items()), f"{address} would be snapshotted too"
    for template in of_type(plan, "aws_launch_template").values():
        for spec in template["tag_specifications"]:
            assert not (target.items() & spec["tags"].items()), "root volumes would be snapshotted"
    schedule = details["schedule"][0]
    assert schedule["create_rule"][0]["interval"] == 24
    assert schedule["retain_rule"][0]["count"] >= 7


# --- 3. member addresses reserved, groups after the members ---------------------------


def test_every_member_address_is_reserved_explicitly(real_plans):
    plan = real_plans["five_members"]
    reservations = of_type(plan, "aws_ec2_subnet_cidr_reservation")
    ips = sorted(i["private_ips"][0] for i in of_type(plan, "aws_network_interface").values())
    assert sorted(r["cidr_block"] for r in reservations.values()) == sorted(f"{ip}/32" for ip in ips)
    assert {r["reservation_type"] for r in reservations.values()} == {"explicit"}
    assert ips == ["10.80.10.10", "10.80.10.11", "10.80.11.10", "10.80.11.11", "10.80.12.10"]


def test_etcd_groups_wait_for_the_members():
    """The node-group call (its groups) depends on the members' interfaces,
    volumes and reservations; the interfaces on the reservations."""
    doc = parse(MODULES / "etcd" / "main.tf")
    nodes = dict(blocks(doc, "module"))["nodes"]
    assert set(nodes["depends_on"]) == {
        "${aws_network_interface.member}",
        "${aws_ebs_volume.member}",
        "${aws_ec2_subnet_cidr_reservation.member}",
    }
    eni = etcd_resources()[("aws_network_interface", "member")]
    assert eni["depends_on"] == ["${aws_ec2_subnet_cidr_reservation.member}"]


# --- 4. rollouts ------------------------------------------------------------------------


def test_compute_group_rolls_with_the_environments_min_healthy(real_plans):
    groups = of_type(real_plans["example"], "aws_autoscaling_group")
    compute = groups['module.compute.module.nodes.aws_autoscaling_group.this["compute"]']
    refresh = compute["instance_refresh"]
    assert len(refresh) == 1 and refresh[0]["strategy"] == "Rolling"
    example = EXAMPLE.read_text()
    percentage = int(re.search(r"^compute_min_healthy_percentage\s*=\s*(\d+)", example, re.M).group(1))
    assert refresh[0]["preferences"][0]["min_healthy_percentage"] == percentage
    # The template's latest version (known after apply), so a new one changes
    # the group and starts the refresh.
    unknown = after_unknown(real_plans["example"], 'module.compute.module.nodes.aws_autoscaling_group.this["compute"]')
    assert unknown["launch_template"][0]["version"] is True


COMPUTE_GROUP = 'module.compute.module.nodes.aws_autoscaling_group.this["compute"]'


@pytest.fixture(scope="module")
def refresh_plans(initialized_copy):  # noqa: F811
    """The workers' group for other shares kept in service and group sizes."""
    statuses, by_run, text = plans(
        initialized_copy(),
        "refresh",
        REAL_PROVIDER,
        """
run "one_worker_all_kept" {
  command = plan

  variables {
    compute_count                  = 1
    compute_min_healthy_percentage = 100
  }
}

run "ten_workers_half_kept" {
  command = plan

  variables {
    compute_count                  = 10
    compute_min_healthy_percentage = 50
  }
}

run "none_kept" {
  command = plan

  variables {
    compute_min_healthy_percentage = 0
  }
}
""",
    )
    assert set(statuses.values()) == {"pass"}, text
    return by_run


def launched_ahead(group: dict, preferences: dict) -> int:
    """How many instances a refresh may run beyond the desired capacity:
    AWS's max healthy percentage of it, rounded down, within max_size."""
    desired = group["desired_capacity"]
    allowed = desired * preferences["max_healthy_percentage"] // 100
    return min(allowed, group["max_size"]) - desired


def test_compute_refresh_launches_before_it_terminates(real_plans, refresh_plans):
    """Issue 23 item 8: max_size above the desired capacity and a max healthy
    percentage over 100, so the refresh launches a replacement before it
    terminates; compute_min_healthy_percentage of the workers stays in
    service (AWS: max - min <= 100, max in 100..200). Health-check
    replacements follow the same policy."""
    cases = {
        "example": (real_plans["example"], 3, 90),
        "one_worker_all_kept": (refresh_plans["one_worker_all_kept"], 1, 100),
        "ten_workers_half_kept": (refresh_plans["ten_workers_half_kept"], 10, 50),
    }
    for run, (plan, count, kept) in cases.items():
        group = of_type(plan, "aws_autoscaling_group")[COMPUTE_GROUP]
        (refresh,) = group["instance_refresh"]
        (preferences,) = refresh["preferences"]
        assert group["min_size"] == group["desired_capacity"] == count, run
        assert preferences["min_healthy_percentage"] == kept, run
        most = min(200, kept + 100)
        assert 100 < preferences["max_healthy_percentage"] <= most, (run, preferences)
        assert launched_ahead(group, preferences) >= 1, (run, group["max_size"], preferences)
        # Never more ahead than the share allowed out of service (or one).
        assert group["max_size"] - count == max(1, -(-count * (100 - kept) // 100)), run
        (policy,) = group["instance_maintenance_policy"]
        assert (policy["min_healthy_percentage"], policy["max_healthy_percentage"]) == (
            kept,
            preferences["max_healthy_percentage"],
        ), run
    # The example spelled out: one worker launched ahead, three kept.
    group = of_type(real_plans["example"], "aws_autoscaling_group")[COMPUTE_GROUP]
    assert (group["min_size"], group["max_size"], group["desired_capacity"]) == (3, 4, 3)
    # Nothing kept: AWS allows no more than min + 100, so it replaces in place.
    group = of_type(refresh_plans["none_kept"], "aws_autoscaling_group")[COMPUTE_GROUP]
    (preferences,) = group["instance_refresh"][0]["preferences"]
    assert preferences["min_healthy_percentage"] == 0
    assert preferences["max_healthy_percentage"] == 100


def test_compute_refresh_rolls_back_when_it_fails(real_plans):
    group = of_type(real_plans["example"], "aws_autoscaling_group")[COMPUTE_GROUP]
    (preferences,) = group["instance_refresh"][0]["preferences"]
    assert preferences["auto_rollback"] is True
    # A rollback needs a version to go back to: never "$Latest".
    unknown = after_unknown(real_plans["example"], COMPUTE_GROUP)
    assert unknown["launch_template"][0]["version"] is True


def test_workers_are_healthy_when_their_kube_proxy_is(real_plans):
    """The workers' health is the load balancer's: the internal NLB checks
    kube-proxy's /healthz on 10256 (kubeadm's "Self, Load balancers" port),
    which answers 200 once kube-proxy on that node runs with its credentials
    and has programmed the Services. Until then a new worker is not healthy,
    the refresh does not move on, and after the grace period it is replaced."""
    plan = real_plans["example"]
    group = of_type(plan, "aws_autoscaling_group")[COMPUTE_GROUP]
    assert group["health_check_type"] == "ELB"
    assert group["health_check_grace_period"] >= 300
    assert after_unknown(plan, COMPUTE_GROUP)["target_group_arns"] is True
    groups = of_type(plan, "aws_lb_target_group")
    health = groups['module.lb.aws_lb_target_group.workers']
    assert (health["protocol"], health["port"], health["target_type"]) == ("TCP", 10256, "instance")
    (check,) = health["health_check"]
    assert (check["protocol"], check["path"], check["port"], check["matcher"]) == (
        "HTTP",
        "/healthz",
        "traffic-port",
        "200",
    )
    listeners = of_type(plan, "aws_lb_listener")
    workers = listeners['module.lb.aws_lb_listener.workers']
    assert (workers["protocol"], workers["port"]) == ("TCP", 10256)
    # The etcd groups keep EC2 health: a control plane node is never replaced
    # because its API server or kube-proxy does not answer.
    for zone, etcd in etcd_groups(plan).items():
        assert etcd["health_check_type"] == "EC2", zone
    # The compute module is given the workers' target group, not the API's.
    compute_call = dict(blocks(parse(TF / "main.tf"), "module"))["compute"]
    assert compute_call["health_target_group_arn"] == "${module.lb.worker_health_target_group_arn}"


def test_an_etcd_node_that_powers_off_is_terminated(real_plans):
    """Issue 23 item 2, Terraform's half: an etcd node that gives up may
    power itself off instead of marking itself Unhealthy (which IAM cannot
    limit to its own instance); the group then replaces it. Workers keep
    EC2's default (a template change would roll them for nothing)."""
    templates = of_type(real_plans["example"], "aws_launch_template")
    etcd = templates["module.etcd.module.nodes.aws_launch_template.this"]
    compute = templates["module.compute.module.nodes.aws_launch_template.this"]
    assert etcd["instance_initiated_shutdown_behavior"] == "terminate"
    assert compute["instance_initiated_shutdown_behavior"] in (None, "stop")


def test_etcd_groups_are_never_rolled_by_terraform(real_plans):
    for zone, group in etcd_groups(real_plans["example"]).items():
        assert group["instance_refresh"] == [], zone
        # Terraform's new template version never changes the group.
        assert group["launch_template"][0]["version"] == "$Latest", zone


# --- 5. network rules ------------------------------------------------------------------


def sg_rules(plan: dict) -> list[dict]:
    rules = []
    for kind in ("aws_vpc_security_group_ingress_rule", "aws_vpc_security_group_egress_rule"):
        for address, rule in of_type(plan, kind).items():
            rules.append({"address": address, "kind": kind, **rule})
    return rules


def test_no_rule_admits_a_subnet_where_a_group_is_meant(real_plans):
    """Inside the VPC, sources and destinations are security groups; CIDRs
    only for the internet (access lists, HTTPS out) and the VPC egress."""
    plan = real_plans["example"]
    assert of_type(plan, "aws_security_group_rule") == {}
    for group in of_type(plan, "aws_security_group").values():
        assert group.get("ingress") in (None, []), "inline rules"
    example = EXAMPLE.read_text()
    subnets = set(re.findall(r'"(10\.80\.\d+\.0/24)"', example))
    assert subnets
    for rule in sg_rules(plan):
        assert rule.get("cidr_ipv4") not in subnets, rule["address"]


# Every flow a cluster of this platform needs, written from the documents,
# not from terraform/: kubeadm's "Ports and Protocols"
# (kubernetes.io/docs/reference/networking/ports-and-protocols), Flannel's
# VXLAN backend, etcd's two ports, and this platform's load balancers,
# bastion and ways out. The control plane is the etcd group (kube-apiserver,
# the controller manager and the scheduler run on the members).
# (what, protocol, first port, last port, sources, destinations); a source or
# destination is a security group of the plan by name, or a CIDR.
SECURITY_GROUPS = {
    "etcd": "sg-etcd",
    "compute": "sg-compute",
    "kubeapi_public": "sg-kubeapi-public",
    "kubeapi_internal": "sg-kubeapi-internal",
    "bastion": "sg-bastion",
}
NODES = ("etcd", "compute")
KUBEAPI_CLIENTS = ("203.0.113.0/24",)  # the example's kubeapi_access_list
OPERATORS = ("203.0.113.0/24",)  # the example's ssh_access_list
DOCUMENTED_FLOWS = [
    # kubeadm, control plane. 6443 "All": the load balancers' targets, and
    # every node's kube-proxy sends the `kubernetes` Service's traffic to any
    # API server's own address (control plane nodes included).
    ("kube-apiserver", "tcp", 6443, 6443, NODES + ("kubeapi_public", "kubeapi_internal"), ("etcd",)),
    # 2379-2380 "kube-apiserver, etcd": both run on the members only.
    ("etcd client API", "tcp", 2379, 2379, ("etcd",), ("etcd",)),
    ("etcd peers", "tcp", 2380, 2380, ("etcd",), ("etcd",)),
    # 10250 "Self, Control plane", on every node.
    ("kubelet API", "tcp", 10250, 10250, ("etcd",), NODES),
    # 10257 kube-controller-manager, 10259 kube-scheduler: "Self" (loopback),
    # no rule. kubeadm, workers: 10256 kube-proxy "Self, Load balancers" is
    # for the load balancers of Services, whose rules the cloud controller
    # manages, as it does their NodePorts.
    ("NodePort Services", "tcp", 30000, 32767, NODES, ("compute",)),
    # 10256 kube-proxy "Self, Load balancers": the internal load balancer
    # checks the workers' health there for their auto-scaling group.
    ("kube-proxy health", "tcp", 10256, 10256, ("kubeapi_internal",), ("compute",)),
    # Flannel's VXLAN backend (UDP 8472 on Linux) between every two nodes.
    ("Flannel VXLAN", "udp", 8472, 8472, NODES, NODES),
    # This platform: the API through its load balancers (443 -> 6443 above).
    ("kube-apiserver, public load balancer", "tcp", 443, 443, KUBEAPI_CLIENTS, ("kubeapi_public",)),
    ("kube-apiserver, internal load balancer", "tcp", 443, 443, NODES, ("kubeapi_internal",)),
    ("ssh to the bastion", "tcp", 22, 22, OPERATORS, ("bastion",)),
    ("ssh from the bastion", "tcp", 22, 22, ("bastion",), NODES),
    # AWS APIs, image registries and OS updates (S3 through the gateway
    # endpoint); the cloud controller, if one runs, needs nothing else.
    ("HTTPS out", "tcp", 443, 443, NODES + ("bastion",), ("0.0.0.0/0",)),
]

ALL_PORTS = frozenset(range(0, 65536))


def documented_ports() -> dict[tuple[str, str, str], set[int]]:
    """(source, destination, protocol) -> the ports the documents open."""
    out: dict[tuple[str, str, str], set[int]] = {}
    for _, protocol, first, last, sources, destinations in DOCUMENTED_FLOWS:
        for source in sources:
            for destination in destinations:
                out.setdefault((source, destination, protocol), set()).update(range(first, last + 1))
    return out


def open_ports(plan: dict) -> dict[str, dict[tuple[str, str, str], set[int]]]:
    """What the plan's rules open, seen from each side: "ingress" is what a
    destination group admits, "egress" what a source group lets out, both
    as (source, destination, protocol) -> ports. Groups by name; a CIDR rule
    to the VPC's CIDR reaches every group."""
    names = {v: k for k, v in SECURITY_GROUPS.items()}
    vpc = re.search(r'^vpc_cidr\s*=\s*"([^"]+)"', EXAMPLE.read_text(), re.M).group(1)
    out: dict[str, dict[tuple[str, str, str], set[int]]] = {"ingress": {}, "egress": {}}
    for rule in sg_rules(plan):
        direction = "ingress" if rule["kind"].endswith("ingress_rule") else "egress"
        own = names.get(rule["security_group_id"])
        assert own, f"{rule['address']}: security group {rule['security_group_id']} is not one of {SECURITY_GROUPS}"
        if rule.get("referenced_security_group_id"):
            peers = [names[rule["referenced_security_group_id"]]]
        elif rule.get("cidr_ipv4") == vpc:
            peers = list(SECURITY_GROUPS)
        else:
            peers = [rule["cidr_ipv4"]]
        protocols = ["tcp", "udp", "icmp"] if rule["ip_protocol"] == "-1" else [rule["ip_protocol"]]
        ports = ALL_PORTS if rule["ip_protocol"] == "-1" else range(rule["from_port"], rule["to_port"] + 1)
        for peer in peers:
            for protocol in protocols:
                key = (peer, own, protocol) if direction == "ingress" else (own, peer, protocol)
                out[direction].setdefault(key, set()).update(ports)
    return out


def ranges(ports: set[int]) -> str:
    """80, 443-445: a readable set of ports."""
    out, run = [], []
    for p in sorted(ports):
        if run and p != run[-1] + 1:
            out.append(run)
            run = []
        run.append(p)
    if run:
        out.append(run)
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in out)


def flow_differences(plan: dict) -> list[str]:
    """Each documented flow must be open on both sides (the source group lets
    it out, the destination group admits it from the source group), and
    nothing else may be open on either side."""
    documented = documented_ports()
    problems = []
    for direction, found in open_ports(plan).items():
        for key, ports in sorted(documented.items()):
            source, destination, protocol = key
            side = destination if direction == "ingress" else source
            if side not in SECURITY_GROUPS:
                continue  # a CIDR has no rules of its own
            missing = ports - found.get(key, set())
            if missing:
                problems.append(f"{direction} of {side}: {protocol} {ranges(missing)} from {source} to {destination} is closed")
        for key, ports in sorted(found.items()):
            extra = ports - documented.get(key, set())
            if extra:
                source, destination, protocol = key
                side = destination if direction == "ingress" else source
                problems.append(f"{direction} of {side}: {protocol} {ranges(extra)} from {source} to {destination} is open but documented nowhere")
    return problems


def test_every_documented_flow_is_open_both_ways_and_nothing_else(real_plans):
    """kubeadm's ports, Flannel's and the platform's own flows, each checked
    against the planned rules: egress of the source group, ingress of the
    destination group, both by group; and no rule opens more."""
    for run in ("example", "five_members"):
        problems = flow_differences(real_plans[run])
        assert problems == [], f"{run}:\n" + "\n".join(problems)


def test_the_flow_check_can_fail(real_plans):
    """A closed documented port and an undocumented open one are both seen."""
    plan = json.loads(json.dumps(real_plans["example"]))
    ingress = [c for c in plan["resource_changes"] if c["type"] == "aws_vpc_security_group_ingress_rule"]
    assert ingress
    removed = ingress[0]["change"]["after"]
    plan["resource_changes"].remove(ingress[0])
    assert any("is closed" in p for p in flow_differences(plan)), removed
    extra = json.loads(json.dumps(ingress[1]))
    extra["address"] += "-extra"
    extra["change"]["after"].update(ip_protocol="tcp", from_port=2049, to_port=2049, cidr_ipv4=None)
    plan["resource_changes"].append(extra)
    assert any("2049" in p and "documented nowhere" in p for p in flow_differences(plan))


def test_every_moved_rule_lands_on_a_planned_rule(real_plans):
    """A `moved` block whose target the configuration does not plan would
    move the rule and then delete it: every target is in the plan, no
    source is."""
    def address(prefix, reference):
        # python-hcl2 gives ${module.x.type.name["key"]}
        return prefix + reference.removeprefix("${").removesuffix("}")
    moves = [
        (address(prefix, m["from"]), address(prefix, m["to"]))
        for prefix, path in [("", TF / "moved.tf"), ("module.iam.", MODULES / "iam" / "main.tf")]
        for m in parse(path).get("moved", [])
    ]
    assert len(moves) == 21 + 4
    planned = set(changes(real_plans["example"]))
    for source, target in moves:
        assert target in planned, f"moved to {target}, which is not planned"
        assert source not in planned, source


def test_s3_gateway_endpoint_on_the_private_route_tables(real_plans):
    plan = real_plans["example"]
    endpoints = of_type(plan, "aws_vpc_endpoint")
    assert len(endpoints) == 1
    endpoint = next(iter(endpoints.values()))
    assert endpoint["service_name"] == f"com.amazonaws.{REGION}.s3"
    assert endpoint["vpc_endpoint_type"] == "Gateway"
    doc = parse(MODULES / "network" / "main.tf")
    resource = {unquote(k): v for k, v in dict(blocks(doc, "resource"))["aws_vpc_endpoint"].items()}["s3"]
    assert resource["route_table_ids"] == "${aws_route_table.private[*].id}"


# --- 6. DNS ---------------------------------------------------------------------------


def test_public_zone_is_taken_by_default_or_created_and_delegated(real_plans):
    example = real_plans["example"]
    assert of_type(example, "aws_route53_zone").keys() == {"module.dns.aws_route53_zone.private"}
    record = of_type(example, "aws_route53_record")["module.dns.aws_route53_record.kubeapi_public"]
    assert record["zone_id"] == ZONE_ID
    assert record["name"] == "kube-example.example.com"

    created = real_plans["created_zone"]
    zones = of_type(created, "aws_route53_zone")
    assert zones["module.dns.aws_route53_zone.public[0]"]["name"] == "example.example.com"
    delegation = of_type(created, "aws_route53_record")["module.dns.aws_route53_record.delegation[0]"]
    assert delegation["type"] == "NS"
    assert delegation["name"] == "example.example.com"
    assert delegation["zone_id"] == "ZPARENT0123456789"
    assert after_unknown(created, "module.dns.aws_route53_record.delegation[0]")["records"] is True


# --- 7. the policies themselves -------------------------------------------------------


def node_policies(plan: dict) -> dict[str, list[dict]]:
    """role -> every statement of its inline policies, from the real plan."""
    out: dict[str, list[dict]] = {role: [] for role in NODEBOOT_ACTIONS}
    policies = {**of_type(plan, "aws_iam_role_policy"), **of_type(plan, "aws_iam_policy")}
    for address, policy in policies.items():
        if not address.startswith("module.iam."):
            continue  # the flow logs' and snapshots' service roles
        node_policy = ("module.iam.aws_iam_role_policy.node[", "module.iam.aws_iam_policy.node[")
        if not address.startswith(node_policy):
            continue  # not a node role's (the cloud controller's)
        role = address.split('"')[1].split("/")[0]
        assert policy["policy"], f"{address}: the policy is not known at plan time"
        out[role].extend(json.loads(policy["policy"])["Statement"])
    return out


def as_list(value):
    return value if isinstance(value, list) else [value]


def matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


NEGATED = ("StringNotEquals", "NotIpAddress")


def condition_holds(test: str, key: str, expected: list, context: dict, resource_context: dict) -> bool:
    """One condition as IAM evaluates it: a missing key fails a positive
    operator, passes a negated one and an ...IfExists one; Null tests
    presence; ${key} in a value is the request's value of that key."""
    values = {**context, **resource_context}
    if test == "Null":
        return (key not in values) == (str(expected[0]) == "true")
    if key not in values:
        return test in NEGATED or test.endswith("IfExists")
    test = test.removesuffix("IfExists")
    actual = values[key]
    def resolve(e: str):
        for name in re.findall(r"\$\{([^}]+)\}", e):
            if name not in values:
                return None  # an unresolved variable matches nothing
            e = e.replace("${" + name + "}", str(values[name]))
        return e
    expected = [r for r in (resolve(str(e)) for e in expected) if r is not None]
    if test in ("StringEquals", "ArnEquals", "Bool"):
        return str(actual) in expected
    if test in ("StringLike", "ArnLike"):
        return any(matches(e, str(actual)) for e in expected)
    if test == "StringNotEquals":
        return str(actual) not in expected
    if test == "NotIpAddress":
        return not any(ipaddress.ip_address(actual) in ipaddress.ip_network(e) for e in expected)
    if test == "IpAddress":
        return any(ipaddress.ip_address(actual) in ipaddress.ip_network(e) for e in expected)
    if test == "ForAllValues:StringEquals":
        # Every value of a multi-valued key (aws:TagKeys) is one of the expected.
        return all(str(a) in expected for a in as_list(actual))
    raise AssertionError(f"condition operator {test} is not evaluated here: add it")


def applies(s: dict, action: str, resource: str, context: dict, resource_context: dict) -> bool:
    if not any(matches(a, action) for a in as_list(s["Action"])):
        return False
    if not any(matches(r, resource) for r in as_list(s["Resource"])):
        return False
    return all(
        condition_holds(test, key, as_list(expected), context, resource_context)
        for test, pairs in s.get("Condition", {}).items()
        for key, expected in pairs.items()
    )


def denied(statements: list[dict], action: str, resource: str, context: dict, resource_context: dict) -> list[str]:
    """Sids of the Deny statements that refuse the request."""
    return [
        s.get("Sid", "?")
        for s in statements
        if s["Effect"] == "Deny" and applies(s, action, resource, context, resource_context)
    ]


def allowed(statements: list[dict], action: str, resource: str, context: dict, resource_context: dict) -> list[str]:
    """Sids of the Allow statements that allow the request; none when a Deny refuses it."""
    if denied(statements, action, resource, context, resource_context):
        return []
    return [
        s.get("Sid", "?")
        for s in statements
        if s["Effect"] == "Allow" and applies(s, action, resource, context, resource_context)
    ]


# Where a node's requests come from: S3 through the VPC's gateway endpoint,
# from the instance's primary address; every other service through its
# zone's NAT gateway; always with the credentials of an instance of the VPC.
VPC = "vpc-0example"
NAT_IPS = ["198.51.100.10", "198.51.100.11", "198.51.100.12"]
# A node of each zone, in its zone's secure subnet (the example's).
NODE_IPS = ["10.80.10.57", "10.80.11.57", "10.80.12.57"]
NODE_IP = NODE_IPS[0]
CREDENTIALS = {"aws:EC2InstanceSourceVPC": VPC, "aws:EC2InstanceSourcePrivateIPv4": NODE_IP}
THROUGH_THE_ENDPOINT = {"aws:SourceVpce": ENDPOINT, "aws:SourceVpc": VPC, "aws:VpcSourceIp": NODE_IP}
THROUGH_NAT = {"aws:SourceIp": NAT_IPS[0]}
# A request context's "_zone" (default 0) says which zone's node makes it: its
# NAT gateway and its address. IAM never sees the key.
ZONE = "_zone"


def from_the_node(action: str, context: dict) -> dict:
    """The network half of a node's request context. A call an AWS service
    makes on the role's behalf (kms:ViaService) is the service's own."""
    if "kms:ViaService" in context:
        return {**CREDENTIALS, "aws:ViaAWSService": "true", **context}
    z = context.get(ZONE, 0)
    ip = NODE_IPS[z]
    credentials = {**CREDENTIALS, "aws:EC2InstanceSourcePrivateIPv4": ip}
    if action.startswith("s3:"):
        path = {**THROUGH_THE_ENDPOINT, "aws:VpcSourceIp": ip}
    else:
        path = {"aws:SourceIp": NAT_IPS[z]}
    return {**credentials, "aws:ViaAWSService": "false", **path, **context}


# The same credentials elsewhere: each must be refused for every request.
ELSEWHERE = {
    "from the internet": lambda action: {**CREDENTIALS, "aws:ViaAWSService": "false", "aws:SourceIp": "192.0.2.66"},
    "through another VPC's endpoint": lambda action: {
        **CREDENTIALS, "aws:ViaAWSService": "false",
        **({"aws:SourceVpce": "vpce-0other", "aws:SourceVpc": "vpc-0other", "aws:VpcSourceIp": "172.16.0.9"} if action.startswith("s3:") else {"aws:SourceVpc": "vpc-0other"}),
    },
    "from another machine of the VPC": lambda action: {
        **CREDENTIALS, "aws:ViaAWSService": "false",
        **({**THROUGH_THE_ENDPOINT, "aws:VpcSourceIp": "10.80.20.99"} if action.startswith("s3:") else THROUGH_NAT),
    },
    "issued to an instance of another VPC": lambda action: {
        "aws:EC2InstanceSourceVPC": "vpc-0other", "aws:EC2InstanceSourcePrivateIPv4": "172.16.0.9", "aws:ViaAWSService": "false",
        **(THROUGH_THE_ENDPOINT if action.startswith("s3:") else THROUGH_NAT),
    },
}
# From another machine of the VPC, only S3 can tell (the NAT hides the
# address of calls to other services): refused for S3 alone.
ELSEWHERE_S3_ONLY = {"from another machine of the VPC"}


# The requests of a boot, as tests/iam.rs drives them against the emulator:
# (role, action, resource, request context, resource context). The etcd node
# is i-0self in zone a; i-0dead a stopped node whose member it takes over.
INSTANCE = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance"
MEMBER_TAGS = {
    "aws:ResourceTag/nodeboot.io/environment": "example",
    "aws:ResourceTag/nodeboot.io/role": "etcd",
}
SELF = {"ec2:SourceInstanceARN": f"{INSTANCE}/i-0self", "aws:RequestedRegion": REGION}
OBJ = f"arn:aws:s3:::{BUCKET}"
ENVELOPE = {"kms:EncryptionContext:environment": "example"}
BACKUP = "backups/etcd/20261130T113500Z-r1234.snapshot"
REPORT = "backups/etcd/restore/20261130T120000Z-20261130T113500Z-r1234/member-0"
REQUEST = "backups/etcd/restore/request"
MARKER = "backups/etcd-cluster/marker.json"


def secret(path: str) -> dict:
    """nodeboot's envelope context of a secret (src: secrets' Context::kms)."""
    return {**ENVELOPE, "kms:EncryptionContext:path": path}


def backup(path: str) -> dict:
    """A backup's context (src: backup::context)."""
    return {**secret(path), "kms:EncryptionContext:purpose": "etcd-backup"}


ZONES = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]


def claim(z: int) -> list[tuple]:
    """A node of zone z claims member z (the example: one member per zone),
    taking it over from a dead node of its zone."""
    me = {**SELF, ZONE: z, "ec2:SourceInstanceARN": f"{INSTANCE}/i-0self{z}"}
    member = {**MEMBER_TAGS, "ec2:AvailabilityZone": ZONES[z]}
    mine = {**member, "ec2:InstanceID": f"i-0self{z}"}
    dead = {**member, "ec2:InstanceID": f"i-0dead{z}"}
    volume = f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0m{z}"
    eni = f"arn:aws:ec2:{REGION}:{ACCOUNT}:network-interface/eni-0m{z}"
    return [
        ("etcd", "ec2:AttachVolume", f"{INSTANCE}/i-0self{z}", me, mine),
        ("etcd", "ec2:AttachVolume", volume, me, member),
        ("etcd", "ec2:AttachNetworkInterface", f"{INSTANCE}/i-0self{z}", me, mine),
        ("etcd", "ec2:AttachNetworkInterface", eni, me, member),
        ("etcd", "ec2:DetachVolume", f"{INSTANCE}/i-0dead{z}", me, dead),
        ("etcd", "ec2:DetachVolume", volume, me, member),
        ("etcd", "ec2:DetachNetworkInterface", f"{INSTANCE}/i-0dead{z}", me, dead),
        ("etcd", "ec2:DetachNetworkInterface", eni, me, member),
        # Its member's key, and only it (the secrets stage).
        ("etcd", "s3:GetObject", f"{OBJ}/secure/etcd/member-{z}.key", {ZONE: z}, {}),
        ("etcd", "kms:Decrypt", KMS_ARN, {**secret(f"secure/etcd/member-{z}.key"), ZONE: z}, {}),
    ]


BOOT = [
    ("etcd", "ec2:DescribeVolumes", "*", SELF, {}),
    ("etcd", "ec2:DescribeNetworkInterfaces", "*", SELF, {}),
    ("etcd", "ec2:DescribeInstances", "*", SELF, {}),
    *claim(0),
    *claim(1),
    *claim(2),
    ("etcd", "kms:CreateGrant", KMS_ARN, {"kms:GrantIsForAWSResource": "true", "kms:ViaService": f"ec2.{REGION}.amazonaws.com"}, {}),
    # The mount stage marks the volume it formatted.
    ("etcd", "ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0m0", {**SELF, "aws:TagKeys": ["nodeboot.io/formatted"]}, MEMBER_TAGS),
    ("etcd", "s3:GetObject", f"{OBJ}/secure/etcd/ca.crt", {}, {}),
    ("etcd", "s3:GetObject", f"{OBJ}/common/ca.crt", {}, {}),
    ("etcd", "s3:GetObject", f"{OBJ}/manifests/etcd/kube-apiserver.yaml", {}, {}),
    ("etcd", "s3:ListBucket", OBJ, {"s3:prefix": "secure/"}, {}),
    ("etcd", "s3:ListBucket", OBJ, {"s3:prefix": "manifests/etcd/"}, {}),
    ("etcd", "kms:Decrypt", KMS_ARN, secret("common/ca.crt"), {}),
    ("etcd", "kms:Decrypt", KMS_ARN, secret("manifests/etcd/kube-apiserver.yaml"), {}),
    # The control plane's sync applies the add-ons (tests/iam.rs saw it read them).
    ("etcd", "s3:ListBucket", OBJ, {"s3:prefix": "manifests/addons/"}, {}),
    ("etcd", "s3:GetObject", f"{OBJ}/manifests/addons/10-flannel.yaml", {}, {}),
    ("etcd", "kms:Decrypt", KMS_ARN, secret("manifests/addons/10-flannel.yaml"), {}),
    ("etcd", "kms:Decrypt", KMS_ARN, {"kms:ViaService": f"s3.{REGION}.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": f"{OBJ}/ignition/etcd.ign"}, {}),
    # etcd backups (tests/etcd_backup_e2e.rs, tests/iam.rs): list, write,
    # read back, prune; restore requests read, reports written and read.
    ("etcd", "s3:ListBucket", OBJ, {"s3:prefix": "backups/etcd/"}, {}),
    ("etcd", "s3:PutObject", f"{OBJ}/{BACKUP}", {}, {}),
    ("etcd", "kms:GenerateDataKey", KMS_ARN, backup(BACKUP), {}),
    ("etcd", "kms:GenerateDataKey", KMS_ARN, {"kms:ViaService": f"s3.{REGION}.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": f"{OBJ}/{BACKUP}"}, {}),
    ("etcd", "s3:GetObject", f"{OBJ}/{BACKUP}", {}, {}),
    ("etcd", "kms:Decrypt", KMS_ARN, backup(BACKUP), {}),
    ("etcd", "s3:DeleteObject", f"{OBJ}/backups/etcd/20241130T113500Z-r17.snapshot", {}, {}),
    # The cluster marker: read by the etcd stage, put by the backup service.
    ("etcd", "s3:GetObject", f"{OBJ}/{MARKER}", {}, {}),
    ("etcd", "s3:PutObject", f"{OBJ}/{MARKER}", {}, {}),
    (
        "etcd", "kms:GenerateDataKey", KMS_ARN,
        {
            "kms:ViaService": f"s3.{REGION}.amazonaws.com",
            "kms:EncryptionContext:aws:s3:arn": f"{OBJ}/{MARKER}",
        },
        {},
    ),  # fmt: skip
    ("etcd", "s3:GetObject", f"{OBJ}/{REQUEST}", {}, {}),
    ("etcd", "kms:Decrypt", KMS_ARN, secret(REQUEST), {}),
    ("etcd", "s3:PutObject", f"{OBJ}/{REPORT}", {}, {}),
    ("etcd", "kms:GenerateDataKey", KMS_ARN, secret(REPORT), {}),
    ("etcd", "kms:Decrypt", KMS_ARN, secret(REPORT), {}),
    ("compute", "s3:GetObject", f"{OBJ}/compute/kube-proxy.kubeconfig", {}, {}),
    ("compute", "s3:ListBucket", OBJ, {"s3:prefix": "manifests/compute/"}, {}),
    ("compute", "kms:Decrypt", KMS_ARN, secret("compute/kube-proxy.kubeconfig"), {}),
    ("compute", "kms:Decrypt", KMS_ARN, secret("common/ca.crt"), {}),
    ("compute", "kms:Decrypt", KMS_ARN, secret("manifests/compute/flannel.yaml"), {}),
    # Ignition fetching a pointer config's full config (SSE-KMS, decrypted by S3).
    ("compute", "s3:GetObject", f"{OBJ}/ignition/compute.ign", {}, {}),
    ("compute", "kms:Decrypt", KMS_ARN, {"kms:ViaService": f"s3.{REGION}.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": f"{OBJ}/ignition/compute.ign"}, {}),
]

# A node that gives up powers itself off (its instance terminates on
# shutdown): no role may mark an instance unhealthy, not even its own.
ASG = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:0123:autoScalingGroupName"
HEALTH = "autoscaling:SetInstanceHealth"
TAG = "aws:ResourceTag"

# What must be refused, even from the node itself.
REFUSED = [
    ("etcd", "ec2:AttachVolume", f"{INSTANCE}/i-0other", SELF, {**MEMBER_TAGS, "ec2:InstanceID": "i-0other"}),
    ("etcd", "ec2:AttachVolume", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0root", SELF, {"aws:ResourceTag/nodeboot.io/environment": "example"}),
    ("etcd", "ec2:DetachVolume", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0m0", SELF, {**MEMBER_TAGS, "aws:ResourceTag/nodeboot.io/environment": "other"}),
    ("etcd", "ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0m0", {**SELF, "aws:TagKeys": ["nodeboot.io/member"]}, MEMBER_TAGS),
    ("etcd", "ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0m0", {**SELF, "aws:TagKeys": ["nodeboot.io/formatted"]}, {**MEMBER_TAGS, "aws:ResourceTag/nodeboot.io/environment": "other"}),
    ("etcd", "s3:GetObject", f"{OBJ}/compute/kube-proxy.kubeconfig", {}, {}),
    ("etcd", "s3:GetObject", f"{OBJ}/ca/ca.key", {}, {}),
    ("etcd", "kms:Decrypt", KMS_ARN, {"kms:EncryptionContext:environment": "other", "kms:EncryptionContext:path": "secure/etcd/ca.crt"}, {}),
    # Decrypt needs the path of a secret of the role's own.
    ("etcd", "kms:Decrypt", KMS_ARN, ENVELOPE, {}),
    ("etcd", "kms:Decrypt", KMS_ARN, secret("compute/kube-proxy.kubeconfig"), {}),
    ("etcd", "kms:Decrypt", KMS_ARN, secret("manifests/compute/flannel.yaml"), {}),
    ("etcd", "kms:Decrypt", KMS_ARN, secret("ca/ca.key"), {}),
    ("etcd", "kms:CreateGrant", KMS_ARN, {"kms:GrantIsForAWSResource": "false"}, {}),
    # Backups write nothing but backups/etcd/, and seal nothing but backups and reports.
    ("etcd", "s3:PutObject", f"{OBJ}/secure/etcd/ca.crt", {}, {}),
    ("etcd", "s3:PutObject", f"{OBJ}/manifests/etcd/kube-apiserver.yaml", {}, {}),
    ("etcd", "s3:DeleteObject", f"{OBJ}/common/ca.crt", {}, {}),
    # Nobody deletes the cluster marker: it says the etcd cluster existed.
    ("etcd", "s3:DeleteObject", f"{OBJ}/{MARKER}", {}, {}),
    ("compute", "s3:PutObject", f"{OBJ}/{MARKER}", {}, {}),
    ("etcd", "s3:ListBucket", OBJ, {"s3:prefix": "compute/"}, {}),
    ("etcd", "kms:GenerateDataKey", KMS_ARN, secret("secure/etcd/ca.crt"), {}),
    ("etcd", "kms:GenerateDataKey", KMS_ARN, secret(REQUEST), {}),
    ("etcd", "kms:GenerateDataKey", KMS_ARN, {"kms:EncryptionContext:environment": "other", "kms:EncryptionContext:purpose": "etcd-backup", "kms:EncryptionContext:path": BACKUP}, {}),
    # A backup's purpose binds its path too: no sealing a secret's path as a backup.
    ("etcd", "kms:GenerateDataKey", KMS_ARN, backup("secure/etcd/ca.crt"), {}),
    ("etcd", "kms:Decrypt", KMS_ARN, backup("secure/etcd/ca.crt"), {}),
    ("etcd", "kms:GenerateDataKey", KMS_ARN, {"kms:ViaService": f"s3.{REGION}.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": f"{OBJ}/secure/etcd/ca.crt"}, {}),
    ("compute", "s3:PutObject", f"{OBJ}/{BACKUP}", {}, {}),
    ("compute", "kms:GenerateDataKey", KMS_ARN, backup(BACKUP), {}),
    ("compute", "s3:GetObject", f"{OBJ}/secure/etcd/ca.crt", {}, {}),
    ("compute", "s3:ListBucket", OBJ, {"s3:prefix": "secure/"}, {}),
    ("compute", "ec2:AttachVolume", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0m0", SELF, MEMBER_TAGS),
    # A worker opens none of the control plane's secrets, no backup and no restore request.
    ("compute", "kms:Decrypt", KMS_ARN, secret("secure/ca.key"), {}),
    ("compute", "kms:Decrypt", KMS_ARN, secret("secure/etcd/member-0.key"), {}),
    ("compute", "kms:Decrypt", KMS_ARN, secret("manifests/etcd/kube-apiserver.yaml"), {}),
    ("compute", "kms:Decrypt", KMS_ARN, backup(BACKUP), {}),
    ("compute", "kms:Decrypt", KMS_ARN, secret(REQUEST), {}),
    ("compute", "kms:Decrypt", KMS_ARN, ENVELOPE, {}),
    ("compute", "s3:GetObject", f"{OBJ}/manifests/addons/10-flannel.yaml", {}, {}),
    ("compute", "kms:Decrypt", KMS_ARN, secret("manifests/addons/10-flannel.yaml"), {}),
    ("bastion", "s3:GetObject", f"{OBJ}/common/ca.crt", {}, {}),
]
# One zone's node touches no other zone's member (items 2 and 3): neither its
# volume nor its interface, on either side of an attachment, nor its key.
B = {**MEMBER_TAGS, "ec2:AvailabilityZone": "eu-west-1b"}
ENI_B = f"arn:aws:ec2:{REGION}:{ACCOUNT}:network-interface/eni-0m1"
ROOT = f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0root"
REFUSED += [
    ("etcd", "ec2:DetachVolume", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0m1", SELF, B),
    ("etcd", "ec2:DetachVolume", f"{INSTANCE}/i-0dead1", SELF, {**B, "ec2:InstanceID": "i-0dead1"}),
    ("etcd", "ec2:DetachNetworkInterface", ENI_B, SELF, B),
    ("etcd", "ec2:DetachNetworkInterface", f"{INSTANCE}/i-0b", SELF, {**B, "ec2:InstanceID": "i-0b"}),
    ("etcd", "ec2:AttachVolume", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0m1", SELF, B),
    ("etcd", "ec2:AttachNetworkInterface", ENI_B, SELF, B),
    ("etcd", "s3:GetObject", f"{OBJ}/secure/etcd/member-1.key", {}, {}),
    ("etcd", "kms:Decrypt", KMS_ARN, secret("secure/etcd/member-1.key"), {}),
    ("etcd", "s3:GetObject", f"{OBJ}/secure/etcd/member-0.key", {ZONE: 2}, {}),
    ("etcd", "kms:Decrypt", KMS_ARN, {**secret("secure/etcd/member-0.key"), ZONE: 2}, {}),
    # A member's zone without its tags is still not a member.
    ("etcd", "ec2:DetachVolume", ROOT, SELF, {"ec2:AvailabilityZone": "eu-west-1a"}),
]
REFUSED += [
    ("etcd", HEALTH, f"{ASG}/example-etcd-eu-west-1a-asg", SELF, MEMBER_TAGS),
    ("etcd", HEALTH, f"{ASG}/example-etcd-eu-west-1b-asg", SELF, MEMBER_TAGS),
    ("etcd", HEALTH, f"{ASG}/example-compute-asg", SELF, {f"{TAG}/nodeboot.io/role": "compute"}),
]


def test_each_roles_policies_fit_iams_size_limits(real_plans):
    """IAM refuses a role whose inline policies add up to more than 10,240
    characters, and a managed policy over 6,144 (whitespace not counted);
    the per-zone statements grow with the zones that hold members. Every
    managed node policy is attached to its role."""
    def size(document: str) -> int:
        return len(re.sub(r"\s", "", json.dumps(json.loads(document), separators=(",", ":"))))

    for run, plan in real_plans.items():
        inline: dict[str, int] = {}
        for address, policy in of_type(plan, "aws_iam_role_policy").items():
            if address.startswith("module.iam."):
                # node["<role>/<policy>"], or a policy resource of its own role
                role = address.split('"')[1].split("/")[0] if '"' in address else address
                inline[role] = inline.get(role, 0) + size(policy["policy"])
        assert max(inline.values()) <= 10240, (run, inline)
        managed = {
            address: size(policy["policy"])
            for address, policy in of_type(plan, "aws_iam_policy").items()
            if address.startswith("module.iam.")
        }
        assert managed and max(managed.values()) <= 6144, (run, managed)
        attached = of_type(plan, "aws_iam_role_policy_attachment")
        def keys(addresses, prefix):
            return {a.split('"')[1] for a in addresses if a.startswith(f"module.iam.{prefix}.node[")}

        policies = keys(managed, "aws_iam_policy")
        assert keys(attached, "aws_iam_role_policy_attachment") == policies, run
        print(f"\n[iam] {run}: inline {inline}, managed {managed}")


def test_each_role_allows_what_its_boot_does_and_nothing_more(real_plans):
    policies = node_policies(real_plans["example"])
    used: dict[str, set[tuple[str, str]]] = {role: set() for role in policies}
    for role, action, resource, context, resource_context in BOOT:
        sids = allowed(policies[role], action, resource, from_the_node(action, context), resource_context)
        assert sids, f"{role} may not {action} on {resource} with {context}: {json.dumps(policies[role], indent=1)}"
        used[role].update((sid, action) for sid in sids)
    for role, action, resource, context, resource_context in REFUSED:
        assert allowed(policies[role], action, resource, from_the_node(action, context), resource_context) == [], (
            f"{role} may {action} on {resource} with {context} {resource_context}"
        )
    # Nothing more: every action of every Allow statement serves a request of
    # the boot, and the actions are exactly the ones tests/iam.rs sees the code call.
    for role, statements in policies.items():
        granted = {(s.get("Sid", "?"), a) for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])}
        assert granted - used[role] == set(), (
            f"{role}: granted but not used by a boot; a new node call needs its request in BOOT "
            "(and a refused one in REFUSED) above"
        )
        delegated = {"kms:CreateGrant"} if role == "etcd" else set()
        assert {a for _, a in granted} == NODEBOOT_ACTIONS[role] | delegated


def test_each_allow_statement_grants_one_group_of_the_action_maps(real_plans):
    """No action list is written twice: every Allow statement's actions are
    one group of local.nodeboot_actions or local.delegated_actions."""
    from test_terraform import flatten_actions, iam_locals  # noqa: PLC0415

    maps = iam_locals()
    for role, statements in node_policies(real_plans["example"]).items():
        groups = [
            flatten_actions({name: actions})
            for table in ("nodeboot_actions", "delegated_actions")
            for name, actions in maps[table].get(role, {}).items()
            if not name.startswith("__")
        ]
        for s in statements:
            if s["Effect"] == "Allow":
                assert set(as_list(s["Action"])) in groups, f"{role}/{s.get('Sid')}: {s['Action']}"


def test_a_roles_credentials_work_only_from_its_own_instances(real_plans):
    """Every request of the boot, made with the node's credentials from
    anywhere else, is refused; a call an AWS service makes on the role's
    behalf is not replayed (the service makes it, from its own network)."""
    policies = node_policies(real_plans["example"])
    refused_by: dict[str, set[str]] = {role: set() for role in policies}
    for role, action, resource, context, resource_context in BOOT:
        if "kms:ViaService" in context:
            continue
        for where, network in ELSEWHERE.items():
            if where in ELSEWHERE_S3_ONLY and not action.startswith("s3:"):
                continue
            request = {**network(action), **context}
            sids = denied(policies[role], action, resource, request, resource_context)
            assert sids, f"{role}: {action} on {resource} {where} is not refused"
            refused_by[role].update(sids)
    for role, statements in policies.items():
        deny = {s["Sid"] for s in statements if s["Effect"] == "Deny"}
        assert deny == refused_by[role], f"{role}: deny statements no request needed: {deny - refused_by[role]}"


def test_the_evaluator_refuses_without_the_conditions(real_plans):
    """The check above must be able to fail: drop the conditions and the
    refused requests get through."""
    policies = node_policies(real_plans["example"])
    loose = [{k: v for k, v in s.items() if k != "Condition"} for s in policies["etcd"] if s["Effect"] == "Allow"]
    role, action, resource, context, resource_context = REFUSED[0]
    assert allowed(loose, action, resource, from_the_node(action, context), resource_context)
    compute = [{k: v for k, v in s.items() if k != "Condition"} for s in policies["compute"] if s["Effect"] == "Allow"]
    assert allowed(compute, "kms:Decrypt", KMS_ARN, from_the_node("kms:Decrypt", secret("secure/ca.key")), {})


@pytest.fixture(scope="module")
def iam_alone(tmp_path_factory):
    """modules/iam planned alone by the real provider, with a known S3
    endpoint id, VPC and NAT addresses, so every policy renders at plan time.
    The module is called by a relative path: it calls ../etcd/placement, which
    Terraform allows only inside one package (a local tree, not a file:// one)."""
    plugin_dir = Path(__import__("os").environ.get("NODEBOOT_TF_PLUGIN_DIR") or "/opt/tf-plugins")
    if not plugin_dir.is_dir():
        pytest.fail(f"the Terraform provider plugin directory {plugin_dir} does not exist")
    root = tmp_path_factory.mktemp("iam")
    (root / "main.tf").write_text(
        REAL_PROVIDER.split("override_data")[0]
        + f"""
module "iam" {{
  source              = "{__import__("os").path.relpath(MODULES / 'iam', root)}"
  environment         = "example"
  account_id          = "{ACCOUNT}"
  region              = "{REGION}"
  secrets_bucket_name = "{BUCKET}"
  kms_key_arn         = "{KMS_ARN}"
  s3_endpoint_id      = "{ENDPOINT}"
  vpc_id              = "{VPC}"
  nat_public_ips      = {json.dumps(NAT_IPS)}
  availability_zones  = {json.dumps(ZONES)}
  secure_subnets      = ["10.80.10.0/24", "10.80.11.0/24", "10.80.12.0/24"]
  etcd_count          = 3
}}

output "policies" {{
  value = module.iam.policies
}}
"""
    )
    for args in (
        ["init", "-input=false", "-backend=false", f"-plugin-dir={plugin_dir}"],
        ["plan", "-input=false", "-out=plan"],
    ):
        result = terraform(*args, "-no-color", cwd=root)
        assert result.returncode == 0, result.stdout + result.stderr
    shown = terraform("show", "-json", "plan", cwd=root)
    return json.loads(shown.stdout)["planned_values"]["outputs"]["policies"]["value"]


def test_node_roles_reach_the_secrets_bucket_only_through_the_endpoint(iam_alone):
    statements = {s["Sid"]: s for s in json.loads(iam_alone["secrets_bucket"])["Statement"]}
    assert set(statements) == {
        "NodeRolesOnlyThroughTheVpcEndpoint", "NoNodeRoleDeletesTheClusterMarker", "OnlyOverTls"
    }
    # The bootstrap guard's evidence: no node role deletes the cluster marker.
    marker = statements["NoNodeRoleDeletesTheClusterMarker"]
    assert marker["Effect"] == "Deny" and marker["Principal"] == {"AWS": "*"}
    assert set(as_list(marker["Action"])) == {"s3:DeleteObject", "s3:DeleteObjectVersion"}
    assert set(as_list(marker["Resource"])) == {f"{OBJ}/backups/etcd-cluster/*"}
    assert set(as_list(marker["Condition"]["ArnEquals"]["aws:PrincipalArn"])) == {
        f"arn:aws:iam::{ACCOUNT}:role/example-{r}" for r in NODEBOOT_ACTIONS
    }
    deny = statements["NodeRolesOnlyThroughTheVpcEndpoint"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"}
    assert set(as_list(deny["Action"])) == {a for r in NODEBOOT_ACTIONS.values() for a in r if a.startswith("s3:")}
    assert set(as_list(deny["Resource"])) == {OBJ, f"{OBJ}/*"}
    roles = set(as_list(deny["Condition"]["ArnEquals"]["aws:PrincipalArn"]))
    assert roles == {f"arn:aws:iam::{ACCOUNT}:role/example-{r}" for r in NODEBOOT_ACTIONS}
    assert deny["Condition"]["StringNotEquals"]["aws:SourceVpce"] == ENDPOINT
    # The same inline policies as the whole-root plan renders.
    assert set(iam_alone["node"]) == set(NODEBOOT_ACTIONS)
    assert set(iam_alone["node"]["etcd"]) == {
        "read-secrets", "attach-members", "etcd-backups", "member-keys-of-its-zone",
        "only-inside-the-vpc",
    }


def bucket_policy_refuses(policy: list[dict], action: str, resource: str, context: dict) -> bool:
    return bool(denied(policy, action, resource, context, {}))


def test_the_secrets_bucket_refuses_anything_but_tls(iam_alone):
    policy = json.loads(iam_alone["secrets_bucket"])["Statement"]
    operator = {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/operator"}
    node = {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/example-etcd", **THROUGH_THE_ENDPOINT}
    for who in (operator, node):
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteBucket", "s3:PutBucketPolicy"):
            assert bucket_policy_refuses(policy, action, f"{OBJ}/common/ca.crt", {**who, "aws:SecureTransport": "false"}), (who, action)
        assert not bucket_policy_refuses(policy, "s3:GetObject", f"{OBJ}/common/ca.crt", {**who, "aws:SecureTransport": "true"})
    # A node role from outside the endpoint, even over TLS.
    outside = {**node, "aws:SourceVpce": "vpce-0other", "aws:SecureTransport": "true"}
    assert bucket_policy_refuses(policy, "s3:GetObject", f"{OBJ}/common/ca.crt", outside)


def test_unfinished_multipart_uploads_in_the_secrets_bucket_are_aborted_after_a_day(real_plans):
    """A backup killed mid-upload leaves its parts (billed) until aborted:
    one enabled rule with no filter (the whole bucket) aborts them after a day."""
    for run, plan in real_plans.items():
        configurations = list(of_type(plan, "aws_s3_bucket_lifecycle_configuration").values())
        assert [c["bucket"] for c in configurations] == [BUCKET], run
        rules = configurations[0]["rule"]
        aborting = [r for r in rules if r["status"] == "Enabled" and r["abort_incomplete_multipart_upload"]]
        assert len(aborting) == 1, (run, rules)
        rule = aborting[0]
        assert rule["abort_incomplete_multipart_upload"] == [{"days_after_initiation": 1}], run
        assert rule["filter"] in ([], [{}]) or all(not v for v in rule["filter"][0].values()), (run, rule["filter"])
        # Nothing expires: retention prunes backups, secrets are kept.
        for r in rules:
            assert not r.get("expiration") and not r.get("noncurrent_version_expiration"), (run, r)


def endpoint_policy(plan: dict) -> list[dict]:
    endpoint = next(iter(of_type(plan, "aws_vpc_endpoint").values()))
    assert endpoint["policy"], "the S3 endpoint has no policy (or it is unknown at plan time)"
    return json.loads(endpoint["policy"])["Statement"]


def test_the_s3_endpoint_carries_the_environments_buckets_and_public_reads_only(real_plans):
    """Through the endpoint: the node roles' S3 calls on the secrets bucket;
    reads of other accounts' objects (public image layers the registries
    serve from S3 of this region); nothing else of this account, and no
    write or listing of anyone else's bucket."""
    policy = endpoint_policy(real_plans["example"])
    ours = {"aws:ResourceAccount": ACCOUNT}
    theirs = {"aws:ResourceAccount": "210987654321"}
    node = {"aws:PrincipalAccount": ACCOUNT}
    for role, action, resource, context, _ in BOOT:
        if action.startswith("s3:"):
            assert allowed(policy, action, resource, {**node, **context}, ours), (role, action, resource)
            # Someone else's credentials do not reach the bucket through it.
            stranger = {"aws:PrincipalAccount": "210987654321", **context}
            assert allowed(policy, action, resource, stranger, ours) == [], (role, action, resource)
    assert allowed(policy, "s3:GetObject", "arn:aws:s3:::prod-eu-west-1-starport-layer-bucket/sha256/ab", {}, theirs)
    for action, resource, owner in [
        ("s3:PutObject", "arn:aws:s3:::attacker-bucket/dump.tar", theirs),
        ("s3:ListBucket", "arn:aws:s3:::attacker-bucket", theirs),
        ("s3:GetObject", "arn:aws:s3:::example-terraform-state/example/terraform.tfstate", ours),
        ("s3:PutObject", "arn:aws:s3:::other-environment-secrets/common/ca.crt", ours),
        ("s3:PutBucketPolicy", OBJ, ours),
    ]:
        assert allowed(policy, action, resource, {}, owner) == [], (action, resource)


def test_the_s3_endpoint_carries_nodeboots_binary_when_ignition_fetches_it(initialized_copy):  # noqa: F811
    _, by_run, _ = plans(
        initialized_copy(),
        "nodeboot_from_s3",
        REAL_PROVIDER,
        """
run "nodeboot_from_s3" {
  command = plan

  variables {
    nodeboot_source = "s3"
    nodeboot_s3_url = "s3://example-artifacts/nodeboot/v1/nodeboot"
    nodeboot_sha512 = "%s"
  }
}
""" % ("a" * 128),
    )
    policy = endpoint_policy(by_run["nodeboot_from_s3"])
    binary = "arn:aws:s3:::example-artifacts/nodeboot/v1/nodeboot"
    node = {"aws:PrincipalAccount": ACCOUNT}
    assert allowed(policy, "s3:GetObject", binary, node, {"aws:ResourceAccount": ACCOUNT})
    assert not allowed(policy, "s3:GetObject", "arn:aws:s3:::example-artifacts/other", node, {"aws:ResourceAccount": ACCOUNT})


# --- 8. small things ------------------------------------------------------------------


def test_instances_carry_the_cluster_tag_like_the_subnets(real_plans):
    plan = real_plans["example"]
    cluster = {"kubernetes.io/cluster/example": "owned"}
    for address, subnet in of_type(plan, "aws_subnet").items():
        assert cluster.items() <= subnet["tags"].items(), address
    for address, group in of_type(plan, "aws_autoscaling_group").items():
        tags = {t["key"]: (t["value"], t["propagate_at_launch"]) for t in group["tag"]}
        assert tags.get("kubernetes.io/cluster/example") == ("owned", True), address
    bastion = of_type(plan, "aws_instance")["module.bastion.aws_instance.bastion"]
    assert cluster.items() <= bastion["tags"].items()


def test_make_render_writes_where_terraform_reads(tmp_path):
    """`make render` for an environment renders into the directory
    terraform/main.tf reads its user data from."""
    env = tmp_path / "staging.tfvars"
    env.write_text(EXAMPLE.read_text().replace('environment = "example"', 'environment = "staging"'))
    result = __import__("subprocess").run(
        ["make", "-n", "render", f"ENV_FILE={env}"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    out = re.search(r"--out (\S+)", result.stdout).group(1)
    ignition_dir = dict(
        (k, v)
        for body in parse(TF / "main.tf").get("locals", [])
        for k, v in body.items()
        if k == "ignition_dir"
    )["ignition_dir"]
    # "${path.root}/../build/${var.environment}/ignition", path.root = terraform/
    expected = unquote(ignition_dir).replace("${path.root}/../", "").replace("${var.environment}", "staging")
    assert out == expected == "build/staging/ignition"


# --- issue 12: the CNI's own traffic ---------------------------------------------------


def test_the_flannel_port_is_the_one_the_rendered_config_sets():
    """The documented flow's port is the one nodeboot renders into
    flannel's net-conf (FLANNEL_VXLAN_PORT, wherever src/ keeps it)."""
    flannel = [f for f in DOCUMENTED_FLOWS if f[0] == "Flannel VXLAN"]
    assert len(flannel) == 1
    found = {
        int(m.group(1))
        for path in (REPO / "src").rglob("*.rs")
        for m in re.finditer(r"FLANNEL_VXLAN_PORT: u16 = (\d+);", path.read_text())
    }
    assert found == {flannel[0][2]}


def test_the_cloud_controllers_policy_is_its_own_managed_one_on_the_control_plane(real_plans):
    """The AWS cloud-controller-manager's policy (terraform/modules/iam/
    cloud_controller.tf), as the real provider plans it: a managed policy
    within IAM's 6,144 characters, attached to the etcd (control-plane) role
    only, every action limited to this region but ELB's service-linked role,
    which is limited to that service; no wildcard action."""
    plan = real_plans["example"]
    (policy,) = [
        p for a, p in of_type(plan, "aws_iam_policy").items() if "cloud_controller" in a
    ]
    assert policy["name"] == "example-cloud-controller-manager"
    document = json.loads(policy["policy"])
    size = len(re.sub(r"\s", "", json.dumps(document, separators=(",", ":"))))
    assert size <= 6144, size
    (attachment,) = [
        p
        for a, p in of_type(plan, "aws_iam_role_policy_attachment").items()
        if "cloud_controller" in a
    ]
    assert attachment["role"] == "example-etcd"
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = as_list(statement["Action"])
        assert all("*" not in a for a in actions), actions
        if actions == ["iam:CreateServiceLinkedRole"]:
            condition = statement["Condition"]["StringEquals"]["iam:AWSServiceName"]
            assert condition == "elasticloadbalancing.amazonaws.com"
        else:
            assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == REGION
    print(f"\n[size] cloud-controller-manager policy: {size} of 6144")
