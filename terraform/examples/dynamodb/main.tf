# jobguard with a DynamoDB manifest store encrypted with a customer managed key, reusing an
# existing GitHub OIDC provider, next to an EC2 compute environment.

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region of the Batch resources."
  type        = string
  default     = "us-east-1"
}

variable "subnet_ids" {
  description = "Subnets for the compute environment."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups for the compute environment."
  type        = list(string)
}

variable "instance_role_arn" {
  description = "ECS instance profile ARN for the compute environment's instances."
  type        = string
}

variable "oidc_provider_arn" {
  description = "The account's existing token.actions.githubusercontent.com provider."
  type        = string
}

variable "github_repository" {
  description = "ORG/REPO whose main branch deploys this stack."
  type        = string
}

resource "aws_kms_key" "jobguard" {
  description         = "jobguard manifests"
  enable_key_rotation = true
}

resource "aws_kms_key_policy" "jobguard" {
  key_id = aws_kms_key.jobguard.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministersTheKey"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

data "aws_caller_identity" "current" {}

resource "aws_batch_compute_environment" "etl" {
  compute_environment_name_prefix = "etl-"
  type                            = "MANAGED"

  compute_resources {
    type               = "EC2"
    max_vcpus          = 256
    instance_type      = ["optimal"]
    instance_role      = var.instance_role_arn
    subnets            = var.subnet_ids
    security_group_ids = var.security_group_ids
  }

  update_policy {
    terminate_jobs_on_update      = false
    job_execution_timeout_minutes = 240
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_batch_job_queue" "etl" {
  name     = "etl-queue"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.etl.arn
  }
}

resource "aws_batch_job_definition" "load" {
  name                       = "nightly-load"
  type                       = "container"
  deregister_on_new_revision = false

  container_properties = jsonencode({
    image   = "public.ecr.aws/docker/library/python:3.12"
    command = ["python", "-c", "print('load')"]
    resourceRequirements = [
      { type = "VCPU", value = "2" },
      { type = "MEMORY", value = "4096" },
    ]
  })
}

module "jobguard" {
  source = "../.."

  store                = "dynamodb"
  kms_key_arn          = aws_kms_key.jobguard.arn
  job_queue_arns       = [aws_batch_job_queue.etl.arn]
  job_definition_names = [aws_batch_job_definition.load.name]

  create_github_role   = true
  oidc_provider_arn    = var.oidc_provider_arn
  github_oidc_subjects = ["repo:${var.github_repository}:ref:refs/heads/main"]
}

output "role_arn" {
  description = "role-to-assume for aws-actions/configure-aws-credentials."
  value       = module.jobguard.role_arn
}

output "store" {
  description = "The jobguard action's store input (dynamodb://TABLE)."
  value       = module.jobguard.store_uri
}

output "queues" {
  description = "The jobguard action's queues input."
  value       = aws_batch_job_queue.etl.name
}
