# jobguard with an S3 manifest store, next to a Batch compute environment, queue and job
# definition set up so that deploys kill as little work as possible.

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

variable "github_repository" {
  description = "ORG/REPO whose production environment deploys this stack."
  type        = string
}

resource "aws_batch_compute_environment" "science" {
  # A name prefix with create_before_destroy: a replacement is created, the queue moves to it,
  # and only then is the old one destroyed.
  compute_environment_name_prefix = "science-"
  type                            = "MANAGED"

  compute_resources {
    type               = "FARGATE"
    max_vcpus          = 64
    subnets            = var.subnet_ids
    security_group_ids = var.security_group_ids
  }

  # In-place infrastructure updates let running jobs finish (up to 12 hours) instead of
  # terminating them.
  update_policy {
    terminate_jobs_on_update      = false
    job_execution_timeout_minutes = 720
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_batch_job_queue" "science" {
  # A queue's name forces replacement: keep it stable, and jobguard resubmits by name.
  name     = "science-queue"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.science.arn
  }
}

resource "aws_batch_job_definition" "rnaseq" {
  name                  = "rnaseq"
  type                  = "container"
  platform_capabilities = ["FARGATE"]

  # Queued jobs may still reference older revisions: keep them ACTIVE when a new one is registered.
  deregister_on_new_revision = false

  container_properties = jsonencode({
    image      = "public.ecr.aws/docker/library/python:3.12"
    command    = ["python", "-c", "print('align')"]
    jobRoleArn = null
    resourceRequirements = [
      { type = "VCPU", value = "1" },
      { type = "MEMORY", value = "2048" },
    ]
  })
}

module "jobguard" {
  source = "../.."

  store                = "s3"
  job_queue_arns       = [aws_batch_job_queue.science.arn]
  job_definition_names = [aws_batch_job_definition.rnaseq.name]

  create_github_role   = true
  create_oidc_provider = true
  github_oidc_subjects = ["repo:${var.github_repository}:environment:production"]
}

# Wire these into the workflow: role-to-assume, and the action's store and queues inputs.
output "role_arn" {
  description = "role-to-assume for aws-actions/configure-aws-credentials."
  value       = module.jobguard.role_arn
}

output "store" {
  description = "The jobguard action's store input."
  value       = module.jobguard.store_uri
}

output "queues" {
  description = "The jobguard action's queues input."
  value       = aws_batch_job_queue.science.name
}
