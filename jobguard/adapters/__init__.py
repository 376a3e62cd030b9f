"""Adapters between jobguard's commands and AWS: Batch and the manifest stores."""
