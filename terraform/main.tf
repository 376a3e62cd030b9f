data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name

  create_bucket = var.store == "s3"
  create_table  = var.store == "dynamodb"
  s3_store      = local.create_bucket || (var.store == "none" && var.existing_bucket_name != null)
  table_store   = local.create_table || (var.store == "none" && var.existing_table_name != null)

  # Names of the store to create; everything else reads the created resources (below), so that
  # whatever uses them, in this module or through its outputs, waits for the store to exist.
  new_bucket_name = coalesce(var.bucket_name, "${lower(var.name)}-manifests-${local.account}")
  new_table_name  = coalesce(var.table_name, "${var.name}-manifests")

  bucket_name = local.create_bucket ? one(aws_s3_bucket.manifests[*].id) : (local.s3_store ? var.existing_bucket_name : null)
  bucket_arn  = local.create_bucket ? one(aws_s3_bucket.manifests[*].arn) : (local.s3_store ? "arn:${local.partition}:s3:::${var.existing_bucket_name}" : null)
  table_name  = local.create_table ? one(aws_dynamodb_table.manifests[*].name) : (local.table_store ? var.existing_table_name : null)
  table_arn   = local.create_table ? one(aws_dynamodb_table.manifests[*].arn) : (local.table_store ? "arn:${local.partition}:dynamodb:${local.region}:${local.account}:table/${var.existing_table_name}" : null)

  store_uri = local.s3_store ? "s3://${local.bucket_name}/${var.manifest_prefix}" : (local.table_store ? "dynamodb://${local.table_name}" : null)

  queue_names = [for arn in var.job_queue_arns : element(split("/", arn), 1)]

  # Every revision of each named job definition. jobguard always submits NAME:REVISION (it resolves
  # the newest ACTIVE revision itself), never the bare name, so job-definition/NAME is not granted.
  job_definition_arns = [
    for name in var.job_definition_names : "arn:${local.partition}:batch:${local.region}:${local.account}:job-definition/${name}:*"
  ]
  # Every job in this account and region: TerminateJob and TagResource cannot be scoped by queue.
  job_arns = "arn:${local.partition}:batch:${local.region}:${local.account}:job/*"

  event_bus_arn = var.event_bus_name == null ? null : "arn:${local.partition}:events:${local.region}:${local.account}:event-bus/${var.event_bus_name}"

  # Manifest signing: the module's HMAC key unless one is brought (signing_key_arn).
  create_signing_key = var.create_signing_key && var.signing_key_arn == null
  signing            = local.create_signing_key || var.signing_key_arn != null
  signing_key_arn    = local.create_signing_key ? one(aws_kms_key.signing[*].arn) : var.signing_key_arn
  signing_key_users  = concat(aws_iam_role.github[*].arn, var.signing_key_user_arns)
}

# ---------------------------------------------------------------------------------------------
# Manifest store: an S3 bucket ...
# ---------------------------------------------------------------------------------------------
resource "aws_s3_bucket" "manifests" {
  #checkov:skip=CKV_AWS_144:Manifests matter for the hours around one deploy; cross-region replication is the user's choice, not a default.
  #checkov:skip=CKV_AWS_18:Access logging needs a separate log bucket the user owns; CloudTrail data events cover manifest access.
  #checkov:skip=CKV2_AWS_62:Nothing consumes manifest events; jobguard reads the manifests itself.
  count = local.create_bucket ? 1 : 0

  bucket        = local.new_bucket_name
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

  name                        = local.new_table_name
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
# The manifest signing key: an HMAC key that only jobguard's principals may use.
# ---------------------------------------------------------------------------------------------
data "aws_iam_policy_document" "signing_key" {
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" is this key alone; writes are limited to administering it.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" is this key alone, the narrowest a key policy can name.
  #checkov:skip=CKV_AWS_109:Key administration (kms:Put*, Create*) is by the account, as in AWS's default key policy; use (GenerateMac, VerifyMac) only by jobguard's principals.
  count = local.create_signing_key ? 1 : 0

  statement {
    sid = "AccountAdministersTheKey"
    # Administration only (the actions of AWS's default key-administrator statement): no
    # kms:GenerateMac or kms:VerifyMac, so no IAM policy in the account can hand out their use.
    actions = [
      "kms:CancelKeyDeletion",
      "kms:Create*",
      "kms:Delete*",
      "kms:Describe*",
      "kms:Disable*",
      "kms:Enable*",
      "kms:Get*",
      "kms:List*",
      "kms:Put*",
      "kms:Revoke*",
      "kms:ScheduleKeyDeletion",
      "kms:TagResource",
      "kms:UntagResource",
      "kms:Update*",
    ]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }

  statement {
    sid       = "OnlyJobguardSignsAndVerifies"
    actions   = ["kms:GenerateMac", "kms:VerifyMac"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = local.signing_key_users
    }
  }

  lifecycle {
    precondition {
      condition     = length(var.signing_key_user_arns) > 0 || var.create_github_role
      error_message = "The signing key needs a principal that may use it: create_github_role = true or signing_key_user_arns (or create_signing_key = false, or signing_key_arn)."
    }
  }
}

resource "aws_kms_key" "signing" {
  #checkov:skip=CKV_AWS_7:AWS KMS rotates symmetric encryption keys only; an HMAC_256 key cannot have automatic rotation.
  count = local.create_signing_key ? 1 : 0

  description              = "${var.name}: signs and verifies jobguard manifests (HMAC)"
  customer_master_key_spec = "HMAC_256"
  key_usage                = "GENERATE_VERIFY_MAC"
  deletion_window_in_days  = var.signing_key_deletion_window_days
  policy                   = data.aws_iam_policy_document.signing_key[0].json
  tags                     = var.tags
}

resource "aws_kms_alias" "signing" {
  count = local.create_signing_key ? 1 : 0

  name          = "alias/${var.name}-manifest-signing"
  target_key_id = aws_kms_key.signing[0].key_id
}

# ---------------------------------------------------------------------------------------------
# The policy: exactly what jobguard calls, scoped wherever AWS allows it.
# ---------------------------------------------------------------------------------------------
data "aws_iam_policy_document" "jobguard" {
  statement {
    sid = "ReadBatch"
    # These Batch read actions support no resource-level permissions: * is the only scope.
    actions = [
      "batch:DescribeJobDefinitions",
      "batch:DescribeJobQueues",
      "batch:DescribeJobs",
      "batch:ListJobs",
    ]
    resources = ["*"]
  }

  statement {
    sid = "TerminateJobsInThisAccountAndRegion"
    # TerminateJob is authorised on the job ARN, which names no queue: this grant covers EVERY job
    # in this account and region. jobguard itself terminates only jobs on the queues it is given
    # (the action passes queue_names); IAM cannot enforce that.
    actions   = ["batch:TerminateJob"]
    resources = [local.job_arns]
  }

  statement {
    sid       = "FreezeTheseQueuesDuringTheDeploy"
    actions   = ["batch:UpdateJobQueue"]
    resources = var.job_queue_arns
  }

  statement {
    sid = "SubmitToTheseQueuesAndDefinitions"
    # SubmitJob is authorised on the queue and on the job definition revision it names (NAME:REVISION).
    actions   = ["batch:SubmitJob"]
    resources = concat(var.job_queue_arns, local.job_definition_arns)
  }

  statement {
    sid = "TagReplacementsOnSubmit"
    # SubmitJob with tags (tag-on-create) needs TagResource on the new job, whose ARN is not known
    # before: job/* of this account and region is the narrowest scope. jobguard never tags an
    # existing job.
    actions   = ["batch:TagResource"]
    resources = [local.job_arns]
  }

  dynamic "statement" {
    for_each = local.s3_store ? [1] : []
    content {
      sid = "ReadWriteManifests"
      # PREFIX/<deploy>.json (a manifest head), PREFIX/pages/<deploy>/* (its pages), PREFIX/leases/<queue>.json,
      # PREFIX/submitted/<queue>.json and PREFIX/open/<deploy>.json; writes are
      # conditional (If-Match / If-None-Match), which needs no more than s3:PutObject.
      actions   = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
      resources = ["${local.bucket_arn}/${var.manifest_prefix}/*"]
    }
  }

  dynamic "statement" {
    for_each = local.s3_store ? [1] : []
    content {
      sid = "ListManifests"
      # Deliberately without an s3:prefix condition. S3 answers GetObject of a missing key with 404
      # only to a caller that may s3:ListBucket on the bucket, evaluated with no s3:prefix in the
      # request; under an s3:prefix condition it answers 403, and jobguard's first drain (whose
      # manifest does not exist yet) would fail. jobguard lists PREFIX/ and PREFIX/open/ only.
      actions   = ["s3:ListBucket"]
      resources = [local.bucket_arn]
    }
  }

  dynamic "statement" {
    for_each = local.table_store ? [1] : []
    content {
      sid = "ReadWriteManifestTable"
      # TransactWriteItems is authorised per contained operation: jobguard's transactions hold
      # (conditional) Puts only. It never updates an item in place, and never sends ConditionCheck.
      actions = [
        "dynamodb:BatchGetItem",
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
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
    for_each = local.signing ? [1] : []
    content {
      sid       = "SignAndVerifyManifests"
      actions   = ["kms:GenerateMac", "kms:VerifyMac"]
      resources = [local.signing_key_arn]
    }
  }

  dynamic "statement" {
    for_each = var.event_bus_name == null ? [] : [1]
    content {
      sid       = "PublishDeployEvents"
      actions   = ["events:PutEvents"]
      resources = [local.event_bus_arn]
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
