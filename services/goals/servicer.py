"""gRPC adapter for the goals service.

Every RPC of the contract is registered; those not built yet inherit the
generated base behaviour and answer UNIMPLEMENTED (reason NOT_IMPLEMENTED).
"""

from gofund.goals.v1 import goals_service_pb2_grpc

from services.common.errors import ErrorTable

ERRORS = ErrorTable(domain="goals.gofund")


class GoalsServicer(goals_service_pb2_grpc.GoalsServiceServicer):
    """Public RPCs (routed by Envoy)."""


class GoalsInternalServicer(goals_service_pb2_grpc.GoalsInternalServiceServicer):
    """Internal RPCs (other GoFund services only)."""
