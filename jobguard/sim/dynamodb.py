"""moto's DynamoDB made to cost what AWS's does for a transaction.

moto's TransactWriteItems keeps, for its rollback, a deep copy of each table the transaction touches, made
once for every item it holds: O(table) a write. A manifest saved 99 records a transaction then costs
O(records²): the DynamoDB tests took minutes and a manifest of 100 000 records hours. Here the copy for the
rollback shares the table's items and copies only the mapping that holds them: a Put or Delete replaces an
item in that mapping, never changes one (jobguard sends no Update: the Terraform module does not allow it).
moto still checks every condition and applies every write; the simulation's write lock keeps each
transaction atomic against every other conditional write.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

_rollback_copy = threading.local()


def install() -> None:
    """Patch moto's DynamoDB backend (process-wide, once)."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items
    if getattr(original, "jobguard", False):
        return

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        _rollback_copy.on = True
        try:
            original(self, transact_items)
        finally:
            _rollback_copy.on = False

    transact_write_items.jobguard = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    Table.__deepcopy__ = _deepcopy  # type: ignore[attr-defined]


def _deepcopy(self: Any, memo: dict[int, Any]) -> Any:
    clone = copy.copy(self)
    memo[id(self)] = clone
    if getattr(_rollback_copy, "on", False):  # the items shared, the mapping holding them copied
        clone.items = copy.copy(self.items)
        for key, value in self.items.items():
            if isinstance(value, dict):
                clone.items[key] = dict(value)
        return clone
    clone.__dict__ = copy.deepcopy(self.__dict__, memo)  # any other copy (a backup, a restore): whole, as moto's
    return clone
