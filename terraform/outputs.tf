output "store_uri" {
  description = "The manifest store in jobguard's own syntax (s3://BUCKET/PREFIX or dynamodb://TABLE): the action's `store` input."
  value       = local.store_uri
}

output "bucket_name" {
  description = "Name of the manifest bucket, if the store is S3."
  value       = local.bucket_name
}

output "bucket_arn" {
  description = "ARN of the manifest bucket, if the store is S3."
  value       = local.bucket_arn
}

output "table_name" {
  description = "Name of the manifest table, if the store is DynamoDB."
  value       = local.table_name
}

output "table_arn" {
  description = "ARN of the manifest table, if the store is DynamoDB."
  value       = local.table_arn
}

output "policy_arn" {
  description = "ARN of the IAM policy with exactly the permissions jobguard needs."
  value       = aws_iam_policy.jobguard.arn
}

output "policy_json" {
  description = "The policy document, to attach elsewhere or review."
  value       = data.aws_iam_policy_document.jobguard.json
}

output "role_arn" {
  description = "ARN of the GitHub Actions role (the role-to-assume of aws-actions/configure-aws-credentials), if created."
  value       = one(aws_iam_role.github[*].arn)
}

output "role_name" {
  description = "Name of the GitHub Actions role, if created."
  value       = one(aws_iam_role.github[*].name)
}

output "oidc_provider_arn" {
  description = "ARN of the GitHub OIDC provider the role trusts, if a role was created."
  value       = var.create_github_role ? local.oidc_provider_arn : null
}
