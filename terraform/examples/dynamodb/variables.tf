variable "region" {
  description = "AWS region of the Batch resources and of jobguard's store."
  type        = string
  default     = "us-east-1"
}

variable "subnet_ids" {
  description = "Subnets for the EC2 compute environment's instances."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups for the EC2 compute environment's instances."
  type        = list(string)
}

variable "instance_profile_arn" {
  description = "ARN of the ECS instance profile of the compute environment's instances (its role has AmazonEC2ContainerServiceforEC2Role)."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the account's existing token.actions.githubusercontent.com OIDC provider."
  type        = string
}

variable "github_repository" {
  description = "ORG/REPO whose main branch deploys this stack (the role trusts repo:ORG/REPO:ref:refs/heads/main)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be ORG/REPO."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete the manifest table (turns off its deletion protection). Keep false in production."
  type        = bool
  default     = false
}
