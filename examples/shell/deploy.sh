#!/usr/bin/env bash
# Deploy with jobguard from a plain shell (Jenkins, Spacelift, a laptop): plan, then one
# `jobguard run` around the apply. jobguard drains the AWS Batch jobs the plan puts at risk, runs
# the apply while it records every job the application submits meanwhile, and restores the deploy
# whatever the apply's exit. The script exits with the apply's exit code when it failed.
#
#   JOBGUARD_STORE=s3://acme-jobguard/manifests \
#   JOBGUARD_SIGNING_KEY=kms:arn:aws:kms:us-east-1:123456789012:key/... \
#   JOBGUARD_QUEUES="science-queue etl-queue" \
#   DEPLOY_ID="jenkins-$BUILD_NUMBER" ./deploy.sh
#
# The values are the Terraform module's outputs store_uri, signing_key and queue_names.
# Re-running with the same DEPLOY_ID continues the same deploy (a retried build); if the script is
# killed, restore it by hand as its first line of output says (jobguard restore --deploy-id ...).
set -euo pipefail

: "${JOBGUARD_STORE:?set JOBGUARD_STORE: where manifests are kept (s3://BUCKET/PREFIX or dynamodb://TABLE)}"
: "${JOBGUARD_QUEUES:?set JOBGUARD_QUEUES: the queues jobguard may act on, separated by spaces}"
: "${DEPLOY_ID:?set DEPLOY_ID: one id per deploy, the same for a retry of it}"

queues=()
for queue in $JOBGUARD_QUEUES; do queues+=(--queue "$queue"); done
signing=()
[ -n "${JOBGUARD_SIGNING_KEY:-}" ] && signing=(--signing-key "$JOBGUARD_SIGNING_KEY")

terraform plan -input=false -out=tfplan
terraform show -json tfplan > plan.json

exec jobguard run --store "$JOBGUARD_STORE" "${signing[@]}" "${queues[@]}" --plan plan.json --deploy-id "$DEPLOY_ID" \
  -- terraform apply -input=false tfplan
