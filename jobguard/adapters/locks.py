"""What a deploy lock holds: who took it and until when. Each store keeps these its own way."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone


@dataclass(frozen=True)
class LockRecord:
    """A lock holder: a unique id, a description a person can act on, and an expiry (epoch s)."""

    holder_id: str
    holder: str
    acquired_at: float
    expires_at: float

    @property
    def expired(self) -> bool:
        """True once the holder stopped renewing it (a killed process) long enough."""
        return self.expires_at < time.time()

    def renewed(self, ttl: float) -> LockRecord:
        """The same holder, valid for another `ttl` seconds."""
        return replace(self, expires_at=time.time() + ttl)

    def since(self) -> str:
        """When it was taken, in UTC."""
        return datetime.fromtimestamp(self.acquired_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> LockRecord:
        """Read a stored lock; an unreadable one counts as expired, so it cannot block forever."""
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return cls(holder_id="", holder="an unreadable lock", acquired_at=0.0, expires_at=0.0)
