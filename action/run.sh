#!/usr/bin/env bash
# The composite action's step: install jobguard from the action's own checkout into a virtual
# environment under RUNNER_TEMP (once per job), turn the JOBGUARD_* inputs into flags, run it.
# Inputs arrive only through the environment: nothing here is expanded by the workflow engine.
# The `run` input (command: run) is split into words like a POSIX shell splits them, and never
# evaluated by a shell: no variables, substitutions, globs, pipes, redirections or `&&`.
set -euo pipefail

fail() { echo "::error title=jobguard::$1"; exit 2; }

case "${JOBGUARD_COMMAND:-}" in
  drain|restore|status|run) ;;
  *) fail "input 'command' must be drain, restore, status or run, not '${JOBGUARD_COMMAND:-}'" ;;
esac
if [ "$JOBGUARD_COMMAND" = run ]; then
  [ -n "${JOBGUARD_RUN:-}" ] || fail "command: run needs the deploy's command in input 'run' (e.g. terraform apply -auto-approve tfplan)"
  [ "${JOBGUARD_DRY_RUN:-false}" = false ] || fail "input 'dry-run' is not for command: run (run a drain with dry-run: true instead)"
elif [ -n "${JOBGUARD_RUN:-}" ]; then
  fail "input 'run' is only for command: run, not '$JOBGUARD_COMMAND'"
fi
boolean() {
  case "$2" in
    ""|true|false) ;;
    *) fail "input '$1' must be true or false, not '$2'" ;;
  esac
}
boolean dry-run "${JOBGUARD_DRY_RUN:-}"
boolean freeze "${JOBGUARD_FREEZE:-}"
boolean watch "${JOBGUARD_WATCH:-}"
boolean unsigned "${JOBGUARD_UNSIGNED:-}"

# One venv per action folder (GITHUB_ACTION_PATH names the version): a later step of the same job
# reuses it, a step using another version of the action gets its own.
folder_key=$(printf '%s' "${GITHUB_ACTION_PATH:?GITHUB_ACTION_PATH is not set}" | cksum | cut -d ' ' -f 1)
venv="${RUNNER_TEMP:?RUNNER_TEMP is not set}/jobguard-venv-$folder_key"
if [ ! -x "$venv/bin/jobguard" ]; then
  echo "::group::Install jobguard"
  "${JOBGUARD_PYTHON:-python3}" -m venv "$venv"
  # Exactly the tested versions, each file checked against its hash; nothing resolved at deploy time.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r "${GITHUB_ACTION_PATH:?GITHUB_ACTION_PATH is not set}/requirements/runtime.txt"
  # Built from a copy under RUNNER_TEMP: a build writes build/ and jobguard.egg-info beside its sources,
  # and the action's folder may be read-only, or kept with a stale build/ whose modules would be installed.
  source="$RUNNER_TEMP/jobguard-source"
  rm -rf "$source" && mkdir -p "$source"
  cp -R "$GITHUB_ACTION_PATH/pyproject.toml" "$GITHUB_ACTION_PATH/README.md" "$GITHUB_ACTION_PATH/jobguard" "$source/"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation "$source"
  rm -rf "$source"
  echo "::endgroup::"
fi

# Each non-empty line (or comma-separated item) of $2 becomes `$1 ITEM`.
each() {
  local flag="$1" item
  while IFS= read -r item; do
    item="${item#"${item%%[![:space:]]*}"}"
    item="${item%"${item##*[![:space:]]}"}"
    [ -n "$item" ] && args+=("$flag" "$item")
  done < <(printf '%s\n' "$2" | tr ',' '\n')
  return 0
}
# `$1 VALUE` when the input $2 is not empty.
given() { [ -n "$2" ] && args+=("$1" "$2"); return 0; }

args=("$JOBGUARD_COMMAND")
given --store "${JOBGUARD_STORE:-}"
given --config "${JOBGUARD_CONFIG:-}"
given --deploy-id "${JOBGUARD_DEPLOY_ID:-}"
given --signing-key "${JOBGUARD_SIGNING_KEY:-}"
[ "${JOBGUARD_UNSIGNED:-false}" = true ] && args+=(--unsigned)
case "$JOBGUARD_COMMAND" in
  drain|restore|run)
    each --queue "${JOBGUARD_QUEUES:-}"
    given --lock-timeout "${JOBGUARD_LOCK_TIMEOUT:-}"
    given --stop-timeout "${JOBGUARD_STOP_TIMEOUT:-}"
    given --event-bus "${JOBGUARD_EVENT_BUS:-}"
    given --events-file "${JOBGUARD_EVENTS_FILE:-}"
    # Webhook URLs carry secrets: jobguard masks them (::add-mask::) before it prints anything.
    while IFS= read -r target; do
      target="${target#"${target%%[![:space:]]*}"}"
      target="${target%"${target##*[![:space:]]}"}"
      [ -n "$target" ] && args+=(--notify "$target")
    done <<< "${JOBGUARD_NOTIFY:-}"
    [ "${JOBGUARD_DRY_RUN:-false}" = true ] && args+=(--dry-run)
    ;;
esac
if [ "$JOBGUARD_COMMAND" = drain ] || [ "$JOBGUARD_COMMAND" = run ]; then
  given --plan "${JOBGUARD_PLAN:-}"
  given --grace "${JOBGUARD_GRACE:-}"
  [ "${JOBGUARD_FREEZE:-}" = true ] && args+=(--freeze)
  [ "${JOBGUARD_FREEZE:-}" = false ] && args+=(--no-freeze)
fi
if [ "$JOBGUARD_COMMAND" = restore ] || [ "$JOBGUARD_COMMAND" = run ]; then
  given --job-definition "${JOBGUARD_JOB_DEFINITION:-}"
fi
[ "$JOBGUARD_COMMAND" = status ] && [ "${JOBGUARD_WATCH:-false}" = true ] && args+=(--watch)
if [ "$JOBGUARD_COMMAND" = run ]; then
  # Words, NUL-separated, from Python's shlex (POSIX rules); shell operators are refused, not run.
  words="$(mktemp)"
  "$venv/bin/python" -c '
import os, shlex, sys
line = os.environ["JOBGUARD_RUN"].strip()
def fail(why):
    sys.exit(why)  # to stderr, exit status 1
if "\n" in line or "\r" in line:
    fail("one command on one line; for several, write a script and name it here")
try:
    words = shlex.split(line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    operators = [t for t in lexer if t and set(t) <= set("();<>|&")]
except ValueError as exc:
    fail(f"cannot split it into words ({exc})")
if operators:
    fail(f"{operators[0]} is shell syntax, and the command is not run by a shell; write a script and name it here")
sys.stdout.write("".join(w + "\0" for w in words))
' > "$words" 2> "$words.why" || { why="$(cat "$words.why")"; rm -f "$words" "$words.why"; fail "input run: $why"; }
  command_words=()
  while IFS= read -r -d '' word; do command_words+=("$word"); done < "$words"
  rm -f "$words" "$words.why"
  args+=(-- "${command_words[@]}")
fi

exec "$venv/bin/jobguard" "${args[@]}"
