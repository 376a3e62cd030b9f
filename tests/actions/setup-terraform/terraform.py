"""A stand-in `terraform` for workflows run under act (tests/test_runner.py).

init                      succeeds
plan -out=FILE            writes the plan in STANDIN_TERRAFORM_PLAN (a `terraform show -json` document) to FILE
show -json FILE           prints FILE
apply [FILE]              STANDIN_TERRAFORM_APPLY=fail: fails (exit 1) having changed nothing; else registers a
                          new revision of each job definition in STANDIN_TERRAFORM_REGISTER (comma-separated)
                          in the AWS that AWS_ENDPOINT_URL points at, as applying a changed definition does
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "init":
        print("Terraform has been successfully initialized! (stand-in)")
        return 0
    if command == "plan":
        (out,) = [a.split("=", 1)[1] for a in args if a.startswith("-out=")]
        shutil.copyfile(os.environ["STANDIN_TERRAFORM_PLAN"], out)
        print(f"Saved the plan to: {out} (stand-in)")
        return 0
    if command == "show" and "-json" in args:
        with open(args[-1], encoding="utf-8") as plan:
            sys.stdout.write(plan.read())
        return 0
    if command == "apply":
        if os.environ.get("STANDIN_TERRAFORM_APPLY") == "fail":
            print("Error: creating Batch Compute Environment: stand-in failure", file=sys.stderr)
            return 1
        for name in filter(None, os.environ.get("STANDIN_TERRAFORM_REGISTER", "").split(",")):
            print(f"aws_batch_job_definition.{name}: registered revision {_register(name)} (stand-in)")
        print("Apply complete! (stand-in)")
        return 0
    print(f"stand-in terraform: unsupported command {argv}", file=sys.stderr)
    return 1


def _register(name: str) -> int:
    import boto3

    batch = boto3.client("batch")
    latest = max(batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"], key=lambda d: d["revision"])
    request: dict[str, Any] = {"jobDefinitionName": name, "type": latest["type"], "containerProperties": latest["containerProperties"]}
    return int(batch.register_job_definition(**request)["revision"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
