# The compute layer: the Kubernetes workers, one auto-scaling group over the
# compute subnets of all zones.

resource "aws_security_group" "compute" {
  name        = "${var.environment}-compute"
  description = "Kubernetes workers of ${var.environment}"
  vpc_id      = var.vpc_id

  ingress {
    description = "kubelet API, from kube-apiserver"
    protocol    = "tcp"
    from_port   = 10250
    to_port     = 10250
    cidr_blocks = var.secure_subnets
  }

  ingress {
    description = "workers to workers: pod network and node ports"
    protocol    = "-1"
    from_port   = 0
    to_port     = 0
    self        = true
  }

  ingress {
    description = "ssh from the mgmt layer (the bastion)"
    protocol    = "tcp"
    from_port   = 22
    to_port     = 22
    cidr_blocks = var.mgmt_subnets
  }

  egress {
    description = "HTTPS to AWS APIs, S3 and image registries"
    protocol    = "tcp"
    from_port   = 443
    to_port     = 443
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "anything inside the VPC"
    protocol    = "-1"
    from_port   = 0
    to_port     = 0
    cidr_blocks = [var.vpc_cidr]
  }

  tags = {
    Name = "${var.environment}-compute"
  }
}

module "nodes" {
  source = "../node-group"

  environment           = var.environment
  role                  = "compute"
  ami_id                = var.ami_id
  instance_type         = var.instance_type
  subnet_ids            = var.compute_subnet_ids
  size                  = var.compute_count
  security_group_ids    = [aws_security_group.compute.id]
  instance_profile_name = var.instance_profile_name
  user_data             = var.user_data
}
