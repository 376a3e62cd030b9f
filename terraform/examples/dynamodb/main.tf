# jobguard with a DynamoDB manifest store encrypted with a customer managed key, reusing an
# existing GitHub OIDC provider, next to an EC2 compute environment.

provider "aws" {
  region = var.region
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

resource "aws_kms_key" "store" {
  description         = "jobguard manifest table"
  enable_key_rotation = true
}

resource "aws_kms_key_policy" "store" {
  key_id = aws_kms_key.store.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministersTheKey"
      Effect    = "Allow"
      Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

resource "aws_batch_compute_environment" "etl" {
  # A name prefix with create_before_destroy: a replacement is created, the queue moves to it,
  # and only then is the old one destroyed.
  compute_environment_name_prefix = "etl-"
  type                            = "MANAGED"

  compute_resources {
    type               = "EC2"
    min_vcpus          = 0
    max_vcpus          = 256
    instance_type      = ["optimal"]
    instance_role      = var.instance_profile_arn
    subnets            = var.subnet_ids
    security_group_ids = var.security_group_ids
  }

  # An in-place infrastructure update (AMI, launch template, instance types, subnets, ...) lets
  # running jobs finish, for up to 4 hours (the provider allows 1-360 minutes), instead of
  # terminating them.
  update_policy {
    terminate_jobs_on_update      = false
    job_execution_timeout_minutes = 240
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_batch_job_queue" "etl" {
  # A queue's name forces replacement: keep it stable, and jobguard resubmits by name.
  name     = "etl-queue"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.etl.arn
  }
}

resource "aws_batch_job_definition" "load" {
  name = "nightly-load"
  type = "container"

  # Queued jobs may still reference older revisions: keep them ACTIVE when a new one is registered.
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
  force_destroy        = var.force_destroy
  kms_key_arn          = aws_kms_key.store.arn
  job_queue_arns       = [aws_batch_job_queue.etl.arn]
  job_definition_names = [aws_batch_job_definition.load.name]

  # Manifests are signed with a KMS HMAC key the module creates (create_signing_key defaults to
  # true); only the role below may use it.
  create_github_role   = true
  oidc_provider_arn    = var.oidc_provider_arn
  github_oidc_subjects = ["repo:${var.github_repository}:ref:refs/heads/main"]
}
