variable "region" {
  description = "AWS region of the Batch resources and of jobguard's store."
  type        = string
  default     = "us-east-1"
}

variable "subnet_ids" {
  description = "Subnets for the Fargate compute environment."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups for the Fargate compute environment."
  type        = list(string)
}

variable "execution_role_arn" {
  description = "ECS task execution role of the job definition (Fargate jobs pull their image and write logs with it)."
  type        = string
}

variable "github_repository" {
  description = "ORG/REPO whose production environment deploys this stack (the role trusts repo:ORG/REPO:environment:production)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be ORG/REPO."
  }
}

variable "event_bus_name" {
  description = "EventBridge bus jobguard publishes deploy events to, e.g. \"default\"; null: none."
  type        = string
  default     = null
}

variable "notification_topic_arns" {
  description = "SNS topics jobguard may publish drain and restore summaries to (the action's notify input, sns:ARN)."
  type        = list(string)
  default     = []
}

variable "force_destroy" {
  description = "Let terraform destroy delete the manifest bucket with the manifests in it. Keep false in production."
  type        = bool
  default     = false
}
