"""Whether Batch itself runs a started job again when the instance under it goes away.

Where the apply only takes instances away (domain/plan.py, `instances_only`), a STARTING or RUNNING
job whose retryStrategy retries that failure is not lost: Batch puts it back RUNNABLE, under the
same job id, and runs it on the environments its queue has after the apply ("Automated job
retries", AWS Batch user guide: with no evaluateOnExit rule matching, a failed attempt is retried
while attempts are left). Stopping it instead turns that free retry into a stop and a resubmission,
and for a workflow engine's task it spends one of the engine's own retries (Nextflow asks Batch to
retry `Host EC2*` attempts, aws.batch.maxSpotAttempts, exactly for this).

The judgement is conservative (a rule whose other conditions cannot be judged here counts as no
retry), and it does not have to be perfect: a job left running that Batch did not retry after all
ends FAILED with `Host EC2 (instance ...) terminated.`, and restore's sweep of the deploy window
resubmits it once, as it does a queued job that started on the old instances.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

# Batch's statusReason when a job's instance is terminated (domain/window.py matches it as HOST_TERMINATED).
HOST_LOST = "Host EC2 (instance i-0123456789abcdef0) terminated."


def retried_by_batch(job: Mapping[str, Any]) -> bool:
    """True when the JobDetail's own retryStrategy has Batch run it again if its host goes away now."""
    if (job.get("arrayProperties") or {}).get("size") or job.get("nodeProperties"):
        return False  # a parent: its children's attempts are their own, not shown here
    strategy = job.get("retryStrategy")
    if not isinstance(strategy, Mapping):
        return False
    attempts = strategy.get("attempts")
    done = len(job.get("attempts") or [])  # attempts that ended; the one running now is the next
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts <= done + 1:
        return False
    for rule in strategy.get("evaluateOnExit") or []:
        if not isinstance(rule, Mapping):
            return False
        status = rule.get("onStatusReason")
        if status is not None and not fnmatch.fnmatchcase(HOST_LOST, str(status)):
            continue  # this rule is about another failure
        if any(rule.get(key) not in (None, "*") for key in ("onReason", "onExitCode")):
            return False  # what Batch puts in the container's reason and exit code then is not documented
        return str(rule.get("action", "")).upper() == "RETRY"
    return True  # no rule matches: Batch retries while attempts are left
