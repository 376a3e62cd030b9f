"""`jobguard demo`: a whole deploy cycle against a simulated AWS, as a user would see it.

Seeds a queue with running, queued, array and dependent jobs, drains it, registers a new
job-definition revision as a deploy would, restores, and shows where the replacements are.
"""

from __future__ import annotations

import tempfile

from .errors import UsageError
from .report import Reporter

QUEUE = "science-queue"
REVISION_1 = {
    "image": "rnaseq:1.0",
    "command": ["python", "align.py", "Ref::sample"],
    "environment": [{"name": "REFERENCE", "value": "GRCh37"}, {"name": "THREADS", "value": "4"}],
    "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "8192"}],
}
REVISION_2 = {
    **REVISION_1,
    "image": "rnaseq:2.0",
    "environment": [{"name": "REFERENCE", "value": "GRCh38"}, {"name": "THREADS", "value": "8"}],
    "resourceRequirements": [{"type": "VCPU", "value": "8"}, {"type": "MEMORY", "value": "16384"}],
}


def run_demo(report: Reporter) -> int:
    """Run the cycle; 0 when every drained job came back exactly once on the new revision."""
    try:
        from .simulated_aws import Seeder, SimulatedAWS
    except ImportError:
        raise UsageError("the demo needs a simulated AWS", hint="pip install 'jobguard[demo]'") from None
    from .cli import main

    store = f"file://{tempfile.mkdtemp(prefix='jobguard-demo-')}"
    with SimulatedAWS() as aws, aws.environment():
        seed = Seeder(aws)
        report.line(f"== A simulated AWS account ({aws.endpoint}) with queue {QUEUE} and job definition rnaseq:1")
        seed.queue(QUEUE)
        seed.definition("rnaseq", containerProperties=REVISION_1, parameters={"sample": "none"}, retryStrategy={"attempts": 2})
        align = seed.job(
            jobName="align-sample-17",
            jobQueue=QUEUE,
            jobDefinition="rnaseq",
            parameters={"sample": "s3://lab/s17.fastq"},
            containerOverrides={
                "resourceRequirements": [{"type": "MEMORY", "value": "32768"}],
                "environment": [{"name": "PRIORITY_RUN", "value": "yes"}],
            },
        )
        seed.job(
            status="STARTING",
            jobName="align-sample-18",
            jobQueue=QUEUE,
            jobDefinition="rnaseq",
            parameters={"sample": "s3://lab/s18.fastq"},
        )
        seed.job(status="RUNNABLE", jobName="quantify-batch", jobQueue=QUEUE, jobDefinition="rnaseq", arrayProperties={"size": 10})
        seed.job(status="PENDING", jobName="merge-results", jobQueue=QUEUE, jobDefinition="rnaseq", dependsOn=[{"jobId": align}])
        seed.job(status="SUCCEEDED", jobName="align-sample-16", jobQueue=QUEUE, jobDefinition="rnaseq")
        report.line("   4 active jobs (one an array of 10, one waiting on another) and one that already finished\n")

        report.line(f"== Before terraform apply: jobguard drain --store {store} --queue {QUEUE} --deploy-id demo-1")
        codes = [main(["drain", "--store", store, "--queue", QUEUE, "--deploy-id", "demo-1"])]

        report.line("\n== terraform apply (simulated): registers rnaseq:2 with a new image, environment and resources")
        seed.definition("rnaseq", containerProperties=REVISION_2, parameters={"sample": "none"}, retryStrategy={"attempts": 3})

        report.line(f"\n== After terraform apply: jobguard restore --store {store}")
        codes.append(main(["restore", "--store", store]))

        report.line("\n== A second restore submits nothing (exactly once)")
        codes.append(main(["restore", "--store", store]))

        aws.batch.advance()
        aws.batch.advance()
        report.line(f"\n== Batch schedules the replacements: jobguard status --store {store}")
        codes.append(main(["status", "--store", store, "--deploy-id", "demo-1"]))
        return _verdict(report, aws, codes, align, store)


def _verdict(report: Reporter, aws: object, codes: list[int], align: str, store: str) -> int:
    from .simulated_aws import SimulatedAWS

    assert isinstance(aws, SimulatedAWS)
    replacements = [j for j in aws.batch.jobs.values() if j.index is None and "jobguard:original-job-id" in (j.request.get("tags") or {})]
    originals = [r.request["tags"]["jobguard:original-job-id"] for r in replacements]
    exactly_once = len(originals) == len(set(originals)) == 4
    align_replacement = next(aws.batch.detail(r) for r in replacements if r.request["tags"]["jobguard:original-job-id"] == align)
    resources = {r["type"]: r["value"] for r in align_replacement["container"]["resourceRequirements"]}
    revision = align_replacement["jobDefinition"].rsplit("/", 1)[-1]
    report.line(f"\nalign-sample-17 came back on {revision}, image {align_replacement['container']['image']}:")
    report.line(
        f"  kept its own MEMORY ({resources['MEMORY']}) and parameters; took VCPU ({resources['VCPU']}) and the rest from the new revision."
    )
    ok = exactly_once and codes == [0, 0, 0, 0] and align_replacement["jobDefinition"].endswith(":2")
    report.line(
        f"Manifests are in {store}. " + ("Demo complete: every drained job was resubmitted exactly once." if ok else "Demo FAILED.")
    )
    return 0 if ok else 1
