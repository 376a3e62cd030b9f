"""Per-queue and per-job policies from the config file: what drain does with a matching job.

resubmit  terminate, record, resubmit after the deploy (the default)
wait      never terminate: wait up to the grace period; fail the step if it is still running
abandon   terminate and record, never resubmit
app-retries  the application retries its own failed jobs: terminate and record, never resubmit;
          a late job the deploy killed is left to it (see domain/window.py)

A policy that matches a job wins over the default of its workflow engine (domain/engines.py).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

RESUBMIT, WAIT, ABANDON, APP_RETRIES = "resubmit", "wait", "abandon", "app-retries"
ACTIONS = (RESUBMIT, WAIT, ABANDON, APP_RETRIES)
NOT_RESUBMITTED = (ABANDON, APP_RETRIES)  # stopped by drain, never brought back by jobguard


@dataclass(frozen=True)
class Policy:
    """A rule: jobs matching every pattern given get `action`. Patterns are shell-style globs."""

    action: str
    queue: str = "*"
    job_name: str = "*"
    job_definition: str = "*"
    engine: str | None = None  # ENGINE or ENGINE:ROLE (nextflow, nextflow:head); only engine jobs match when given

    def matches(self, queue: str, job_name: str, job_definition: str, engine: str | None = None) -> bool:
        """True when the job matches; `job_definition` is `name:revision` and matches by name too;
        `engine` is ENGINE:ROLE for a workflow engine's job."""
        name = job_definition.rsplit(":", 1)[0]
        return (
            fnmatch.fnmatchcase(queue, self.queue)
            and fnmatch.fnmatchcase(job_name, self.job_name)
            and (fnmatch.fnmatchcase(job_definition, self.job_definition) or fnmatch.fnmatchcase(name, self.job_definition))
            and (self.engine is None or _engine_matches(engine, self.engine))
        )


def _engine_matches(engine: str | None, pattern: str) -> bool:
    return engine is not None and (fnmatch.fnmatchcase(engine, pattern) or fnmatch.fnmatchcase(engine.split(":", 1)[0], pattern))


def chosen_by_policy(policies: tuple[Policy, ...], queue: str, job_name: str, job_definition: str, engine: str | None = None) -> str | None:
    """The action of the first matching policy; None when none matches."""
    return next((p.action for p in policies if p.matches(queue, job_name, job_definition, engine)), None)


def action_for(policies: tuple[Policy, ...], queue: str, job_name: str, job_definition: str) -> str:
    """The action of the first matching policy, else resubmit."""
    return chosen_by_policy(policies, queue, job_name, job_definition) or RESUBMIT
