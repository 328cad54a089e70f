"""The gRPC metadata names GoFund's own calls carry, in one module that imports
nothing: clients set them and interceptors read them, so neither has to import the
other (auth and clients imported each other for one constant)."""

# The credential a GoFund service presents on another's internal service.
SERVICE_CREDENTIAL_HEADER = "x-gofund-service-credential"
# An end user's session token: `Bearer <token>`.
AUTHORIZATION_HEADER = "authorization"
# Made by Envoy for every request, propagated on every call and logged everywhere.
REQUEST_ID_HEADER = "x-request-id"
