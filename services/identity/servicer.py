"""gRPC adapter for identity: proto in, use case, proto out. No rules, no SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal

import grpc
from gofund.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc

from services.common import paging
from services.common.context import Principal, caller, caller_or_none
from services.common.errors import ErrorMapping, ErrorTable, FieldViolation, ValidationFailed
from services.common.proto import timestamp
from services.identity import domain, store
from services.identity.domain import Channel
from services.identity.revocations import RevocationEvent, RevocationFeed, RevocationFeedUnavailable, SubscriberClosed
from services.identity.use_cases import DeviceInfo, Identity, UserView

Code = grpc.StatusCode
ERRORS = ErrorTable(
    domain="identity.gofund",
    entries={
        domain.EmailTaken: ErrorMapping(Code.ALREADY_EXISTS, "EMAIL_TAKEN"),
        domain.UsernameTaken: ErrorMapping(Code.ALREADY_EXISTS, "USERNAME_TAKEN"),
        domain.InvalidCredentials: ErrorMapping(Code.UNAUTHENTICATED, "INVALID_CREDENTIALS"),
        domain.UserNotFound: ErrorMapping(Code.NOT_FOUND, "USER_NOT_FOUND"),
        domain.SessionNotFound: ErrorMapping(Code.NOT_FOUND, "SESSION_NOT_FOUND"),
        domain.RoleNotFound: ErrorMapping(Code.NOT_FOUND, "ROLE_NOT_FOUND"),
        domain.RoleExists: ErrorMapping(Code.ALREADY_EXISTS, "ROLE_NAME_TAKEN"),
        domain.LastAdmin: ErrorMapping(Code.FAILED_PRECONDITION, "LAST_ADMIN"),
        domain.InvalidCode: ErrorMapping(Code.INVALID_ARGUMENT, "INVALID_CODE"),
        domain.CodeExpired: ErrorMapping(Code.FAILED_PRECONDITION, "CODE_EXPIRED"),
        domain.NoPendingCode: ErrorMapping(Code.FAILED_PRECONDITION, "NO_PENDING_CODE"),
        domain.TooManyAttempts: ErrorMapping(Code.FAILED_PRECONDITION, "TOO_MANY_ATTEMPTS"),
        domain.EmailAlreadyVerified: ErrorMapping(Code.FAILED_PRECONDITION, "EMAIL_ALREADY_VERIFIED"),
        domain.PhoneAlreadyVerified: ErrorMapping(Code.FAILED_PRECONDITION, "PHONE_ALREADY_VERIFIED"),
        domain.PhoneNotSet: ErrorMapping(Code.FAILED_PRECONDITION, "PHONE_NOT_SET"),
        domain.DeliveryFailed: ErrorMapping(Code.UNAVAILABLE, "DELIVERY_FAILED"),
        RevocationFeedUnavailable: ErrorMapping(Code.UNAVAILABLE, "REVOCATION_FEED_UNAVAILABLE"),
        SubscriberClosed: ErrorMapping(Code.UNAVAILABLE, "REVOCATION_FEED_UNAVAILABLE"),
    },
)

# Methods a caller may use without logging in.
ANONYMOUS = ("IdentityService/CreateUser", "IdentityService/CreateSession")
ProfileField = Literal["first_name", "last_name", "phone"]
PROFILE_FIELDS: tuple[ProfileField, ...] = ("first_name", "last_name", "phone")


def user_message(view: UserView) -> identity_pb2.User:
    user = view.user
    return identity_pb2.User(
        id=str(user.id),
        email=user.email,
        username=user.username,
        first_name=user.first_name,
        last_name=user.last_name,
        phone=user.phone,
        email_verified=user.email_verified,
        phone_verified=user.phone_verified,
        roles=list(view.roles),
        created_at=timestamp(user.created_at),
        updated_at=timestamp(user.updated_at),
    )


def session_message(row: store.Session, current_session_id: str) -> identity_pb2.Session:
    return identity_pb2.Session(
        id=str(row.id),
        user_id=str(row.user_id),
        user_agent=row.user_agent,
        ip_address=row.ip_address,
        device_name=row.device_name,
        created_at=timestamp(row.created_at),
        last_seen_at=timestamp(row.last_seen_at),
        expires_at=timestamp(row.expires_at),
        current=str(row.id) == current_session_id,
    )


def revocation_message(event: RevocationEvent) -> identity_pb2.Revocation:
    return identity_pb2.Revocation(
        seq=event.seq, user_id=event.user_id, session_id=event.session_id, revoked_at=timestamp(event.revoked_at)
    )


def role_message(role: store.Role) -> identity_pb2.Role:
    return identity_pb2.Role(
        name=role.name,
        description=role.description,
        permissions=list(role.permissions),
        created_at=timestamp(role.created_at),
    )


def client_address(ctx: grpc.aio.ServicerContext) -> str:
    """The client's address as Envoy saw it: the last X-Forwarded-For hop.

    Envoy is the first hop (xff_num_trusted_hops 0) and drops whatever
    X-Forwarded-For a client sent before appending the peer it saw; the last
    hop is the one it appended even if a client's header got through, so the
    address cannot be chosen by the client. Without the header (a GoFund
    service or a tool on the service port, which is not public), the gRPC peer.
    """
    metadata = {item.key: item.value for item in ctx.invocation_metadata() or ()}
    forwarded = str(metadata.get("x-forwarded-for", "")).split(",")[-1].strip()
    if forwarded:
        return forwarded
    peer = str(ctx.peer() or "")  # "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555"
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return rest.rsplit(":", 1)[0] if kind == "ipv4" else ""


def device(ctx: grpc.aio.ServicerContext, device_name: str) -> DeviceInfo:
    """User agent and client address of the caller."""
    metadata = {item.key: item.value for item in ctx.invocation_metadata() or ()}
    return DeviceInfo(
        user_agent=str(metadata.get("x-gofund-user-agent") or metadata.get("user-agent", "")),
        ip_address=client_address(ctx),
        device_name=device_name,
    )


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def CreateUser(
        self, request: identity_service_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.CreateUserResponse:
        view = await self.identity.register(
            email=request.email,
            username=request.username,
            password=request.password,
            first_name=request.first_name,
            last_name=request.last_name,
            phone=request.phone,
            client_address=client_address(context),
        )
        return identity_service_pb2.CreateUserResponse(user=user_message(view))

    async def CreateSession(
        self, request: identity_service_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.CreateSessionResponse:
        token, row, view = await self.identity.login(
            request.login, request.password, device(context, request.device_name)
        )
        return identity_service_pb2.CreateSessionResponse(
            token=token, session=session_message(row, str(row.id)), user=user_message(view)
        )

    async def DeleteCurrentSession(
        self, request: identity_service_pb2.DeleteCurrentSessionRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.DeleteCurrentSessionResponse:
        await self.identity.logout(caller())
        return identity_service_pb2.DeleteCurrentSessionResponse()

    async def GetCurrentUser(
        self, request: identity_service_pb2.GetCurrentUserRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.GetCurrentUserResponse:
        return identity_service_pb2.GetCurrentUserResponse(
            user=user_message(await self.identity.user(caller().user_id))
        )

    async def UpdateCurrentUser(
        self, request: identity_service_pb2.UpdateCurrentUserRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.UpdateCurrentUserResponse:
        paths = list(request.update_mask.paths)
        unknown = [p for p in paths if p not in PROFILE_FIELDS]
        if unknown:
            raise ValidationFailed(
                [FieldViolation("update_mask", f"cannot update {', '.join(unknown)}", "INVALID_UPDATE_MASK")]
            )
        # The mask's paths as field names (the check above left no other), in the mask's order.
        masked = [f for p in paths for f in PROFILE_FIELDS if f == p]
        fields = masked or [f for f in PROFILE_FIELDS if request.HasField(f)]
        changes: dict[str, str] = {f: getattr(request, f) for f in fields}
        view = await self.identity.update_profile(caller(), changes)
        return identity_service_pb2.UpdateCurrentUserResponse(user=user_message(view))

    async def ListCurrentUserSessions(
        self, request: identity_service_pb2.ListCurrentUserSessionsRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.ListCurrentUserSessionsResponse:
        principal = caller()
        size = paging.page_size(request.page_size)
        # Keyset on (created_at, id): sessions made in the same instant are neither skipped nor repeated.
        cursor = paging.decode_token(request.page_token, {"before": datetime, "before_id": str})
        before = (cursor["before"], cursor["before_id"]) if cursor else None
        rows = await self.identity.sessions(principal, before, size + 1)
        last = rows[size - 1] if len(rows) > size else None
        token = paging.encode_token({"before": last.created_at, "before_id": str(last.id)}) if last else ""
        return identity_service_pb2.ListCurrentUserSessionsResponse(
            sessions=[session_message(r, principal.session_id) for r in rows[:size]], next_page_token=token
        )

    async def DeleteSession(
        self, request: identity_service_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.DeleteSessionResponse:
        await self.identity.revoke_session(caller(), request.session_id)
        return identity_service_pb2.DeleteSessionResponse()

    async def RequestEmailVerification(
        self, request: identity_service_pb2.RequestEmailVerificationRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.RequestEmailVerificationResponse:
        await self.identity.request_code(caller(), Channel.EMAIL, client_address(context))
        return identity_service_pb2.RequestEmailVerificationResponse()

    async def VerifyEmail(
        self, request: identity_service_pb2.VerifyEmailRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.VerifyEmailResponse:
        view = await self.identity.verify_code(caller(), Channel.EMAIL, request.code)
        return identity_service_pb2.VerifyEmailResponse(user=user_message(view))

    async def RequestPhoneVerification(
        self, request: identity_service_pb2.RequestPhoneVerificationRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.RequestPhoneVerificationResponse:
        await self.identity.request_code(caller(), Channel.PHONE, client_address(context))
        return identity_service_pb2.RequestPhoneVerificationResponse()

    async def VerifyPhone(
        self, request: identity_service_pb2.VerifyPhoneRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.VerifyPhoneResponse:
        view = await self.identity.verify_code(caller(), Channel.PHONE, request.code)
        return identity_service_pb2.VerifyPhoneResponse(user=user_message(view))

    async def ListRoles(
        self, request: identity_service_pb2.ListRolesRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.ListRolesResponse:
        roles = await self.identity.roles(caller_or_none())
        return identity_service_pb2.ListRolesResponse(roles=[role_message(r) for r in roles])

    async def CreateRole(
        self, request: identity_service_pb2.CreateRoleRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.CreateRoleResponse:
        role = await self.identity.create_role(
            caller_or_none(), request.name, request.description, list(request.permissions)
        )
        return identity_service_pb2.CreateRoleResponse(role=role_message(role))

    async def AssignRole(
        self, request: identity_service_pb2.AssignRoleRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.AssignRoleResponse:
        view = await self.identity.assign_role(caller_or_none(), request.user_id, request.role_name)
        return identity_service_pb2.AssignRoleResponse(user=user_message(view))

    async def RevokeRole(
        self, request: identity_service_pb2.RevokeRoleRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.RevokeRoleResponse:
        view = await self.identity.revoke_role(caller_or_none(), request.user_id, request.role_name)
        return identity_service_pb2.RevokeRoleResponse(user=user_message(view))


class IdentityInternalServicer(identity_service_pb2_grpc.IdentityInternalServiceServicer):
    def __init__(self, identity: Identity, revocations: RevocationFeed) -> None:
        self.identity = identity
        self.revocations = revocations

    async def WatchRevocations(
        self, request: identity_service_pb2.WatchRevocationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[identity_service_pb2.WatchRevocationsResponse]:
        subscriber = await self.revocations.subscribe()
        try:
            # Everything up to `head` was dispatched before this subscriber was
            # registered, so it is in the table; everything after reaches its queue.
            head = self.revocations.dispatched_seq
            last = head
            async for events, last, reset in self.identity.revocation_backlog(
                request.after_seq if request.HasField("after_seq") else None, head
            ):
                yield identity_service_pb2.WatchRevocationsResponse(
                    revocations=[revocation_message(event) for event in events], seq=last, reset=reset
                )
                self.revocations.sent(subscriber, last)
            while True:
                batch = [event for event in await subscriber.next_batch() if event.seq > last]
                if not batch:
                    continue
                last = batch[-1].seq
                yield identity_service_pb2.WatchRevocationsResponse(
                    revocations=[revocation_message(event) for event in batch], seq=last
                )
                self.revocations.sent(subscriber, last)
        finally:
            self.revocations.unsubscribe(subscriber)

    async def Authenticate(
        self, request: identity_service_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.AuthenticateResponse:
        principal, user = await self.identity.resolve(request.token)
        return identity_service_pb2.AuthenticateResponse(
            principal=identity_pb2.Principal(
                user_id=principal.user_id,
                session_id=principal.session_id,
                roles=sorted(principal.roles),
                permissions=sorted(principal.permissions),
                email=user.email,
                username=user.username,
            )
        )

    async def GetUser(
        self, request: identity_service_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.GetUserResponse:
        return identity_service_pb2.GetUserResponse(user=user_message(await self.identity.user(request.user_id)))

    async def BatchGetUsers(
        self, request: identity_service_pb2.BatchGetUsersRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.BatchGetUsersResponse:
        if len(request.user_ids) > paging.MAX_PAGE_SIZE:
            raise ValidationFailed([FieldViolation("user_ids", "at most 500", "TOO_MANY_USER_IDS")])
        views = await self.identity.users(list(request.user_ids))
        return identity_service_pb2.BatchGetUsersResponse(users=[user_message(v) for v in views])


class LocalAuthenticator:
    """Identity resolves tokens itself, without a network hop."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def authenticate(self, token: str) -> Principal:
        return await self.identity.authenticate(token)
