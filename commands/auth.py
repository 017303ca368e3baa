"""Bearer tokens: HS256 JWTs carrying a tenant, a subject and roles."""
import re
import time
from dataclasses import dataclass

import jwt

ROLES = frozenset({"operator", "approver", "auditor", "admin", "policy"})
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class AuthError(Exception):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    subject: str
    roles: tuple[str, ...]


def mint(secret: str, tenant_id: str, subject: str, roles: list[str], audience: str = "runledger",
         ttl_s: int = 3600) -> str:
    """Issue a token (for the demo, tests and operators holding the secret)."""
    now = int(time.time())
    claims = {"sub": subject, "tenant_id": tenant_id, "roles": roles, "aud": audience,
              "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


def authenticate(token: str, secret: str, audience: str) -> Principal:
    """Verify a token and return who it speaks for; raise AuthError naming what is wrong."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=audience,
                            options={"require": ["exp", "sub", "tenant_id", "roles", "aud"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token_expired", "the bearer token has expired") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("invalid_token", "the token's algorithm is not accepted (HS256 only)") from None
    except jwt.InvalidSignatureError:
        raise AuthError("invalid_token", "the token's signature does not verify") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthError("invalid_token", f"the token lacks the claim {error.claim!r}") from None
    except jwt.InvalidAudienceError:
        raise AuthError("invalid_token", f"the token is not for audience {audience!r}") from None
    except jwt.PyJWTError as error:
        raise AuthError("invalid_token", f"the token cannot be read: {error}") from None
    return principal_from(claims)


def principal_from(claims: dict) -> Principal:
    tenant, subject, roles = claims["tenant_id"], claims["sub"], claims["roles"]
    if not isinstance(tenant, str) or not TENANT_ID.match(tenant):
        raise AuthError("invalid_token", "the token's tenant_id is not a valid tenant id")
    if not isinstance(subject, str) or not 0 < len(subject) <= 200:
        raise AuthError("invalid_token", "the token's sub must be a non-empty string")
    if not isinstance(roles, list) or not roles or not set(roles) <= ROLES:
        raise AuthError("invalid_token", f"the token's roles must be a non-empty list drawn "
                                         f"from {sorted(ROLES)}")
    return Principal(tenant, subject, tuple(sorted(set(roles))))
