"""Settings, resolved once: defaults, then the YAML config file, then command-line flags.

Every value, from a file or a flag, goes through the same parser, which names where it came
from when it is wrong. The result is a frozen `Options`; nothing else reads flags or the file.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
import reprlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .adapters.aws import AwsSettings
from .adapters.lease import LeaseSettings
from .adapters.retry import RetrySettings
from .adapters.stores import check_deploy_id, check_store_uri
from .domain.engines import BUILTIN, ROLES, EngineRule, Pairs
from .domain.policies import ACTIONS, Policy
from .errors import ConfigError

if TYPE_CHECKING:
    import yaml

DEFAULT_CONFIG = ".jobguard.yml"
DEFAULT_STORE = "file://.jobguard"
JOB_DEFINITION_CHOICES = ("latest", "recorded")
ARRAY_CHOICES = ("whole", "unfinished")
MAX_CONFIG_BYTES = 1024 * 1024
NAME_GLOB = re.compile(r"[A-Za-z0-9_*?\[\]!-]+")  # a glob that can match a job or job definition name
REVISION_GLOB = re.compile(r"[A-Za-z0-9_*?\[\]!:-]+")  # ... or a job definition's NAME:REVISION
ENGINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}|arn:aws[a-z-]*:batch:[a-z0-9-]+:\d{12}:job-queue/[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


@dataclass(frozen=True)
class Options:
    """Everything a command needs to know about how it was asked to run."""

    store: str = DEFAULT_STORE
    queues: tuple[str, ...] = ()
    deploy_id: str | None = None
    dry_run: bool = False
    job_definition: str = "latest"
    job_definitions: tuple[str, ...] = ()  # restore submits only on these job definitions (globs), when set
    json: bool = False
    all: bool = False
    plan: str | None = None
    grace: float = 0.0
    freeze: bool | None = None  # None: freeze only the queues the plan deletes
    triggers: tuple[str, ...] = ()
    policies: tuple[Policy, ...] = ()
    engines: tuple[EngineRule, ...] = BUILTIN  # config rules first, then the built-in ones unless engines.builtin is false
    stop_timeout: float = 180.0  # covers ECS's 120 s maximum stop timeout, with room for the poll
    lookup_window: float = 30.0  # how long a job just submitted may take to show in ListJobs
    max_resubmits: int = 3
    lineage_env: bool = True
    arrays: str = "whole"
    share_identifier: str | None = None
    signing_key: str | None = None
    unsigned: bool = False
    notify: tuple[str, ...] = ()
    event_bus: str | None = None
    events_file: str | None = None
    interval: float = 30.0
    timeout: float | None = None
    watch: bool = False
    watch_interval: float = 2.0  # run: seconds between two looks of the watcher at the queues at risk
    check: bool = False
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    aws: AwsSettings = field(default_factory=AwsSettings)

    @property
    def queue_names(self) -> frozenset[str]:
        """The configured queues by name (a queue may be given by ARN): the queues jobguard may act on, when set."""
        return frozenset(q.rsplit("/", 1)[-1] for q in self.queues)


# -- value parsers: (value, where) -> parsed -------------------------------------------------
Parser = Callable[[Any, str], Any]


def text(value: Any, where: str) -> str:
    """A non-empty single-line string."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise ConfigError(f"{where}: expected a non-empty string, got {_shown(value)}")
    result = str(value)
    if not result.isprintable():
        raise ConfigError(f"{where}: contains control characters")
    return result


def boolean(value: Any, where: str) -> bool:
    """true or false (YAML's or a flag's)."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {_shown(value)}")
    return value


def number(low: float, high: float = math.inf, integer: bool = False, low_open: bool = False) -> Parser:
    """A finite number within [low, high] (low excluded when `low_open`)."""

    def parse(value: Any, where: str) -> Any:
        parsed: Any = value
        if isinstance(value, str):
            try:
                parsed = int(value) if integer else float(value)
            except ValueError:
                parsed = None
        kind = "an integer" if integer else "a number"
        if isinstance(parsed, bool) or not isinstance(parsed, (int, float)) or (integer and not isinstance(parsed, int)):
            raise ConfigError(f"{where}: expected {kind}, got {_shown(value)}")
        if not math.isfinite(parsed) or parsed < low or (low_open and parsed == low) or parsed > high:
            bound = f"more than {low:g}" if low_open else f"at least {low:g}"
            upper = f" and at most {high:g}" if math.isfinite(high) else ""
            raise ConfigError(f"{where}: expected {kind} {bound}{upper}, got {_shown(value)}")
        return int(parsed) if integer else float(parsed)

    return parse


def duration(low: float = 0.0) -> Parser:
    """Seconds, at least `low` and at most a week, from a number or a duration like 90s, 30m, 1h30m."""
    bounded = number(low, 7 * 24 * 3600)

    def parse(value: Any, where: str) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(bounded(value, where))
        match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", str(value).strip()) if isinstance(value, str) else None
        if not match or not any(match.groups()):
            raise ConfigError(f"{where}: expected a duration such as 90s, 30m or 1h30m, got {_shown(value)}")
        hours, minutes, seconds = (float(g or 0) for g in match.groups())
        return float(bounded(hours * 3600 + minutes * 60 + seconds, where))

    return parse


def choice(options: tuple[str, ...]) -> Parser:
    """One of `options`."""

    def parse(value: Any, where: str) -> str:
        result = text(value, where)
        if result not in options:
            raise ConfigError(f"{where}: expected one of {', '.join(options)}, got {_shown(value)}")
        return result

    return parse


def strings(item: Parser) -> Parser:
    """A list (or one value) of `item`, duplicates removed."""

    def parse(value: Any, where: str) -> tuple[Any, ...]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list):
            raise ConfigError(f"{where}: expected a list, got {_shown(value)}")
        return tuple(dict.fromkeys(item(v, f"{where}[{i}]") for i, v in enumerate(values)))

    return parse


def queue(value: Any, where: str) -> str:
    """A job queue name or ARN."""
    result = text(value, where).strip()
    if not QUEUE.fullmatch(result):
        raise ConfigError(f"{where}: {_shown(value)} is not a job queue name or ARN")
    return result


def deploy_id(value: Any, where: str) -> str:
    """A deploy id: a safe file name and S3 key."""
    try:
        return check_deploy_id(text(value, where))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: {exc}") from None


def store(value: Any, where: str) -> str:
    """A store URI."""
    try:
        return check_store_uri(text(value, where))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: {exc}") from None


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def notify_target(value: Any, where: str) -> str:
    """sns:TOPIC_ARN, or an https:// webhook URL (http:// only to this machine: the URL and the
    message would cross the network in clear); never echoed whole (webhook URLs carry secrets)."""
    target = text(value, where)
    if re.fullmatch(r"sns:arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}", target):
        return target
    try:
        parts = urlsplit(target) if target.startswith(("https://", "http://")) else None
        usable = parts is not None and parts.hostname and parts.port != 0 and " " not in target  # .port: ValueError when out of range
        if usable and parts is not None and (parts.scheme == "https" or parts.hostname in LOOPBACK):
            return target
    except ValueError:  # a broken [IPv6] host or port
        pass
    raise ConfigError(
        f"{where}: a notification target is sns:TOPIC_ARN or an https:// webhook URL (http:// only to localhost; "
        "the value is not shown: it may hold a secret)"
    )


def signing_key(value: Any, where: str) -> str:
    """kms:KEY_ID_OR_ARN or file:PATH."""
    key = text(value, where)
    if not re.fullmatch(r"kms:[A-Za-z0-9:/_+=,.@-]{1,2048}|file:.+", key):
        raise ConfigError(f"{where}: expected kms:KEY_ID_OR_ARN or file:PATH, got {_shown(value)}")
    return key


def event_bus(value: Any, where: str) -> str:
    """An EventBridge bus name or ARN."""
    bus = text(value, where)
    if not re.fullmatch(r"[A-Za-z0-9/._-]{1,256}|arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus/[A-Za-z0-9/._-]{1,256}", bus):
        raise ConfigError(f"{where}: {_shown(value)} is not an EventBridge bus name or ARN")
    return bus


def pattern(value: Any, where: str) -> str:
    """A resource address or shell-style pattern."""
    return text(value, where)


_POLICY_KEYS = {"action": "action", "queue": "queue", "job-name": "job_name", "job-definition": "job_definition", "engine": "engine"}


def policies(value: Any, where: str) -> tuple[Policy, ...]:
    """wait / abandon / resubmit rules."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of policies")
    found = []
    for index, rule in enumerate(value):
        place = f"{where}[{index}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{place}: expected a mapping with action and queue, job-name, job-definition or engine")
        _check_keys(rule, _POLICY_KEYS, place)
        action = choice(ACTIONS)(rule.get("action"), f"{place}.action")
        patterns = {_POLICY_KEYS[k]: text(v, f"{place}.{k}") for k, v in rule.items() if k != "action"}
        for key, glob in (("queue", NAME_GLOB), ("job-name", NAME_GLOB), ("job-definition", REVISION_GLOB)):
            if key in rule and not glob.fullmatch(patterns[_POLICY_KEYS[key]]):
                raise ConfigError(
                    f"{place}.{key}: {_shown(rule[key])} can never match: queue, job and job definition names have only letters, "
                    "digits, - and _ (a job definition may add :REVISION), and policies take shell-style globs (* ? [...]), "
                    "not regular expressions or ARNs"
                )
        found.append(Policy(action=action, **patterns))
    return tuple(found)


_ENGINES_KEYS = {"builtin": None, "rules": None}
_RULE_PATTERNS = {"job-name": "job_name", "job-definition": "job_definition", "command": "command"}
_RULE_TEXTS = {"why": "why", "resume": "resume"}
_RULE_PAIRS = {"tags": "tags", "parameters": "parameters", "environment": "environment"}
_RULE_KEYS = {"engine": None, "role": None, "action": None, **_RULE_TEXTS, **_RULE_PATTERNS, **_RULE_PAIRS}


def engines(value: Any, where: str) -> tuple[EngineRule, ...]:
    """Rules recognising workflow engines' jobs (tried first), then the built-in ones unless `builtin: false`."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping with rules (a list) and builtin (true or false)")
    _check_keys(value, _ENGINES_KEYS, where)
    builtin = boolean(value.get("builtin", True), f"{where}.builtin")
    rules = value.get("rules") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{where}.rules: expected a list of rules")
    found = tuple(_engine_rule(rule, f"{where}.rules[{index}]") for index, rule in enumerate(rules)) + (BUILTIN if builtin else ())
    _check_one_action(found, len(rules), where)
    return found


def _check_one_action(rules: tuple[EngineRule, ...], configured: int, where: str) -> None:
    """Every rule of one engine and role must give the same action: a record keeps the job's engine and
    role, not the rule it matched, so the action is looked up by engine and role (engines.engine_action).
    A rule for some of an engine's tasks with its own action would otherwise change it for all of them."""
    first: dict[tuple[str, str], int] = {}
    for index, rule in enumerate(rules):
        earlier = first.setdefault((rule.engine, rule.role), index)
        if rules[earlier].chosen_action == rule.chosen_action:
            continue
        mine, theirs = (index, earlier) if index < configured else (earlier, index)
        other = f"rules[{theirs}]" if theirs < configured else f"the built-in {rule.engine} {rule.role} rule"
        raise ConfigError(
            f"{where}.rules[{mine}].action: {rules[mine].chosen_action} for {rule.engine} {rule.role}s, but {other} gives them "
            f"{rules[theirs].chosen_action}: one engine and role has one action (records keep the engine, not the rule); "
            f"choose per queue or job with a policy (engine: {rule.engine}:{rule.role}, job-name: ..., action: ...)"
        )


def _engine_rule(rule: Any, where: str) -> EngineRule:
    if not isinstance(rule, dict):
        raise ConfigError(f"{where}: expected a mapping with engine, role and what to match")
    _check_keys(rule, _RULE_KEYS, where)
    for required in ("engine", "role"):
        if required not in rule:
            raise ConfigError(f"{where}: {required} is missing")
    engine = text(rule["engine"], f"{where}.engine")
    if not ENGINE_NAME.fullmatch(engine):
        raise ConfigError(f"{where}.engine: {_shown(engine)} is not an engine name (letters, digits, . _ -; at most 64)")
    matchers: dict[str, Any] = {field: text(rule[key], f"{where}.{key}") for key, field in _RULE_PATTERNS.items() if key in rule}
    for key in ("job-name", "job-definition"):
        if key in rule and not NAME_GLOB.fullmatch(matchers[_RULE_PATTERNS[key]]):
            raise ConfigError(
                f"{where}.{key}: {_shown(rule[key])} can never match: Batch names have only letters, digits, - and _ "
                "(a job definition's without its :revision), and rules take shell-style globs (* ? [...]), not regular expressions"
            )
    matchers.update({field: _globs(rule[key], f"{where}.{key}") for key, field in _RULE_PAIRS.items() if key in rule})
    if not any(matchers.values()):
        raise ConfigError(f"{where}: give at least one of {', '.join([*_RULE_PATTERNS, *_RULE_PAIRS])} to match")
    texts: dict[str, Any] = {field: text(rule[key], f"{where}.{key}") for key, field in _RULE_TEXTS.items() if key in rule}
    return EngineRule(
        engine=engine,
        role=choice(ROLES)(rule["role"], f"{where}.role"),
        action=choice(ACTIONS)(rule["action"], f"{where}.action") if "action" in rule else None,
        **texts,
        **matchers,
    )


def _globs(value: Any, where: str) -> Pairs:
    """NAME: VALUE-PATTERN pairs (a tag, parameter or variable that must be present, its value matching)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of NAME: VALUE-PATTERN")
    pairs = tuple((text(k, f"{where} key"), text(v, f"{where}.{k}")) for k, v in value.items())
    for key, _ in pairs:
        if any(c in key for c in "*?["):  # a key is looked up as it is: a glob there would silently match nothing
            raise ConfigError(f"{where}: key {_shown(key)}: names are matched exactly (only the values are globs)")
    return pairs


# config key -> (Options field, parser); flags use the same names with -- in front
KEYS: dict[str, tuple[str, Parser]] = {
    "store": ("store", store),
    "queues": ("queues", strings(queue)),
    "deploy-id": ("deploy_id", deploy_id),
    "dry-run": ("dry_run", boolean),
    "job-definition": ("job_definition", choice(JOB_DEFINITION_CHOICES)),
    "job-definitions": ("job_definitions", strings(pattern)),
    "plan": ("plan", text),
    "grace": ("grace", duration()),
    "freeze": ("freeze", boolean),
    "triggers": ("triggers", strings(pattern)),
    "policies": ("policies", policies),
    "engines": ("engines", engines),
    "stop-timeout": ("stop_timeout", duration()),
    "lookup-window": ("lookup_window", duration(1)),  # shorter would not cover ListJobs' lag: exactly-once rests on it
    "max-resubmits": ("max_resubmits", number(0, 1_000_000, integer=True)),
    "lineage-env": ("lineage_env", boolean),
    "arrays": ("arrays", choice(ARRAY_CHOICES)),
    "share-identifier": ("share_identifier", text),
    "signing-key": ("signing_key", signing_key),
    "unsigned": ("unsigned", boolean),
    "notify": ("notify", strings(notify_target)),
    "event-bus": ("event_bus", event_bus),
    "events-file": ("events_file", text),
    "json": ("json", boolean),
    "all": ("all", boolean),
    "watch": ("watch", boolean),
    "watch-interval": ("watch_interval", duration(0.1)),
    "check": ("check", boolean),
    "interval": ("interval", number(0.1, 86400)),
    "timeout": ("timeout", number(0, 7 * 86400, low_open=True)),
    "lock-timeout": ("lock_timeout", number(0, 86400)),
    "lock-ttl": ("lock_ttl", number(1, 86400)),  # the hold is renewed every lock-ttl / 4: shorter would spin on the store
    "lease-ttl": ("lease_ttl", duration(1)),
    "rate": ("rate", number(0, 10_000, low_open=True)),
    "burst": ("burst", number(1, 10_000)),
    "workers": ("workers", number(1, 256, integer=True)),
}
RETRY_KEYS: dict[str, tuple[str, Parser]] = {
    "attempts": ("attempts", number(1, 100, integer=True)),
    "max-seconds": ("max_seconds", number(0, 3600, low_open=True)),
    "initial-wait": ("initial_wait", number(0, 60)),
    "max-wait": ("max_wait", number(0, 600)),
}
_NESTED = {"lock_timeout": ("lease", "wait"), "lock_ttl": ("lease", "holder_ttl"), "lease_ttl": ("lease", "lease_ttl")}
_AWS = {"rate", "burst", "workers"}


def _check_keys(mapping: dict[Any, Any], known: dict[str, Any], where: str) -> None:
    for key in mapping:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"{where}: unknown key {_shown(key)}{hint}")


@functools.cache
def _unique_key_loader() -> type[yaml.SafeLoader]:
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last silently).

    Made, and yaml imported (10 ms), only when there is a config file to read."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # a merge key (<<): what it brings in gives way to the mapping's own keys
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, Hashable):
                    break  # SafeLoader refuses it, naming the line
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def read_config(path: Path) -> dict[str, Any]:
    """Settings from a YAML file, as {config key: parsed value}; errors name the file and key."""
    import yaml

    try:
        if not path.is_file():
            raise ConfigError(f"{path}: not a regular file")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: bigger than {MAX_CONFIG_BYTES} bytes: not a jobguard config file")
    try:
        document = yaml.load(raw.decode("utf-8"), Loader=_unique_key_loader())  # a SafeLoader
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text: not a jobguard config file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        raise ConfigError(f"{path}:{line} invalid YAML ({getattr(exc, 'problem', None) or type(exc).__name__})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deep: not a jobguard config file") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    _check_keys(document, {**KEYS, "retry": None}, str(path))
    values = {key: KEYS[key][1](value, f"{path}: {key}") for key, value in document.items() if key in KEYS}
    if "retry" in document:
        retry = document["retry"]
        if not isinstance(retry, dict):
            raise ConfigError(f"{path}: retry: expected a mapping")
        _check_keys(retry, RETRY_KEYS, f"{path}: retry")
        values["retry"] = {RETRY_KEYS[k][0]: RETRY_KEYS[k][1](v, f"{path}: retry.{k}") for k, v in retry.items()}
    return values


def parse_flags(given: dict[str, Any]) -> dict[str, Any]:
    """Flag values (by config key, as strings or lists) through the same parsers as the config file."""
    return {key: KEYS[key][1](value, f"--{key}") for key, value in given.items() if value is not None}


def resolve(config: str | None, flags: dict[str, Any]) -> Options:
    """Options from defaults, the config file (`config`, else .jobguard.yml if present), then flags.

    `flags` holds only what the user gave on the command line, by config key, already parsed.
    """
    path = Path(config) if config else Path(DEFAULT_CONFIG)
    settings = read_config(path) if config or path.exists() else {}
    settings.update(flags)
    return build(settings)


def build(settings: dict[str, Any]) -> Options:
    """Options from {config key: parsed value}."""
    top: dict[str, Any] = {}
    lease: dict[str, Any] = {}
    aws: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "retry":
            continue
        name = KEYS[key][0]
        if name in _NESTED:
            lease[_NESTED[name][1]] = value
        elif name in _AWS:
            aws[name] = value
        else:
            top[name] = value
    retry = RetrySettings(**settings.get("retry", {}))
    options = Options(**top, lease=LeaseSettings(**lease), aws=AwsSettings(**aws, retry=retry))
    _check_together(options)
    return options


def _check_together(options: Options) -> None:
    if options.aws.retry.max_wait < options.aws.retry.initial_wait:
        raise ConfigError("retry.max-wait: must be at least retry.initial-wait")
    if options.lease.lease_ttl < options.lease.holder_ttl:
        raise ConfigError("lease-ttl: must be at least lock-ttl (a deploy's lease outlives each run's hold)")
    _check_policy_engines(options)


def _check_policy_engines(options: Options) -> None:
    """A policy's `engine:` must name an engine some rule recognises (a typo would silently match nothing)."""
    known = sorted({f"{rule.engine}:{rule.role}" for rule in options.engines})
    for index, policy in enumerate(options.policies):
        if policy.engine is not None and not any(
            fnmatch.fnmatchcase(key, policy.engine) or fnmatch.fnmatchcase(key.split(":", 1)[0], policy.engine) for key in known
        ):
            raise ConfigError(
                f"policies[{index}].engine: {_shown(policy.engine)} matches no engine of the rules "
                f"(known: {', '.join(known) or 'none: engines.builtin is false and no rules are given'})"
            )


def _shown(value: Any) -> str:
    shown = _REPR.repr(value)  # bounded: a YAML alias bomb must not be expanded to be shown
    return shown if len(shown) <= 60 else shown[:57] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60
