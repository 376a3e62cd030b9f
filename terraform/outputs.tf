# Every output reads the resources it describes (never a name computed beforehand), and waits for
# the resources that make them usable: a consumer of module.jobguard.bucket_name is created only
# once the bucket exists with its encryption, versioning, public access block and policy.

output "store_uri" {
  description = "The manifest store in jobguard's own syntax (s3://BUCKET/PREFIX or dynamodb://TABLE): the action's `store` input."
  value       = local.store_uri

  depends_on = [
    aws_s3_bucket_ownership_controls.manifests,
    aws_s3_bucket_public_access_block.manifests,
    aws_s3_bucket_versioning.manifests,
    aws_s3_bucket_server_side_encryption_configuration.manifests,
    aws_s3_bucket_lifecycle_configuration.manifests,
    aws_s3_bucket_policy.manifests,
  ]
}

output "bucket_name" {
  description = "Name of the manifest bucket, if the store is S3."
  value       = local.bucket_name

  depends_on = [
    aws_s3_bucket_ownership_controls.manifests,
    aws_s3_bucket_public_access_block.manifests,
    aws_s3_bucket_versioning.manifests,
    aws_s3_bucket_server_side_encryption_configuration.manifests,
    aws_s3_bucket_lifecycle_configuration.manifests,
    aws_s3_bucket_policy.manifests,
  ]
}

output "bucket_arn" {
  description = "ARN of the manifest bucket, if the store is S3."
  value       = local.bucket_arn

  depends_on = [
    aws_s3_bucket_ownership_controls.manifests,
    aws_s3_bucket_public_access_block.manifests,
    aws_s3_bucket_versioning.manifests,
    aws_s3_bucket_server_side_encryption_configuration.manifests,
    aws_s3_bucket_lifecycle_configuration.manifests,
    aws_s3_bucket_policy.manifests,
  ]
}

output "table_name" {
  description = "Name of the manifest table, if the store is DynamoDB."
  value       = local.table_name
}

output "table_arn" {
  description = "ARN of the manifest table, if the store is DynamoDB."
  value       = local.table_arn
}

output "queue_names" {
  description = "Names of the job queues of job_queue_arns: the action's `queues` input (join them with commas or newlines)."
  value       = local.queue_names
}

output "signing_key_arn" {
  description = "ARN of the KMS HMAC key that signs manifests (created, or signing_key_arn), if any."
  value       = local.signing_key_arn
}

output "signing_key" {
  description = "The signing key in the action's input form, kms:ARN, if any."
  value       = local.signing ? "kms:${local.signing_key_arn}" : null
}

output "event_bus_arn" {
  description = "ARN of the EventBridge bus jobguard may publish to (event_bus_name), if any: the action's `event-bus` input."
  value       = local.event_bus_arn
}

output "policy_arn" {
  description = "ARN of the IAM policy with exactly the permissions jobguard needs."
  value       = aws_iam_policy.jobguard.arn
}

output "policy_json" {
  description = "The policy document, to attach elsewhere or review."
  value       = aws_iam_policy.jobguard.policy
}

output "role_arn" {
  description = "ARN of the GitHub Actions role (the role-to-assume of aws-actions/configure-aws-credentials), if created; available once the policy is attached and the signing key exists."
  value       = one(aws_iam_role.github[*].arn)

  depends_on = [aws_iam_role_policy_attachment.github, aws_kms_key.signing]
}

output "role_name" {
  description = "Name of the GitHub Actions role, if created."
  value       = one(aws_iam_role.github[*].name)

  depends_on = [aws_iam_role_policy_attachment.github]
}

output "oidc_provider_arn" {
  description = "ARN of the GitHub OIDC provider the role trusts, if a role was created."
  value       = var.create_github_role ? local.oidc_provider_arn : null
}
