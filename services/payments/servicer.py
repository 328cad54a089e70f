"""gRPC adapter for the payments service.

Every RPC of the contract is registered; those not built yet inherit the
generated base behaviour and answer UNIMPLEMENTED (reason NOT_IMPLEMENTED).
"""

from gofund.payments.v1 import payments_service_pb2_grpc

from services.common.errors import ErrorTable

ERRORS = ErrorTable(domain="payments.gofund")


class PaymentsServicer(payments_service_pb2_grpc.PaymentsServiceServicer):
    """Public RPCs (routed by Envoy)."""


class PaymentsInternalServicer(payments_service_pb2_grpc.PaymentsInternalServiceServicer):
    """Internal RPCs (other GoFund services only)."""
