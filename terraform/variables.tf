variable "name" {
  description = "Name of the IAM policy and role, and the default name of the bucket or table."
  type        = string
  default     = "jobguard"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,48}$", var.name))
    error_message = "name must be 1-48 characters of letters, digits and +=,.@_-."
  }
}

variable "store" {
  description = "Manifest store to create: \"s3\" (a bucket), \"dynamodb\" (a table), or \"none\" to bring an existing store (existing_bucket_name or existing_table_name)."
  type        = string
  default     = "s3"

  validation {
    condition     = contains(["s3", "dynamodb", "none"], var.store)
    error_message = "store must be one of s3, dynamodb or none."
  }
}

variable "bucket_name" {
  description = "Name of the manifest bucket to create (store = \"s3\"). Default: NAME-manifests-ACCOUNT_ID."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit."
  }
}

variable "manifest_prefix" {
  description = "Key prefix of the manifests in the bucket; jobguard's store URI is s3://BUCKET/PREFIX."
  type        = string
  default     = "manifests"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.manifest_prefix))
    error_message = "manifest_prefix must be a non-empty S3 key prefix without leading or trailing slashes."
  }
}

variable "table_name" {
  description = "Name of the manifest table to create (store = \"dynamodb\"). Default: NAME-manifests."
  type        = string
  default     = null

  validation {
    condition     = var.table_name == null || can(regex("^[A-Za-z0-9_.-]{3,255}$", var.table_name))
    error_message = "table_name must be 3-255 letters, digits, underscores, dots or hyphens."
  }
}

variable "existing_bucket_name" {
  description = "store = \"none\": an existing manifest bucket jobguard should use (the policy grants objects under manifest_prefix and s3:ListBucket on the bucket)."
  type        = string
  default     = null
}

variable "existing_table_name" {
  description = "store = \"none\": an existing manifest table jobguard should use."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "Customer managed KMS key for the bucket or table. null: SSE-KMS with the AWS managed key (bucket) or the AWS owned key (table)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "manifest_retention_days" {
  description = "Days after which the S3 store's objects expire (lifecycle expiry, counted from each object's last write: restore a deploy within this many days of its drain, or its pages of records may be gone). The DynamoDB store's TTL is not set here: jobguard writes expires_at 90 days after each manifest was made."
  type        = number
  default     = 90

  validation {
    condition     = var.manifest_retention_days >= 1
    error_message = "manifest_retention_days must be at least 1."
  }
}

variable "noncurrent_version_days" {
  description = "Days after which noncurrent versions of manifests are deleted (S3)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete the store with manifests in it: force_destroy on the bucket, no deletion protection on the table."
  type        = bool
  default     = false
}

variable "job_queue_arns" {
  description = "ARNs of the job queues jobguard drains, freezes and resubmits to. SubmitJob and UpdateJobQueue are allowed on these only; their names are the queue_names output (the action's queues input)."
  type        = list(string)

  validation {
    condition     = length(var.job_queue_arns) > 0 && alltrue([for arn in var.job_queue_arns : can(regex("^arn:aws[a-z-]*:batch:[a-z0-9-]+:[0-9]{12}:job-queue/[A-Za-z0-9_-]+$", arn))])
    error_message = "job_queue_arns must be a non-empty list of job queue ARNs (arn:aws:batch:REGION:ACCOUNT:job-queue/NAME), without wildcards."
  }
}

variable "job_definition_names" {
  description = "Names (without revision) of the job definitions jobguard may resubmit with. SubmitJob is allowed on every revision of these (NAME:*) only."
  type        = list(string)

  validation {
    condition     = length(var.job_definition_names) > 0 && alltrue([for name in var.job_definition_names : can(regex("^[A-Za-z0-9_-]{1,128}$", name))])
    error_message = "job_definition_names must be a non-empty list of job definition names (letters, digits, _ and -; no revision, no wildcard)."
  }
}

variable "create_signing_key" {
  description = "Create a KMS HMAC key (HMAC_256, GENERATE_VERIFY_MAC) that signs and verifies manifests; only the GitHub role and signing_key_user_arns may use it. Ignored when signing_key_arn is set."
  type        = bool
  default     = true
}

variable "signing_key_arn" {
  description = "ARN of your own KMS HMAC key for manifest signing, instead of creating one; the policy grants kms:GenerateMac and kms:VerifyMac on it (its key policy is yours to write)."
  type        = string
  default     = null

  validation {
    condition     = var.signing_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.signing_key_arn))
    error_message = "signing_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "signing_key_user_arns" {
  description = "IAM principals (role or user ARNs), besides the GitHub role, that run jobguard and may use the created signing key. Required when the module creates the key without create_github_role."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.signing_key_user_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+$", arn))])
    error_message = "signing_key_user_arns must be IAM role or user ARNs (arn:aws:iam::ACCOUNT:role/NAME)."
  }
}

variable "signing_key_deletion_window_days" {
  description = "Waiting period, in days (7-30), before KMS deletes the created signing key after terraform destroy."
  type        = number
  default     = 30

  validation {
    condition     = var.signing_key_deletion_window_days >= 7 && var.signing_key_deletion_window_days <= 30
    error_message = "signing_key_deletion_window_days must be between 7 and 30."
  }
}

variable "event_bus_name" {
  description = "Name of the EventBridge bus jobguard publishes deploy events to (events:PutEvents on that bus only). null: no events."
  type        = string
  default     = null

  validation {
    condition     = var.event_bus_name == null || can(regex("^[A-Za-z0-9._/-]{1,256}$", var.event_bus_name))
    error_message = "event_bus_name must be an event bus name (letters, digits, . _ - /), not an ARN."
  }
}

variable "notification_topic_arns" {
  description = "SNS topics jobguard may publish drain and restore summaries to (--notify sns:ARN)."
  type        = list(string)
  default     = []
}

variable "create_github_role" {
  description = "Create an IAM role for GitHub Actions (OIDC) with the jobguard policy attached."
  type        = bool
  default     = false
}

variable "create_oidc_provider" {
  description = "Create the token.actions.githubusercontent.com OIDC provider. false: use oidc_provider_arn (one provider per account)."
  type        = bool
  default     = false
}

variable "oidc_provider_arn" {
  description = "ARN of an existing GitHub OIDC provider, when create_oidc_provider is false."
  type        = string
  default     = null
}

variable "github_oidc_subjects" {
  description = "Subjects the role trusts, e.g. repo:ORG/REPO:environment:production or repo:ORG/REPO:ref:refs/heads/main. Required (non-empty) with create_github_role."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for subject in var.github_oidc_subjects : can(regex("^repo:[A-Za-z0-9_.-]+/[A-Za-z0-9_.*-]+:.+$", subject))])
    error_message = "Each github_oidc_subjects entry must look like repo:ORG/REPO:environment:NAME or repo:ORG/REPO:ref:refs/heads/BRANCH; a bare '*' is not allowed."
  }
}

variable "role_max_session_duration" {
  description = "Maximum session duration of the GitHub role, in seconds (3600-43200)."
  type        = number
  default     = 3600

  validation {
    condition     = var.role_max_session_duration >= 3600 && var.role_max_session_duration <= 43200
    error_message = "role_max_session_duration must be between 3600 and 43200 seconds."
  }
}

variable "role_permissions_boundary" {
  description = "ARN of a permissions boundary for the GitHub role, if your account requires one."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource the module creates."
  type        = map(string)
  default     = {}
}
