# jobguard with an S3 manifest store and a new GitHub OIDC provider, next to a Fargate compute
# environment, queue and job definition set up so that deploys kill as little work as possible.

provider "aws" {
  region = var.region
}

resource "aws_batch_compute_environment" "science" {
  # A name prefix with create_before_destroy: a replacement is created, the queue moves to it,
  # and only then is the old one destroyed.
  compute_environment_name_prefix = "science-"
  type                            = "MANAGED"

  # No update_policy: on Fargate, Batch manages no instances, so a change of subnets or security
  # groups is not an infrastructure update and running jobs keep running; update_policy
  # (terminate_jobs_on_update, job_execution_timeout_minutes) matters on EC2 and Spot compute
  # environments only (see examples/dynamodb).
  compute_resources {
    type               = "FARGATE"
    max_vcpus          = 64
    subnets            = var.subnet_ids
    security_group_ids = var.security_group_ids
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
    image            = "public.ecr.aws/docker/library/python:3.12"
    command          = ["python", "-c", "print('align')"]
    executionRoleArn = var.execution_role_arn
    resourceRequirements = [
      { type = "VCPU", value = "1" },
      { type = "MEMORY", value = "2048" },
    ]
  })
}

module "jobguard" {
  source = "../.."

  store                = "s3"
  force_destroy        = var.force_destroy
  job_queue_arns       = [aws_batch_job_queue.science.arn]
  job_definition_names = [aws_batch_job_definition.rnaseq.name]
  event_bus_name       = var.event_bus_name

  notification_topic_arns = var.notification_topic_arns

  # Manifests are signed with a KMS HMAC key the module creates (create_signing_key defaults to
  # true); only the role below may use it.
  create_github_role   = true
  create_oidc_provider = true
  github_oidc_subjects = ["repo:${var.github_repository}:environment:production"]
}
