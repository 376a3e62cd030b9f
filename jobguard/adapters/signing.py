"""Signing manifests, with a key that write access to the store does not give.

`kms:KEY` signs with an AWS KMS HMAC key (GenerateMac / VerifyMac; the key never leaves KMS and
the Terraform module lets only jobguard's role use it). `file:PATH` signs with a local key file
(for the file store: created on first use, readable by its owner only). What is signed is the
SHA-256 of the manifest's canonical form (KMS takes at most 4 KiB to MAC).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConfigError, StoreError, UsageError
from .aws import Aws, translate
from .retry import error_code

ALGORITHM = "HMAC_SHA_256"
KEY_BYTES = 32


class Signer(Protocol):
    """Makes and checks a manifest's MAC."""

    key: str  # as configured: kms:ID or file:PATH

    def sign(self, digest: bytes) -> str:
        """The MAC of `digest`, base64."""

    def verify(self, digest: bytes, mac: str) -> bool:
        """True when `mac` is this key's MAC of `digest`."""


class KmsSigner:
    """An AWS KMS HMAC_256 key."""

    def __init__(self, aws: Aws, key_id: str) -> None:
        self.aws, self.key_id, self.key = aws, key_id, f"kms:{key_id}"

    def sign(self, digest: bytes) -> str:
        answer = self.aws.call(
            "kms",
            "generate_mac",
            f"sign the manifest with KMS key {self.key_id}",
            KeyId=self.key_id,
            Message=digest,
            MacAlgorithm=ALGORITHM,
        )
        return base64.b64encode(answer["Mac"]).decode()

    def verify(self, digest: bytes, mac: str) -> bool:
        try:
            raw = base64.b64decode(mac, validate=True)
        except ValueError:
            return False
        try:
            answer = self.aws.attempts(
                "kms",
                "VerifyMac",
                lambda: self.aws.send("kms", "verify_mac", KeyId=self.key_id, Message=digest, MacAlgorithm=ALGORITHM, Mac=raw),
            )
        except ClientError as exc:
            if error_code(exc) == "KMSInvalidMacException":
                return False
            raise translate(exc, f"verify the manifest with KMS key {self.key_id}") from None
        except (BotoCoreError, OSError) as exc:
            raise translate(exc, f"verify the manifest with KMS key {self.key_id}") from None
        return bool(answer.get("MacValid"))


class FileSigner:
    """HMAC-SHA256 with a key kept in a local file."""

    def __init__(self, path: Path, create: bool) -> None:
        self.path, self.key = path, f"file:{path}"
        self._secret = _read_or_create(path, create)

    def sign(self, digest: bytes) -> str:
        return base64.b64encode(hmac.new(self._secret, digest, hashlib.sha256).digest()).decode()

    def verify(self, digest: bytes, mac: str) -> bool:
        return hmac.compare_digest(self.sign(digest), mac)


def default_key_file() -> Path:
    """Where the file store's key lives unless configured: outside any store folder."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jobguard" / "signing.key"


def open_signer(key: str, aws: Aws | None, create: bool) -> Signer:
    """The signer a `signing-key` setting names."""
    kind, _, value = key.partition(":")
    if kind == "kms" and value and aws is not None:
        return KmsSigner(aws, value)
    if kind == "file" and value:
        return FileSigner(Path(value).expanduser(), create)
    raise ConfigError(f"signing-key {key!r}: expected kms:KEY_ID_OR_ARN or file:PATH")


def _read_or_create(path: Path, create: bool) -> bytes:
    try:
        if path.is_file():
            secret = base64.b64decode(path.read_bytes().strip(), validate=True)
            if len(secret) < KEY_BYTES:
                raise UsageError(f"{path}: signing key shorter than {KEY_BYTES} bytes")
            return secret
        if path.exists():
            raise UsageError(f"{path}: the signing key is not a regular file")
        if not create:
            raise UsageError(f"{path}: no such signing key", hint="manifests written with another key cannot be verified here")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = secrets.token_bytes(KEY_BYTES)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(base64.b64encode(secret) + b"\n")
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temp, path)  # atomic, and never replaces a key another process made at the same moment
        except FileExistsError:
            return _read_or_create(path, create=False)
        finally:
            os.unlink(temp)
        return secret
    except ValueError:
        raise UsageError(f"{path}: not a jobguard signing key (base64 expected)") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot use the signing key ({exc.strerror or exc})") from None
