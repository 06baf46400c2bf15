"""The error responses every route documents: one JSON shape, `{"detail": "what was wrong"}`."""
from __future__ import annotations

from api.schemas import Error

INVALID = {422: {"model": Error, "description": "a field is missing or invalid, or a photo cannot be decoded"}}
BAD_INPUT = {
    400: {"model": Error, "description": "the body is not a well-formed form"},
    413: {"model": Error, "description": "the body, a photo or its pixel count is over the limit"},
    415: {"model": Error, "description": "the body is not a form (multipart/form-data or application/x-www-form-urlencoded)"},
    **INVALID,
}
WRITE = {
    401: {"model": Error, "description": "missing or wrong X-API-Key header"},
    403: {"model": Error, "description": "writes are disabled: the server has no FBM_API_KEY"},
    503: {"model": Error, "description": "the disk refused the write (full or read-only); nothing was changed"},
}
UNINDEXABLE = {
    422: {
        "model": Error,
        "description": "a field is missing or invalid, a photo cannot be decoded, or the listing has no photo and no word the model knows, so it cannot be indexed",
    }
}
INVALID_ID = {422: {"model": Error, "description": "the id is malformed, or a field or body was sent that the route does not read"}}
NOT_FOUND = {404: {"model": Error, "description": "no such listing or photo"}}
INVALID_QUERY = {422: {"model": Error, "description": "a parameter is missing or invalid"}}
