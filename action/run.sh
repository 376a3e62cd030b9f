#!/usr/bin/env bash
# The composite action's step: install jobguard from the action's own checkout into a virtual
# environment under RUNNER_TEMP (once per job), turn the JOBGUARD_* inputs into flags, run it.
# Inputs arrive only through the environment: nothing here is expanded by the workflow engine.
set -euo pipefail

fail() { echo "::error title=jobguard::$1"; exit 2; }

case "${JOBGUARD_COMMAND:-}" in
  drain|restore|status) ;;
  *) fail "input 'command' must be drain, restore or status, not '${JOBGUARD_COMMAND:-}'" ;;
esac
boolean() {
  case "$2" in
    ""|true|false) ;;
    *) fail "input '$1' must be true or false, not '$2'" ;;
  esac
}
boolean dry-run "${JOBGUARD_DRY_RUN:-}"
boolean freeze "${JOBGUARD_FREEZE:-}"
boolean watch "${JOBGUARD_WATCH:-}"

venv="${RUNNER_TEMP:?RUNNER_TEMP is not set}/jobguard-venv"
if [ ! -x "$venv/bin/jobguard" ]; then
  echo "::group::Install jobguard"
  "${JOBGUARD_PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${GITHUB_ACTION_PATH:?GITHUB_ACTION_PATH is not set}"
  echo "::endgroup::"
fi

args=("$JOBGUARD_COMMAND")
[ -n "${JOBGUARD_STORE:-}" ] && args+=(--store "$JOBGUARD_STORE")
[ -n "${JOBGUARD_CONFIG:-}" ] && args+=(--config "$JOBGUARD_CONFIG")
[ -n "${JOBGUARD_DEPLOY_ID:-}" ] && args+=(--deploy-id "$JOBGUARD_DEPLOY_ID")
if [ "$JOBGUARD_COMMAND" = drain ]; then
  while IFS= read -r queue; do
    queue="${queue#"${queue%%[![:space:]]*}"}"
    queue="${queue%"${queue##*[![:space:]]}"}"
    [ -n "$queue" ] && args+=(--queue "$queue")
  done < <(printf '%s\n' "${JOBGUARD_QUEUES:-}" | tr ',' '\n')
fi
if [ "$JOBGUARD_COMMAND" = drain ]; then
  [ -n "${JOBGUARD_PLAN:-}" ] && args+=(--plan "$JOBGUARD_PLAN")
  [ -n "${JOBGUARD_GRACE:-}" ] && args+=(--grace "$JOBGUARD_GRACE")
  [ "${JOBGUARD_FREEZE:-false}" = true ] && args+=(--freeze)
fi
if [ "$JOBGUARD_COMMAND" != status ] && [ -n "${JOBGUARD_LOCK_TIMEOUT:-}" ]; then
  args+=(--lock-timeout "$JOBGUARD_LOCK_TIMEOUT")
fi
if [ "$JOBGUARD_COMMAND" != status ]; then
  while IFS= read -r target; do
    target="${target#"${target%%[![:space:]]*}"}"
    target="${target%"${target##*[![:space:]]}"}"
    if [ -n "$target" ]; then
      # A webhook URL carries its secret: keep it out of the log.
      case "$target" in http*) echo "::add-mask::$target" ;; esac
      args+=(--notify "$target")
    fi
  done <<< "${JOBGUARD_NOTIFY:-}"
fi
[ "$JOBGUARD_COMMAND" = status ] && [ "${JOBGUARD_WATCH:-false}" = true ] && args+=(--watch)
if [ "$JOBGUARD_COMMAND" = restore ] && [ -n "${JOBGUARD_JOB_DEFINITION:-}" ]; then
  args+=(--job-definition "$JOBGUARD_JOB_DEFINITION")
fi
if [ "$JOBGUARD_COMMAND" != status ] && [ "${JOBGUARD_DRY_RUN:-false}" = true ]; then
  args+=(--dry-run)
fi

exec "$venv/bin/jobguard" "${args[@]}"
