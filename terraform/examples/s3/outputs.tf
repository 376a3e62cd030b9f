# Wire these into the workflow: role-to-assume, and the action's store, queues and signing-key inputs.

output "role_arn" {
  description = "role-to-assume for aws-actions/configure-aws-credentials."
  value       = module.jobguard.role_arn
}

output "store" {
  description = "The jobguard action's store input (s3://BUCKET/PREFIX)."
  value       = module.jobguard.store_uri
}

output "queues" {
  description = "The jobguard action's queues input (comma-separated queue names)."
  value       = join(",", module.jobguard.queue_names)
}

output "signing_key" {
  description = "The jobguard action's signing-key input (kms:ARN of the HMAC key)."
  value       = module.jobguard.signing_key
}

output "event_bus" {
  description = "The jobguard action's event-bus input (the bus's ARN), if event_bus_name is set."
  value       = module.jobguard.event_bus_arn
}

output "policy_json" {
  description = "The jobguard IAM policy document, as attached to the role."
  value       = module.jobguard.policy_json
}
