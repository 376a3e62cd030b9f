"""Builds the Batch world of a simulation through its API: queues, job definitions, jobs."""

from __future__ import annotations

import functools
import json
from typing import Any

from .server import REGION, SimulatedAWS

# Seeded jobs were submitted a while before the test looks: past ListJobs' lag.
SEEDED_AGE = 60.0


@functools.lru_cache(maxsize=1)
def _loader() -> Any:
    """botocore's reader of service models, shared by every Seeder of the process: each new session
    would read and parse the same JSON models again (a test suite makes a Seeder per test)."""
    import botocore.loaders

    return botocore.loaders.create_loader()


class Seeder:
    """Creates resources as a user would, through boto3 (unrecorded: it is not jobguard)."""

    def __init__(self, aws: SimulatedAWS) -> None:
        import boto3
        import botocore.session

        self.aws = aws
        core, loader = botocore.session.get_session(), _loader()
        core.register_component("data_loader", loader)
        self.session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
            region_name=REGION,
            botocore_session=core,
        )
        loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))  # each boto3 session adds its data folder again
        self._clients: dict[str, Any] = {}
        self.batch = self.client("batch")
        self._service_role = ""

    def client(self, service: str) -> Any:
        """A boto3 client for the simulation (one per service: a client costs tens of milliseconds to make)."""
        if service not in self._clients:
            self._clients[service] = self.session.client(service, endpoint_url=self.aws.endpoint)  # type: ignore[call-overload]
        return self._clients[service]

    def compute_environment(self, name: str) -> str:
        """An unmanaged compute environment; its ARN."""
        if not self._service_role:
            iam = self.client("iam")
            trust = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}, "Action": "sts:AssumeRole"}],
            }
            self._service_role = iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        answer = self.batch.create_compute_environment(computeEnvironmentName=name, type="UNMANAGED", serviceRole=self._service_role)
        return str(answer["computeEnvironmentArn"])

    def queue(self, name: str, state: str = "ENABLED", fair_share: bool = False, compute_environment: str | None = None) -> str:
        """A job queue (on its own compute environment unless one is named); its ARN."""
        environment = compute_environment or self.compute_environment(f"{name}-ce")
        extra: dict[str, Any] = {}
        if fair_share:
            policy = self.batch.create_scheduling_policy(name=f"{name}-fair-share", fairsharePolicy={"shareDecaySeconds": 3600})
            extra["schedulingPolicyArn"] = policy["arn"]
        answer = self.batch.create_job_queue(
            jobQueueName=name, state=state, priority=1, computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}], **extra
        )
        return str(answer["jobQueueArn"])

    def definition(self, name: str, **properties: Any) -> str:
        """Register a revision of a job definition (a container one unless `properties` say otherwise); its ARN."""
        request: dict[str, Any] = {"jobDefinitionName": name, "type": "container", **properties}
        if not any(k in request for k in ("containerProperties", "nodeProperties", "ecsProperties", "eksProperties")):
            request["containerProperties"] = {
                "image": "busybox",
                "command": ["echo", "hello"],
                "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
            }
        return str(self.batch.register_job_definition(**request)["jobDefinitionArn"])

    def job(self, status: str = "RUNNING", age: float = SEEDED_AGE, **request: Any) -> str:
        """Submit a job through the API, as if `age` seconds ago, and put it in `status`; its id."""
        job_id = str(self.batch.submit_job(**request)["jobId"])
        self.aws.batch.set_status(job_id, status)
        self.aws.batch.backdate(job_id, age)
        return job_id
