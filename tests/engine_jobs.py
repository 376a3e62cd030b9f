"""Batch jobs shaped as each workflow engine submits them, taken from the engine's own code.

Each case is the RegisterJobDefinition request the engine (or, for a head job, the reference
template) sends and the SubmitJob request it sends for one job, with the source they were read
from. Values the engine computes at run time (hashes, uuids, ids) are fixed stand-ins; the
shape, names, parameters, tags, environment and retry strategy are the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
ROLE = "arn:aws:iam::123456789012:role/engine-jobs"


@dataclass(frozen=True)
class EngineJob:
    """One job as an engine submits it, and what jobguard must recognise it as."""

    key: str
    engine: str | None  # None: an engine whose jobs carry no mark of it (a config rule recognises them)
    role: str | None
    definition: Json
    submit: Json  # without jobQueue
    source: str
    config_rule: Json = field(default_factory=dict)  # the .jobguard.yml rule that recognises it, when no built-in one does


NEXTFLOW_TASK = EngineJob(
    key="nextflow-task",
    engine="nextflow",
    role="task",
    source="nextflow-io/nextflow plugins/nf-amazon/src/main/nextflow/cloud/aws/batch/AwsBatchTaskHandler.groovy "
    "(configJobDefRequest, makeJobDefRequest, createJobDef, newSubmitRequest, getEnvironmentVars)",
    definition={
        "jobDefinitionName": "nf-quay-io-nextflow-rnaseq-nf-v1-2-1",  # "nf-" + the image with [^a-zA-Z0-9-_]+ made "-"
        "type": "container",
        "parameters": {"nf-token": "5c4ba7bc4e0a7d9c35c3fb1c5e1f9e52"},
        "containerProperties": {
            "image": "quay.io/nextflow/rnaseq-nf:v1.2.1",
            "command": ["true"],  # the real command comes with each job
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "1024"}],
            "jobRoleArn": ROLE,
        },
        "tags": {"nextflow.io/createdAt": "2026-12-07T06:00:00Z", "nextflow.io/version": "24.10.0"},
    },
    submit={
        "jobName": "RNASEQ_FASTQC_ggal_gut",  # the task name with [^a-zA-Z0-9_-] removed
        "jobDefinition": "nf-quay-io-nextflow-rnaseq-nf-v1-2-1",
        "tags": {"project": "rnaseq"},  # process resourceLabels
        "propagateTags": True,
        "retryStrategy": {
            "attempts": 5,  # aws.batch.maxSpotAttempts
            "evaluateOnExit": [{"action": "RETRY", "onStatusReason": "Host EC2*"}, {"action": "EXIT", "onReason": "*"}],
        },
        "timeout": {"attemptDurationSeconds": 3600},
        "containerOverrides": {
            "command": ["bash", "-o", "pipefail", "-c", 'trap "{ ret=$?; exit $ret; }" EXIT; bash .command.run 2>&1 | tee .command.log'],
            "resourceRequirements": [{"type": "MEMORY", "value": "2048"}, {"type": "VCPU", "value": "2"}],
            "environment": [{"name": "AWS_RETRY_MODE", "value": "standard"}, {"name": "AWS_MAX_ATTEMPTS", "value": "5"}],
        },
    },
)

NEXTFLOW_TOWER_TASK = EngineJob(
    key="nextflow-task-platform",
    engine="nextflow",
    role="task",
    source="nextflow-io/nextflow TaskHandler.prependWorkflowPrefix: tw-TOWER_WORKFLOW_ID- before the task name",
    definition=NEXTFLOW_TASK.definition,
    submit={**NEXTFLOW_TASK.submit, "jobName": "tw-4Bi5xBK6E2Nbhj-RNASEQ_QUANT_ggal_liver"},
)

NEXTFLOW_HEAD = EngineJob(
    key="nextflow-head",
    engine="nextflow",
    role="head",
    source="aws-samples/aws-genomics-workflows src/templates/nextflow/nextflow-resources.template.yaml "
    "(BatchNextflowJobDefinition) and src/containers/nextflow/nextflow.aws.sh",
    definition={
        "jobDefinitionName": "nextflow-genomics",  # nextflow-${Namespace}
        "type": "container",
        "containerProperties": {
            "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/nextflow:latest",
            "resourceRequirements": [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "1024"}],
            "jobRoleArn": ROLE,
            "environment": [
                {"name": "NF_JOB_QUEUE", "value": "arn:aws:batch:eu-west-1:123456789012:job-queue/default"},
                {"name": "NF_LOGSDIR", "value": "s3://genomics-nextflow/_nextflow/logs"},
                {"name": "NF_WORKDIR", "value": "s3://genomics-nextflow/_nextflow/runs"},
            ],
        },
    },
    submit={
        "jobName": "rnaseq-head",
        "jobDefinition": "nextflow-genomics",
        "containerOverrides": {"command": ["nextflow-io/rnaseq-nf", "-resume", "--reads", "s3://genomics-data/ggal/*_{1,2}.fq"]},
    },
)

SNAKEMAKE_TASK = EngineJob(
    key="snakemake-task",
    engine="snakemake",
    role="task",
    source="snakemake/snakemake-executor-plugin-aws-batch snakemake_executor_plugin_aws_batch/batch_job_builder.py "
    "(build_job_definition, submit)",
    definition={
        "jobDefinitionName": "snakejob-def-bwa_map-0b6f5a0e-1b5e-4c43-8d37-3c1e8f0f2a61",
        "type": "container",
        "containerProperties": {
            "image": "snakemake/snakemake:v8.20.0",
            "command": ["/bin/bash", "-c", "python -m snakemake --snakefile Snakefile --target-jobs 'bwa_map:sample=A' --cores all"],
            "environment": [{"name": "SNAKEMAKE_STORAGE_S3_RETRIES", "value": "5"}],
            "jobRoleArn": ROLE,
            "privileged": True,
            "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "8192"}],
        },
        "timeout": {"attemptDurationSeconds": 3600},
        "tags": {"team": "genomics"},
        "platformCapabilities": ["EC2"],
    },
    submit={
        "jobName": "snakejob-bwa_map-0b6f5a0e-1b5e-4c43-8d37-3c1e8f0f2a61",
        "jobDefinition": "snakejob-def-bwa_map-0b6f5a0e-1b5e-4c43-8d37-3c1e8f0f2a61",
    },
)

SNAKEMAKE_COORDINATOR = EngineJob(
    key="snakemake-coordinator",
    engine="snakemake",
    role="head",
    source="snakemake/snakemake-executor-plugin-aws-batch snakemake_executor_plugin_aws_batch/coordinator.py "
    "(COORDINATOR_RULE, build_coordinator_command) and batch_job_builder.py",
    definition={
        "jobDefinitionName": "snakejob-def-_aws_batch_coordinator_submit-7d2a4c1e-9f3b-4e55-a0c2-5b8e6d1f4a33",
        "type": "container",
        "containerProperties": {
            "image": "snakemake/snakemake:v8.20.0",
            "command": [
                "/bin/bash",
                "-c",
                "python -m snakemake_executor_plugin_aws_batch.coordinator_runner --status-s3-prefix s3://bucket/wf/.coordinator -- "
                "snakemake --executor aws-batch --aws-batch-job-queue workers",
            ],
            "jobRoleArn": ROLE,
            "privileged": True,
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "1024"}],
        },
        "timeout": {"attemptDurationSeconds": 86400},
        "platformCapabilities": ["EC2"],
    },
    submit={
        "jobName": "snakejob-_aws_batch_coordinator_submit-7d2a4c1e-9f3b-4e55-a0c2-5b8e6d1f4a33",
        "jobDefinition": "snakejob-def-_aws_batch_coordinator_submit-7d2a4c1e-9f3b-4e55-a0c2-5b8e6d1f4a33",
    },
)

METAFLOW_TASK = EngineJob(
    key="metaflow-task",
    engine="metaflow",
    role="task",
    source="Netflix/metaflow metaflow/plugins/aws/batch/batch.py (create_job, _job_name) and batch_client.py "
    "(_register_job_definition, parameter, tag)",
    definition={
        "jobDefinitionName": "metaflow_0f6c8ab9f1e6b2f0f0a3c1d2e4b5a6978d8c7b6a5f4e3d2c1b0a9f8e",
        "type": "container",
        "containerProperties": {
            "image": "python:3.11",
            "jobRoleArn": ROLE,
            "command": ["echo", "hello world"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "4096"}],
        },
        "propagateTags": True,
    },
    submit={
        "jobName": "alice-TrainFlow-1733550000-train-2-0",  # user-flow-run-step-task-retry
        "jobDefinition": "metaflow_0f6c8ab9f1e6b2f0f0a3c1d2e4b5a6978d8c7b6a5f4e3d2c1b0a9f8e",
        "containerOverrides": {
            "command": ["/bin/sh", "-c", "mkdir -p $PWD/.metaflow && echo 'Task is starting.' && python TrainFlow.py step train"],
            "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "16384"}],
            "environment": [
                {"name": "METAFLOW_CODE_SHA", "value": "4f1c"},
                {"name": "METAFLOW_CODE_URL", "value": "s3://metaflow/TrainFlow/data/4f/4f1c"},
                {"name": "METAFLOW_USER", "value": "alice"},
                {"name": "METAFLOW_DEFAULT_DATASTORE", "value": "s3"},
            ],
        },
        "timeout": {"attemptDurationSeconds": 432000},
        "parameters": {
            "metaflow.user": "alice",
            "metaflow.flow_name": "TrainFlow",
            "metaflow.run_id": "1733550000",
            "metaflow.step_name": "train",
            "metaflow.task_id": "2",
            "metaflow.retry_count": "0",
        },
        "tags": {"app": "metaflow", "metaflow.flow_name": "TrainFlow", "metaflow.step_name": "train"},  # METAFLOW_BATCH_EMIT_TAGS
        "retryStrategy": {"attempts": 1},
    },
)

FLYTE_MAP_TASK = EngineJob(
    key="flyte-map-task",
    engine="flyte",
    role="task",
    source="flyteorg/flyte flyteplugins/go/tasks/plugins/array/awsbatch/transformer.go (FlyteTaskToBatchInput, "
    "UpdateBatchInputForArray, getEnvVarsForTask) and job_definition.go",
    definition={
        "jobDefinitionName": "flytecookbook",  # the image's repository, made safe
        "type": "container",
        "containerProperties": {
            "image": "ghcr.io/flyteorg/flytecookbook:v1.13.0",
            "command": ["true"],
            "jobRoleArn": ROLE,
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "1024"}],
        },
    },
    submit={
        "jobName": "f4d1c2b3a5e6f7a8b9c0-n0-0",  # the task execution's generated name
        "jobDefinition": "flytecookbook",
        "arrayProperties": {"size": 2},
        "retryStrategy": {"attempts": 3},
        "timeout": {"attemptDurationSeconds": 3600},
        "containerOverrides": {
            "command": ["pyflyte-map-execute", "--inputs", "s3://flyte/metadata/inputs.pb"],
            "environment": [
                {"name": "BATCH_JOB_ARRAY_INDEX_VAR_NAME", "value": "AWS_BATCH_JOB_ARRAY_INDEX"},
                {"name": "FLYTE_FAIL_ON_ERROR", "value": "true"},
            ],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "1000"}],
        },
    },
)

AIRFLOW_TASK = EngineJob(
    key="airflow-task",
    engine=None,
    role=None,
    source="apache/airflow providers/amazon/src/airflow/providers/amazon/aws/operators/batch.py (BatchOperator.submit_job: "
    "jobName, jobDefinition, tags as the DAG author gives them; nothing marks the job as Airflow's)",
    definition={
        "jobDefinitionName": "nightly-etl",
        "type": "container",
        "containerProperties": {
            "image": "python:3.11",
            "command": ["python", "etl.py"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}],
        },
    },
    submit={"jobName": "nightly-etl-2026-12-07", "jobDefinition": "nightly-etl", "tags": {"airflow-dag": "nightly_etl"}},
    config_rule={"engine": "airflow", "role": "task", "tags": {"airflow-dag": "*"}},
)

STEP_FUNCTIONS_TASK = EngineJob(
    key="stepfunctions-task",
    engine=None,
    role=None,
    source="docs.aws.amazon.com/step-functions/latest/dg/connect-batch.html (arn:aws:states:::batch:submitJob.sync: "
    "the job carries only what the state machine passes; here a tag from $$.Execution.Name)",
    definition={
        "jobDefinitionName": "render",
        "type": "container",
        "containerProperties": {
            "image": "render:2",
            "command": ["render"],
            "resourceRequirements": [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "4096"}],
        },
    },
    submit={"jobName": "render-frame", "jobDefinition": "render", "tags": {"sfn-execution": "exec-7f3e"}},
    config_rule={"engine": "stepfunctions", "role": "task", "tags": {"sfn-execution": "*"}},
)

ORDINARY = EngineJob(
    key="ordinary",
    engine=None,
    role=None,
    source="an application's own job",
    definition={
        "jobDefinitionName": "nightly-report",
        "type": "container",
        "containerProperties": {
            "image": "busybox",
            "command": ["report"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        },
    },
    submit={"jobName": "nf-report", "jobDefinition": "nightly-report", "parameters": {"nf-token": "looks-like-nextflow"}},
)

BUILT_IN = (NEXTFLOW_TASK, NEXTFLOW_TOWER_TASK, NEXTFLOW_HEAD, SNAKEMAKE_TASK, SNAKEMAKE_COORDINATOR, METAFLOW_TASK, FLYTE_MAP_TASK)
CONFIGURED = (AIRFLOW_TASK, STEP_FUNCTIONS_TASK)
EVERY = (*BUILT_IN, *CONFIGURED, ORDINARY)
