"""gRPC adapter for the identity service.

Every RPC of the contract is registered; those not built yet inherit the
generated base behaviour and answer UNIMPLEMENTED (reason NOT_IMPLEMENTED).
"""

from gofund.identity.v1 import identity_service_pb2_grpc

from services.common.errors import ErrorTable

ERRORS = ErrorTable(domain="identity.gofund")


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    """Public RPCs (routed by Envoy)."""


class IdentityInternalServicer(identity_service_pb2_grpc.IdentityInternalServiceServicer):
    """Internal RPCs (other GoFund services only)."""
