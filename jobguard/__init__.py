"""jobguard: drain AWS Batch jobs before a deploy and resubmit them after, exactly once."""

__version__ = "1.0.0"
