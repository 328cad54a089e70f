"""gRPC adapter for the ledger service.

Every RPC of the contract is registered; those not built yet inherit the
generated base behaviour and answer UNIMPLEMENTED (reason NOT_IMPLEMENTED).
"""

from gofund.ledger.v1 import ledger_service_pb2_grpc

from services.common.errors import ErrorTable

ERRORS = ErrorTable(domain="ledger.gofund")


class LedgerServicer(ledger_service_pb2_grpc.LedgerServiceServicer):
    """Public RPCs (routed by Envoy)."""


class LedgerInternalServicer(ledger_service_pb2_grpc.LedgerInternalServiceServicer):
    """Internal RPCs (other GoFund services only)."""
