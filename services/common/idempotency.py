"""What makes a retried request recognisable: a digest of its meaningful content.

A replay with the same key and the same fingerprint gets the first result; the
same key with another fingerprint is IDEMPOTENCY_KEY_REUSED.
"""

import hashlib
import json
from collections.abc import Mapping


def fingerprint(content: Mapping[str, object]) -> str:
    """A stable digest of a request's fields (key order does not matter)."""
    return hashlib.sha256(json.dumps(dict(content), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
