"""Text that came from AWS or from a manifest never forms a workflow command in the Actions log,
never breaks out of the job summary's Markdown or Slack's markup, and secrets in webhook URLs are
never printed (only handed to `::add-mask::`)."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from jobguard.sim import Seeder, SimulatedAWS
from jobguard.sim.batch import ClientException

from .conftest import Hook, Result
from .hostile import edit, job_named, one_error, world

Json = dict[str, Any]

# Everything a runner might read as a command, a line break, a mask, or markup.
PAYLOAD = (
    "refused\n::add-mask::hunter2\n::error::pwned\r::stop-commands::tok\n  ::warning title=x::indented %0A::notice::escaped "
    "%0D%25 ##[error]legacy ##[add-mask]legacy-mask ##[stop-commands]legacy-stop \u2028::error::ls \x85::error::nel "
    "<script>alert(1)</script> <!channel> <https://evil.example|click> | cell | [click](javascript:alert(1)) "
    "![pixel](https://evil.example/p.png) `code` &amp;"
)
JOBGUARDS_OWN = ("group", "endgroup", "error", "warning", "add-mask")


def workflow_commands(text: str) -> list[tuple[str, str]]:
    """Every (command, data) a runner reads in `text`; fails on any that is not jobguard's own, well formed."""
    found = []
    for line in re.split(r"\r\n|\r|\n", text):  # the runner's ReadLine ends a line at \r too
        assert "##[" not in line, f"legacy command form in {line!r}"
        stripped = line.lstrip()
        if not stripped.startswith("::"):
            continue
        command, separator, data = stripped[2:].partition("::")
        name = command.split(" ", 1)[0]
        assert separator and line == stripped and name in JOBGUARDS_OWN, f"not jobguard's own command: {line!r}"
        if name != "add-mask":  # a mask's data is the secret itself
            assert "::" not in data, f"unescaped :: in the data of {line!r}"
        found.append((name, data))
    return found


def unescape(data: str) -> str:
    """A command's data as the runner reads it."""
    return data.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


@pytest.fixture
def actions(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """GitHub Actions' environment: run id, job summary and step outputs."""
    files = {"GITHUB_STEP_SUMMARY": workdir / "summary.md", "GITHUB_OUTPUT": workdir / "output.txt"}
    for name, path in files.items():
        path.write_text("")
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    monkeypatch.setenv("GITHUB_REPOSITORY", "org/repo")
    return files


def _all_output(*results: Result) -> str:
    return "\n".join(r.out + "\n" + r.err for r in results)


def _summary_is_inert(markdown: str) -> None:
    """No HTML, no link or image the data made, no table row broken by a `|` from the data."""
    assert "<script" not in markdown and "<!channel>" not in markdown and "<https://evil" not in markdown
    assert not re.search(r"(?<!\\)\]\((javascript|https://evil)", markdown), markdown
    lines = markdown.splitlines()
    columns = 0
    for number, line in enumerate(lines):
        pipes = len(re.findall(r"(?<!\\)\|", line))
        if number + 1 < len(lines) and lines[number + 1].startswith("|---"):
            columns = pipes  # a table's header
        elif line.startswith("| "):
            assert pipes == columns, line


def _slack_is_inert(text: str) -> None:
    assert "<" not in text and ">" not in text, text  # Slack reads <...> as links and mentions


@pytest.fixture
def drained(seed: Seeder, workdir: Path, run, actions) -> tuple[str, str]:
    first, second = world(seed)
    result = run("drain", "--store", f"file://{workdir}/m", "--queue", "work")
    assert result.code == 0, result.err
    workflow_commands(_all_output(result))
    return first, second


def test_aws_error_text_forms_no_command(drained, run, aws: SimulatedAWS, workdir: Path, actions, webhook: str, monkeypatch) -> None:
    def refuse(body: Json) -> Json:
        raise ClientException(PAYLOAD)

    monkeypatch.setattr(aws.batch, "submit_job", refuse)
    store = f"file://{workdir}/m"
    restored = run("restore", "--store", store, "--notify", webhook, "--events-file", str(workdir / "events.jsonl"))
    assert restored.code == 1
    status = run("status", "--store", store, "--deploy-id", "4242")
    as_json = run("status", "--store", store, "--deploy-id", "4242", "--json")
    commands = workflow_commands(_all_output(restored, status, as_json))
    errors = [unescape(data) for name, data in commands if name == "error"]
    assert any("refused" in e and "legacy" in e for e in errors)  # the text is shown, escaped, on one line
    assert all("\n" not in e and "\r" not in e for e in errors)
    assert json.loads(as_json.out)["deploys"][0]["jobs"]  # still JSON
    _summary_is_inert(actions["GITHUB_STEP_SUMMARY"].read_text())
    (message,) = Hook.received
    _slack_is_inert(message["text"])
    for line in (workdir / "events.jsonl").read_text().splitlines():
        assert json.loads(line)["outcome"]  # one JSON document a line: the text's newlines stayed inside it


@pytest.mark.parametrize("bulk", [True, False], ids=["TerminateJobs error entry", "TerminateJob error"])
def test_terminate_error_text_forms_no_command(
    seed: Seeder, run, aws: SimulatedAWS, workdir: Path, actions, monkeypatch, bulk: bool
) -> None:
    world(seed)

    def refuse(body: Json) -> Json:
        raise ClientException(PAYLOAD)

    aws.bulk_stop = bulk
    aws.refuse_stop = lambda job_id: ("ClientException", PAYLOAD)  # one job's own error in a TerminateJobs answer
    monkeypatch.setattr(aws.batch, "terminate_job", refuse)
    result = run("drain", "--store", f"file://{workdir}/m", "--queue", "work")
    assert result.code == 1 and ("TerminateJobs refused it" if bulk else "TerminateJob failed") in result.err
    assert any(name == "error" for name, _ in workflow_commands(_all_output(result)))
    _summary_is_inert(actions["GITHUB_STEP_SUMMARY"].read_text())


def test_manifest_text_forms_no_command(drained, seed: Seeder, run, aws: SimulatedAWS, workdir: Path, actions, webhook: str) -> None:
    """A manifest accepted unsigned carries hostile notes, errors and run URL."""
    store = f"file://{workdir}/m"

    def change(document: Json) -> None:
        document.pop("signature")
        document["origin"]["run_url"] = "https://github.com/org/repo/actions/runs/1 ::error::run <img src=x onerror=alert(1)> ##[add-mask]u"
        for job in document["jobs"]:
            job.update(note=PAYLOAD, error=PAYLOAD, reason=PAYLOAD[:1000])

    edit(store, seed, "4242", change, sign=False)
    status = run("status", "--store", store, "--unsigned")
    as_json = run("status", "--store", store, "--unsigned", "--json")
    restored = run("restore", "--store", store, "--unsigned", "--notify", webhook)
    assert restored.code == 0, restored.err
    workflow_commands(_all_output(status, as_json, restored))
    assert json.loads(as_json.out)["deploys"][0]["jobs"][0]["note"] == PAYLOAD  # JSON keeps the text, escaped for the log
    summary = actions["GITHUB_STEP_SUMMARY"].read_text()
    _summary_is_inert(summary)
    assert "<img" not in summary
    for message in Hook.received:
        _slack_is_inert(message["text"])


def test_hostile_value_named_in_an_error_is_escaped(drained, seed: Seeder, run, workdir: Path, actions) -> None:
    store = f"file://{workdir}/m"

    def change(document: Json) -> None:
        document.pop("signature")
        job_named(document, "first")["job_name"] = "x%0A::add-mask::y\n::error::z ##[error]w"

    edit(store, seed, "4242", change, sign=False)
    result = run("restore", "--store", store, "--unsigned")
    line = one_error(result, 2, "job_name")
    assert line.startswith("::error::")
    commands = workflow_commands(_all_output(result))
    (data,) = [d for name, d in commands if name == "error"]
    assert "\n" not in unescape(data) and "\r" not in unescape(data)  # a % from the data is escaped: the runner makes no line of it
    assert "x%250A" in data


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("in_actions", [True, False], ids=["actions", "terminal"])
def test_webhook_secrets_are_never_printed(seed: Seeder, run, workdir: Path, monkeypatch, in_actions: bool) -> None:
    world(seed)
    if in_actions:
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
    port = _closed_port()
    url = f"https://hook-user:t0ken-in-userinfo@127.0.0.1:{port}/services/p4th-secret?sig=qu3ry-secret&x=%2F"
    result = run("drain", "--store", f"file://{workdir}/m", "--queue", "work", "--deploy-id", "d1", "--notify", url)
    assert result.code == 0, result.err
    text = _all_output(result)
    masks = [data for name, data in workflow_commands(text) if name == "add-mask"]
    if in_actions:
        assert masks == [url.replace("%", "%25")]  # the runner unescapes %25: it masks exactly the URL
    leaked = [line for line in text.splitlines() if not line.startswith("::add-mask::")]
    for secret in ("t0ken-in-userinfo", "hook-user", "p4th-secret", "qu3ry-secret"):
        assert not [line for line in leaked if secret in line], secret
    warnings = [line for line in result.err.splitlines() if "notification" in line]
    assert len(warnings) == 1 and f"https://127.0.0.1:{port}/…" in warnings[0]


@pytest.mark.parametrize(
    "target",
    [
        "https://user:t0ken-secret@/no-host",
        "https://[::1/t0ken-secret",
        "https://hooks.example.com:99999/t0ken-secret",
        "hooks.example.com/t0ken-secret",
        "https://hooks.example.com/t0ken-secret\n::error::x",
    ],
)
def test_malformed_notify_target_is_not_echoed(seed: Seeder, run, workdir: Path, actions, target: str) -> None:
    result = run("drain", "--store", f"file://{workdir}/m", "--queue", "work", "--notify", target)
    one_error(result, 2, "--notify")
    assert "t0ken-secret" not in _all_output(result)
    workflow_commands(_all_output(result))


def test_argparse_errors_are_escaped(run, actions) -> None:
    result = run("drain", "--bogus=::error::x%0A##[add-mask]y")
    one_error(result, 2, "unrecognized arguments")
    workflow_commands(_all_output(result))


class _Redirect(BaseHTTPRequestHandler):
    """A webhook that answers 302 to another host, and that other host, which notes what reached it."""

    reached: ClassVar[list[dict[str, str]]] = []
    target = ""

    def do_POST(self) -> None:
        self.send_response(302)
        self.send_header("Location", _Redirect.target)
        self.end_headers()

    def do_GET(self) -> None:
        _Redirect.reached.append(dict(self.headers))
        self.send_response(200)
        self.end_headers()

    do_PUT = do_GET

    def log_message(self, *args: Any) -> None:
        pass


def test_a_redirecting_webhook_gets_no_credentials_and_is_a_warning(seed: Seeder, run, workdir: Path) -> None:
    """urllib would follow the 302, carrying the Authorization header made from the URL's user:password
    to the other host, and turn the POST into a GET: the message lost, silently."""
    world(seed)
    servers = [HTTPServer(("127.0.0.1", 0), _Redirect) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    _Redirect.reached, _Redirect.target = [], f"http://localhost:{servers[1].server_port}/collect"
    try:
        url = f"http://hook-user:t0ken@127.0.0.1:{servers[0].server_port}/services/hook"
        result = run("drain", "--store", f"file://{workdir}/m", "--queue", "work", "--deploy-id", "d1", "--notify", url)
    finally:
        for server in servers:
            server.shutdown()
    assert result.code == 0, result.err
    assert _Redirect.reached == []
    warnings = [line for line in result.err.splitlines() if "notification" in line]
    assert len(warnings) == 1 and "HTTP 302" in warnings[0] and "t0ken" not in result.out + result.err
