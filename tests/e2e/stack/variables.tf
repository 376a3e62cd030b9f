variable "subnet_ids" {
  description = "Subnets of the EC2 compute environments."
  type        = list(string)
}

variable "fargate_subnet_ids" {
  description = "Subnets of the Fargate compute environment (one case changes them)."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of every compute environment."
  type        = list(string)
}

variable "instance_profile_arn" {
  description = "ECS instance profile of the EC2 compute environments."
  type        = string
}

variable "execution_role_arn" {
  description = "ECS task execution role of the Fargate job definition."
  type        = string
}

variable "release" {
  description = "Image tag and RELEASE variable of the job definitions: a new value registers new revisions."
  type        = string
  default     = "1"
}

variable "replaceable_instance_types" {
  description = "Instance types of the replaceable compute environment: a change replaces it."
  type        = list(string)
  default     = ["m5.large"]
}

variable "ec2_instance_types" {
  description = "Instance types of the EC2 compute environment: a change is an in-place infrastructure update."
  type        = list(string)
  default     = ["m5.large"]
}

variable "ec2_max_vcpus" {
  description = "max_vcpus of the EC2 compute environment: a change only scales it."
  type        = number
  default     = 16
}

variable "renamed_queue_name" {
  description = "Name of the queue one case renames."
  type        = string
  default     = "e2e-old-name"
}

variable "keep_doomed_queue" {
  description = "false deletes the queue e2e-doomed."
  type        = bool
  default     = true
}

variable "unrelated_value" {
  description = "Value of an SSM parameter that has nothing to do with Batch."
  type        = string
  default     = "1"
}
