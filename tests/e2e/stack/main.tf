# A small Batch stack for the end-to-end deploy test (tests/test_deploy_e2e.py). The test copies
# it to a temporary folder, points every provider endpoint at the simulated AWS (override.tf,
# written there only), and changes it one kind of change at a time through its variables.

provider "aws" {
  region = "us-east-1"
}

# Replaced whenever its instance types change (BEST_FIT allocation cannot update in place): a
# name prefix with create_before_destroy, so the queue moves to the new one before the old goes.
resource "aws_batch_compute_environment" "replaceable" {
  compute_environment_name_prefix = "e2e-replaceable-"
  type                            = "MANAGED"

  compute_resources {
    type                = "EC2"
    allocation_strategy = "BEST_FIT"
    min_vcpus           = 0
    max_vcpus           = 16
    instance_type       = var.replaceable_instance_types
    instance_role       = var.instance_profile_arn
    subnets             = var.subnet_ids
    security_group_ids  = var.security_group_ids
  }

  lifecycle {
    create_before_destroy = true
  }
}

# Updated in place (BEST_FIT_PROGRESSIVE): new instance types are an infrastructure update, a new
# max_vcpus only scales it.
resource "aws_batch_compute_environment" "ec2" {
  compute_environment_name = "e2e-ec2"
  type                     = "MANAGED"

  compute_resources {
    type                = "EC2"
    allocation_strategy = "BEST_FIT_PROGRESSIVE"
    min_vcpus           = 0
    max_vcpus           = var.ec2_max_vcpus
    instance_type       = var.ec2_instance_types
    instance_role       = var.instance_profile_arn
    subnets             = var.subnet_ids
    security_group_ids  = var.security_group_ids
  }

  # Terminates running jobs on an infrastructure update: drain then takes the started jobs at once
  # (with false, it would give them job_execution_timeout_minutes first; tests/test_precision.py).
  update_policy {
    terminate_jobs_on_update      = true
    job_execution_timeout_minutes = 30
  }
}

resource "aws_batch_compute_environment" "fargate" {
  compute_environment_name = "e2e-fargate"
  type                     = "MANAGED"

  compute_resources {
    type               = "FARGATE"
    max_vcpus          = 16
    subnets            = var.fargate_subnet_ids
    security_group_ids = var.security_group_ids
  }
}

resource "aws_batch_job_queue" "replaceable" {
  name     = "e2e-replaceable"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.replaceable.arn
  }
}

resource "aws_batch_job_queue" "ec2" {
  name     = "e2e-ec2"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.ec2.arn
  }
}

resource "aws_batch_job_queue" "fargate" {
  name     = "e2e-fargate"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.fargate.arn
  }
}

# Renamed by one case: a queue's name forces its replacement.
resource "aws_batch_job_queue" "renamed" {
  name     = var.renamed_queue_name
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.fargate.arn
  }
}

# Deleted by one case.
resource "aws_batch_job_queue" "doomed" {
  count = var.keep_doomed_queue ? 1 : 0

  name     = "e2e-doomed"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.fargate.arn
  }
}

resource "aws_batch_job_definition" "ec2" {
  name                       = "e2e-ec2-work"
  type                       = "container"
  deregister_on_new_revision = false

  container_properties = jsonencode({
    image   = "public.ecr.aws/docker/library/busybox:${var.release}"
    command = ["sh", "-c", "echo work"]
    environment = [
      { name = "RELEASE", value = var.release },
    ]
    resourceRequirements = [
      { type = "VCPU", value = "1" },
      { type = "MEMORY", value = "512" },
    ]
  })
}

resource "aws_batch_job_definition" "fargate" {
  name                       = "e2e-fargate-work"
  type                       = "container"
  platform_capabilities      = ["FARGATE"]
  deregister_on_new_revision = false

  container_properties = jsonencode({
    image            = "public.ecr.aws/docker/library/busybox:${var.release}"
    command          = ["sh", "-c", "echo work"]
    executionRoleArn = var.execution_role_arn
    environment = [
      { name = "RELEASE", value = var.release },
    ]
    resourceRequirements = [
      { type = "VCPU", value = "0.5" },
      { type = "MEMORY", value = "1024" },
    ]
  })
}

# Nothing to do with Batch.
resource "aws_ssm_parameter" "unrelated" {
  name  = "/e2e/unrelated"
  type  = "String"
  value = var.unrelated_value
}
