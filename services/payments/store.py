"""Payments' MongoDB collections and their indexes. Repositories are added with the service."""

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

# Each collection with the indexes the design relies on: uniqueness makes
# retries and duplicate webhooks harmless; the TTL index forgets idempotency
# keys after `expiresAt` (24 h after first use).
INDEXES: dict[str, list[IndexModel]] = {
    "payments": [
        IndexModel([("paymentId", ASCENDING)], unique=True, name="paymentId_unique"),
        IndexModel([("paystackReference", ASCENDING)], unique=True, name="paystackReference_unique"),
        IndexModel([("status", ASCENDING), ("createdAt", ASCENDING)], name="status_createdAt"),
    ],
    "webhook_events": [
        IndexModel([("eventId", ASCENDING)], unique=True, name="eventId_unique"),
        IndexModel([("processed", ASCENDING), ("receivedAt", ASCENDING)], name="processed_receivedAt"),
    ],
    "idempotency_keys": [
        IndexModel([("key", ASCENDING)], unique=True, name="key_unique"),
        IndexModel([("expiresAt", ASCENDING)], expireAfterSeconds=0, name="expiresAt_ttl"),
    ],
}


async def ensure_indexes(database: AsyncDatabase[dict[str, object]]) -> None:
    """Create the collections' indexes; a no-op when they already exist."""
    for collection, indexes in INDEXES.items():
        await database[collection].create_indexes(indexes)
