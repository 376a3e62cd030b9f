"""Per-queue and per-job policies from the config file: what drain does with a matching job.

resubmit  terminate, record, resubmit after the deploy (the default)
wait      never terminate: wait up to the grace period; fail the step if it is still running
abandon   terminate and record, never resubmit
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

RESUBMIT, WAIT, ABANDON = "resubmit", "wait", "abandon"
ACTIONS = (RESUBMIT, WAIT, ABANDON)


@dataclass(frozen=True)
class Policy:
    """A rule: jobs matching every pattern given get `action`. Patterns are shell-style globs."""

    action: str
    queue: str = "*"
    job_name: str = "*"
    job_definition: str = "*"

    def matches(self, queue: str, job_name: str, job_definition: str) -> bool:
        """True when the job matches; `job_definition` is `name:revision` and matches by name too."""
        name = job_definition.rsplit(":", 1)[0]
        return (
            fnmatch.fnmatchcase(queue, self.queue)
            and fnmatch.fnmatchcase(job_name, self.job_name)
            and (fnmatch.fnmatchcase(job_definition, self.job_definition) or fnmatch.fnmatchcase(name, self.job_definition))
        )


def action_for(policies: tuple[Policy, ...], queue: str, job_name: str, job_definition: str) -> str:
    """The action of the first matching policy, else resubmit."""
    return next((p.action for p in policies if p.matches(queue, job_name, job_definition)), RESUBMIT)
