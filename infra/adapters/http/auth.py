"""Bearer tokens: HS256 JWTs carrying a tenant, a subject and roles."""
import math
import re
import time
from dataclasses import dataclass

import jwt

from domain.text import unstorable

ROLES = frozenset({"operator", "approver", "auditor", "admin", "policy"})
# \A and \Z, not ^ and $: $ also matches before a final newline, and infra/entry/cli.py calls .match.
TENANT_ID = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
SUBJECT = re.compile(r"[^\x00-\x1f]{1,200}")
NUMERIC_DATES = ("exp", "nbf", "iat")
# PyJWT reads these claims with int(), so "9999999999" and true would pass; we check them ourselves.
UNCHECKED_TIMES = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}


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
                            options={"require": ["exp", "sub", "tenant_id", "roles", "aud"], **UNCHECKED_TIMES})
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
    check_numeric_dates(claims)
    check_times(claims, time.time())
    return principal_from(claims)


def check_numeric_dates(claims: dict) -> None:
    """RFC 7519: exp, nbf and iat are NumericDates, JSON numbers of seconds since the epoch."""
    for claim in NUMERIC_DATES:
        if claims.get(claim) is not None and not is_numeric_date(claims[claim]):
            raise AuthError("invalid_token", f"the token's {claim} must be a number of seconds (NumericDate)")


def check_times(claims: dict, now: float) -> None:
    if claims["exp"] <= now:
        raise AuthError("token_expired", "the bearer token has expired")
    for claim in ("nbf", "iat"):
        if claims.get(claim) is not None and claims[claim] > now:
            raise AuthError("invalid_token", f"the token is not valid yet ({claim} is in the future)")


def is_numeric_date(value: object) -> bool:
    """A JSON number: not a bool (an int to Python), not a string, not NaN or Infinity."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


def principal_from(claims: dict) -> Principal:
    tenant, subject, roles = claims["tenant_id"], claims["sub"], claims["roles"]
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        raise AuthError("invalid_token", "the token's tenant_id is not a valid tenant id")
    if not isinstance(subject, str) or not SUBJECT.fullmatch(subject) or unstorable(subject):
        raise AuthError("invalid_token", "the token's sub must be 1-200 characters without control characters")
    if (not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles)
            or not set(roles) <= ROLES):
        raise AuthError("invalid_token", f"the token's roles must be a non-empty list drawn "
                                         f"from {sorted(ROLES)}")
    return Principal(tenant, subject, tuple(sorted(set(roles))))
