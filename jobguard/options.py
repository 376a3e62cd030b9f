"""Settings, resolved once: defaults, then the YAML config file, then command-line flags.

The result is a frozen `Options`; nothing else reads flags or the config file.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .policies import ACTIONS, Policy
from .retry import RetryPolicy

DEFAULT_CONFIG = ".jobguard.yml"
DEFAULT_STORE = "file://.jobguard"
JOB_DEFINITION_POLICIES = ("latest", "recorded")


@dataclass(frozen=True)
class Options:
    """Everything a command needs to know about how it was asked to run."""

    store: str = DEFAULT_STORE
    queues: tuple[str, ...] = ()
    deploy_id: str | None = None
    dry_run: bool = False
    job_definition: str = "latest"
    json: bool = False
    lock_timeout: float = 300.0
    lock_ttl: float = 120.0
    plan: str | None = None
    grace: float = 0.0
    freeze: bool = False
    triggers: tuple[str, ...] = ()
    policies: tuple[Policy, ...] = ()
    # AWS publishes 50 calls/s for SubmitJob (TerminateJob likewise): stay just under it.
    rate: float = 48.0
    burst: float = 50.0
    workers: int = 16
    max_resubmits: int = 3
    lineage_env: bool = True
    notify: tuple[str, ...] = ()
    interval: float = 30.0
    watch: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)


# config key -> (Options field, parser)
def _string(value: Any, where: str) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return str(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _queues(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a queue name or a list of queue names")
    return tuple(_string(v, f"{where}[{i}]") for i, v in enumerate(value))


def _policy(value: Any, where: str) -> str:
    text = _string(value, where)
    if text not in JOB_DEFINITION_POLICIES:
        raise ConfigError(f"{where}: expected one of {', '.join(JOB_DEFINITION_POLICIES)}, got {text!r}")
    return text


def _positive(kind: type) -> Any:
    def parse(value: Any, where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (kind is int and not isinstance(value, int)):
            raise ConfigError(f"{where}: expected a non-negative {'integer' if kind is int else 'number'}, got {value!r}")
        return kind(value)

    return parse


def duration(value: Any, where: str) -> float:
    """Seconds from a number or a duration like 90s, 30m, 1h30m."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", str(value).strip())
    if not match or not any(match.groups()):
        raise ConfigError(f"{where}: expected a duration such as 90s, 30m or 1h30m, got {value!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def check_notify(target: str, where: str) -> str:
    """A notification target: sns:TOPIC_ARN, or an http(s) webhook URL (Slack-compatible JSON)."""
    if target.startswith("sns:arn:") or target.startswith(("https://", "http://")):
        return target
    raise ConfigError(f"{where}: notification target {target!r} is neither sns:TOPIC_ARN nor an https:// webhook URL")


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of resource addresses or patterns")
    return tuple(_string(v, f"{where}[{i}]") for i, v in enumerate(value))


_POLICY_KEYS = {"action": "action", "queue": "queue", "job-name": "job_name", "job-definition": "job_definition"}


def _policies(value: Any, where: str) -> tuple[Policy, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of policies")
    policies = []
    for index, rule in enumerate(value):
        place = f"{where}[{index}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{place}: expected a mapping with action and queue, job-name or job-definition")
        _check_keys(rule, _POLICY_KEYS, place)
        action = _string(rule.get("action"), f"{place}.action")
        if action not in ACTIONS:
            raise ConfigError(f"{place}.action: expected one of {', '.join(ACTIONS)}, got {action!r}")
        policies.append(Policy(**{_POLICY_KEYS[k]: _string(v, f"{place}.{k}") for k, v in rule.items()}))
    return tuple(policies)


_KEYS = {
    "store": ("store", _string),
    "queues": ("queues", _queues),
    "deploy-id": ("deploy_id", _string),
    "dry-run": ("dry_run", _boolean),
    "job-definition": ("job_definition", _policy),
    "lock-timeout": ("lock_timeout", _positive(float)),
    "lock-ttl": ("lock_ttl", _positive(float)),
    "plan": ("plan", _string),
    "grace": ("grace", duration),
    "freeze": ("freeze", _boolean),
    "triggers": ("triggers", _patterns),
    "policies": ("policies", _policies),
    "rate": ("rate", _positive(float)),
    "burst": ("burst", _positive(float)),
    "workers": ("workers", _positive(int)),
    "max-resubmits": ("max_resubmits", _positive(int)),
    "lineage-env": ("lineage_env", _boolean),
    "notify": ("notify", lambda v, w: tuple(check_notify(t, f"{w}") for t in _queues(v, w))),
}
_RETRY_KEYS = {
    "attempts": ("attempts", _positive(int)),
    "max-seconds": ("max_seconds", _positive(float)),
    "initial-wait": ("initial_wait", _positive(float)),
    "max-wait": ("max_wait", _positive(float)),
}


def _check_keys(mapping: dict[str, Any], known: dict[str, Any], where: str) -> None:
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def read_config(path: Path) -> dict[str, Any]:
    """Settings from a YAML file, as Options field values; errors name the file and key."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    _check_keys(document, {**_KEYS, "retry": None}, str(path))
    values = {_KEYS[k][0]: _KEYS[k][1](v, f"{path}: {k}") for k, v in document.items() if k in _KEYS}
    if "retry" in document:
        retry = document["retry"]
        if not isinstance(retry, dict):
            raise ConfigError(f"{path}: retry: expected a mapping")
        _check_keys(retry, _RETRY_KEYS, f"{path}: retry")
        values["retry"] = RetryPolicy(**{_RETRY_KEYS[k][0]: _RETRY_KEYS[k][1](v, f"{path}: retry.{k}") for k, v in retry.items()})
    return values


def resolve(config: str | None, flags: dict[str, Any]) -> Options:
    """Options from defaults, the config file (`config`, else .jobguard.yml if present), then flags.

    `flags` holds only what the user gave on the command line (None and () mean not given).
    """
    path = Path(config) if config else Path(DEFAULT_CONFIG)
    from_file = read_config(path) if config or path.is_file() else {}
    given = {k: v for k, v in flags.items() if v not in (None, ())}
    return Options(**{**from_file, **given})


def github_deploy_id() -> str | None:
    """In GitHub Actions, the run id: shared by the steps of a run and by its re-run attempts."""
    return os.environ.get("GITHUB_RUN_ID") or None
