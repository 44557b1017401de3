# The AWS cloud-controller-manager (an add-on the control plane runs, see
# README "The cloud controller"): its own managed policy, attached to the etcd
# (control-plane) role, whose instance profile it takes its credentials from. Kept apart from
# nodeboot's table in main.tf: these are the controller's calls, not
# nodeboot's.
#
# The actions are the controller's documented "Control Plane Policy"
# (kubernetes/cloud-provider-aws docs/prerequisites.md) less what belongs to
# controllers nodeboot turns off or to code the controller no longer has:
# tests/cloud_controller.rs checks this list against the documented one,
# each left-out action against the rendered flag that turns its controller
# off. No wildcard action.

locals {
  cloud_controller_actions = {
    # The node controllers (initialise a Node: addresses, zone, instance
    # type; delete the Node of a terminated instance) and the zone-id label.
    nodes = [
      "ec2:DescribeAvailabilityZones",
      "ec2:DescribeInstanceTopology",
      "ec2:DescribeInstances",
      "ec2:DescribeRegions",
    ]
    # The service controller: Services of type LoadBalancer (classic ELB or
    # NLB), their security groups and the subnets and route tables it picks
    # them from.
    describe_network = [
      "ec2:DescribeRouteTables",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeSubnets",
      "ec2:DescribeVpcs",
    ]
    security_groups = [
      "ec2:AuthorizeSecurityGroupIngress",
      "ec2:CreateSecurityGroup",
      "ec2:CreateTags",
      "ec2:DeleteSecurityGroup",
      "ec2:RevokeSecurityGroupIngress",
    ]
    load_balancers = [
      "elasticloadbalancing:AddTags",
      "elasticloadbalancing:ApplySecurityGroupsToLoadBalancer",
      "elasticloadbalancing:AttachLoadBalancerToSubnets",
      "elasticloadbalancing:ConfigureHealthCheck",
      "elasticloadbalancing:CreateListener",
      "elasticloadbalancing:CreateLoadBalancer",
      "elasticloadbalancing:CreateLoadBalancerListeners",
      "elasticloadbalancing:CreateLoadBalancerPolicy",
      "elasticloadbalancing:CreateTargetGroup",
      "elasticloadbalancing:DeleteListener",
      "elasticloadbalancing:DeleteLoadBalancer",
      "elasticloadbalancing:DeleteLoadBalancerListeners",
      "elasticloadbalancing:DeleteTargetGroup",
      "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
      "elasticloadbalancing:DeregisterTargets",
      "elasticloadbalancing:DescribeListeners",
      "elasticloadbalancing:DescribeLoadBalancerAttributes",
      "elasticloadbalancing:DescribeLoadBalancerPolicies",
      "elasticloadbalancing:DescribeLoadBalancers",
      "elasticloadbalancing:DescribeTargetGroups",
      "elasticloadbalancing:DescribeTargetHealth",
      "elasticloadbalancing:DetachLoadBalancerFromSubnets",
      "elasticloadbalancing:ModifyListener",
      "elasticloadbalancing:ModifyLoadBalancerAttributes",
      "elasticloadbalancing:ModifyTargetGroup",
      "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
      "elasticloadbalancing:RegisterTargets",
      "elasticloadbalancing:SetLoadBalancerPoliciesForBackendServer",
      "elasticloadbalancing:SetLoadBalancerPoliciesOfListener",
    ]
    # The first load balancer of an account creates ELB's service-linked
    # role; limited to that service below.
    service_linked_role = ["iam:CreateServiceLinkedRole"]
    # Instance groups behind a Service's nodes (documented; read only).
    autoscaling = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeTags",
    ]
  }
}

data "aws_iam_policy_document" "cloud_controller" {
  statement {
    sid       = "ReadInstancesAndNetworkInThisRegion"
    effect    = "Allow"
    actions   = concat(local.cloud_controller_actions.nodes, local.cloud_controller_actions.describe_network, local.cloud_controller_actions.autoscaling)
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    sid       = "ServiceLoadBalancersInThisRegion"
    effect    = "Allow"
    actions   = concat(local.cloud_controller_actions.security_groups, local.cloud_controller_actions.load_balancers)
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    sid       = "ElbServiceLinkedRoleOnly"
    effect    = "Allow"
    actions   = local.cloud_controller_actions.service_linked_role
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["elasticloadbalancing.amazonaws.com"]
    }
  }
}

# A managed policy of its own (IAM's limit of 6,144 characters per managed
# policy; it does not eat into the 10,240 the role's inline policies share).
resource "aws_iam_policy" "cloud_controller" {
  name        = "${var.environment}-cloud-controller-manager"
  description = "The AWS cloud-controller-manager on the control plane of ${var.environment}"
  policy      = data.aws_iam_policy_document.cloud_controller.json
}

resource "aws_iam_role_policy_attachment" "cloud_controller" {
  role       = aws_iam_role.node["etcd"].name
  policy_arn = aws_iam_policy.cloud_controller.arn
}

output "cloud_controller_actions" {
  description = "The AWS actions the control plane's cloud-controller-manager is granted."
  value       = sort(flatten(values(local.cloud_controller_actions)))
}
