"""moto's DynamoDB made to cost what AWS's does for a transaction.

moto's TransactWriteItems keeps, for its rollback, a deep copy of each table the transaction touches, made
once for every item it holds: O(table) a write. A manifest saved 99 records a transaction then costs
O(records²); and moto keeps every model it makes until the next reset, so the copies were never freed:
60 transactions of 99 items of 1 KB took 208 s and 14.5 GB (here 0.7 s and 185 MB, the process's peak).
The DynamoDB tests took minutes and gigabytes, a manifest of 100 000 records could not be written. Here
the copy for the rollback shares the table's items and copies only the mapping that holds them: a Put or Delete replaces an
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
    if getattr(_rollback_copy, "on", False):
        # The items shared, the mapping holding them copied. Made without moto's model `__new__`, which keeps every
        # instance made until the next reset: moto's own copies (one a transaction's item) held gigabytes.
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.items = copy.copy(self.items)
        for key, value in self.items.items():
            if isinstance(value, dict):
                clone.items[key] = dict(value)
        return clone
    clone = copy.copy(self)  # any other copy (a backup, a restore): whole, as moto's
    memo[id(self)] = clone
    clone.__dict__ = copy.deepcopy(self.__dict__, memo)
    return clone
