data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name

  create_bucket = var.store == "s3"
  create_table  = var.store == "dynamodb"

  bucket_name = local.create_bucket ? coalesce(var.bucket_name, "${lower(var.name)}-manifests-${local.account}") : var.existing_bucket_name
  table_name  = local.create_table ? coalesce(var.table_name, "${var.name}-manifests") : var.existing_table_name
  bucket_arn  = local.bucket_name == null ? null : "arn:${local.partition}:s3:::${local.bucket_name}"
  table_arn   = local.table_name == null ? null : "arn:${local.partition}:dynamodb:${local.region}:${local.account}:table/${local.table_name}"

  store_uri = local.bucket_name != null ? "s3://${local.bucket_name}/${var.manifest_prefix}" : (local.table_name != null ? "dynamodb://${local.table_name}" : null)

  # Every revision of each named job definition, and the name alone (resolves to the latest ACTIVE one).
  job_definition_arns = flatten([
    for name in var.job_definition_names : [
      "arn:${local.partition}:batch:${local.region}:${local.account}:job-definition/${name}",
      "arn:${local.partition}:batch:${local.region}:${local.account}:job-definition/${name}:*",
    ]
  ])
  job_arns = "arn:${local.partition}:batch:${local.region}:${local.account}:job/*"
}

# ---------------------------------------------------------------------------------------------
# Manifest store: an S3 bucket ...
# ---------------------------------------------------------------------------------------------
resource "aws_s3_bucket" "manifests" {
  #checkov:skip=CKV_AWS_144:Manifests matter for the hours around one deploy; cross-region replication is the user's choice, not a default.
  #checkov:skip=CKV_AWS_18:Access logging needs a separate log bucket the user owns; CloudTrail data events cover manifest access.
  #checkov:skip=CKV2_AWS_62:Nothing consumes manifest events; jobguard reads the manifests itself.
  count = local.create_bucket ? 1 : 0

  bucket        = local.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "manifests" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.manifests[0].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "manifests" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.manifests[0].id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "manifests" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.manifests[0].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "manifests" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.manifests[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "manifests" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.manifests[0].id

  rule {
    id     = "expire-old-manifests"
    status = "Enabled"

    filter {
      prefix = "${var.manifest_prefix}/"
    }

    expiration {
      days = var.manifest_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.manifests]
}

data "aws_iam_policy_document" "bucket" {
  count = local.create_bucket ? 1 : 0

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.manifests[0].arn, "${aws_s3_bucket.manifests[0].arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "manifests" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.manifests[0].id
  policy = data.aws_iam_policy_document.bucket[0].json

  depends_on = [aws_s3_bucket_public_access_block.manifests]
}

# ---------------------------------------------------------------------------------------------
# ... or a DynamoDB table: one item per job plus one per deploy (pk/sk), expiring on expires_at.
# ---------------------------------------------------------------------------------------------
resource "aws_dynamodb_table" "manifests" {
  #checkov:skip=CKV_AWS_119:A customer managed key is optional (kms_key_arn); without one the table is encrypted with the AWS owned key.
  count = local.create_table ? 1 : 0

  name                        = local.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = !var.force_destroy

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  tags = var.tags
}

# ---------------------------------------------------------------------------------------------
# The policy: exactly what jobguard calls, scoped wherever AWS allows it.
# ---------------------------------------------------------------------------------------------
data "aws_iam_policy_document" "jobguard" {
  statement {
    sid = "ReadBatch"
    # These Batch read actions support no resource-level permissions.
    actions = [
      "batch:DescribeComputeEnvironments",
      "batch:DescribeJobDefinitions",
      "batch:DescribeJobQueues",
      "batch:DescribeJobs",
      "batch:ListJobs",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "TerminateJobs"
    actions   = ["batch:TerminateJob"]
    resources = [local.job_arns]
  }

  statement {
    sid       = "FreezeTheseQueuesDuringTheDeploy"
    actions   = ["batch:UpdateJobQueue"]
    resources = var.job_queue_arns
  }

  statement {
    sid       = "SubmitToTheseQueuesAndDefinitions"
    actions   = ["batch:SubmitJob"]
    resources = concat(var.job_queue_arns, local.job_definition_arns)
  }

  statement {
    sid     = "TagReplacementsOnSubmit"
    actions = ["batch:TagResource"]
    # SubmitJob with tags needs TagResource on the new job; job ARNs are the narrowest scope.
    resources = [local.job_arns]
  }

  dynamic "statement" {
    for_each = local.bucket_arn == null ? [] : [1]
    content {
      sid       = "ReadWriteManifests"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
      resources = ["${local.bucket_arn}/${var.manifest_prefix}/*"]
    }
  }

  dynamic "statement" {
    for_each = local.bucket_arn == null ? [] : [1]
    content {
      sid       = "ListManifests"
      actions   = ["s3:ListBucket"]
      resources = [local.bucket_arn]

      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${var.manifest_prefix}/*", "${var.manifest_prefix}/"]
      }
    }
  }

  dynamic "statement" {
    for_each = local.table_arn == null ? [] : [1]
    content {
      sid = "ReadWriteManifestTable"
      actions = [
        "dynamodb:ConditionCheckItem",
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
      ]
      resources = [local.table_arn]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [1]
    content {
      sid       = "UseTheStoreKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${local.region}.amazonaws.com", "dynamodb.${local.region}.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.notification_topic_arns) == 0 ? [] : [1]
    content {
      sid       = "NotifyUsers"
      actions   = ["sns:Publish"]
      resources = var.notification_topic_arns
    }
  }
}

resource "aws_iam_policy" "jobguard" {
  name        = var.name
  description = "jobguard: drain AWS Batch jobs before a deploy and resubmit them after"
  policy      = data.aws_iam_policy_document.jobguard.json
  tags        = var.tags
}

# ---------------------------------------------------------------------------------------------
# Optional: a role GitHub Actions assumes through OIDC.
# ---------------------------------------------------------------------------------------------
resource "aws_iam_openid_connect_provider" "github" {
  count = var.create_github_role && var.create_oidc_provider ? 1 : 0

  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
  tags           = var.tags
}

locals {
  oidc_provider_arn = var.create_oidc_provider ? one(aws_iam_openid_connect_provider.github[*].arn) : var.oidc_provider_arn
}

data "aws_iam_policy_document" "trust" {
  count = var.create_github_role ? 1 : 0

  statement {
    sid     = "GitHubActionsOIDC"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringLike"
      variable = "token.actions.githubusercontent.com:sub"
      values   = var.github_oidc_subjects
    }
  }
}

resource "aws_iam_role" "github" {
  count = var.create_github_role ? 1 : 0

  name                 = var.name
  description          = "Assumed by GitHub Actions (OIDC) to run jobguard"
  assume_role_policy   = data.aws_iam_policy_document.trust[0].json
  max_session_duration = var.role_max_session_duration
  permissions_boundary = var.role_permissions_boundary
  tags                 = var.tags

  lifecycle {
    precondition {
      condition     = length(var.github_oidc_subjects) > 0
      error_message = "create_github_role needs a non-empty github_oidc_subjects: the role must trust named repositories only."
    }
    precondition {
      condition     = var.create_oidc_provider || var.oidc_provider_arn != null
      error_message = "create_github_role needs create_oidc_provider = true or an oidc_provider_arn."
    }
  }
}

resource "aws_iam_role_policy_attachment" "github" {
  count = var.create_github_role ? 1 : 0

  role       = aws_iam_role.github[0].name
  policy_arn = aws_iam_policy.jobguard.arn
}
