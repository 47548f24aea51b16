"""Request and response bodies of the HTTP API (they also document the OpenAPI schema).

Request models carry the service's bounds (``max_k``, ``max_batch``), so they are built per
app by ``request_models``. Responses are serialised by hand on the hot path; the response
models here document them and the schema tests check the two agree.
"""

from typing import Annotated, Any, Literal

import annotated_types

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator,
                      StrictBool, StrictInt, StrictStr, WithJsonSchema)
from pydantic_core import PydanticCustomError

MAX_ID_LENGTH = 2048
"""The longest id a request may name (URLs used as ids fit)."""
Id = StrictInt | StrictStr
"""An external user or item id: an integer or a string, as the run's vocabulary holds it."""


#: A float holds every integer below this exactly; from here on a JSON number written with
#: ".0" or an exponent may have been rounded when read (9007199254740993.0 is read as
#: 9007199254740992.0), so it names no integer for sure
FLOAT_EXACT = 2**53
_ROUNDED = ("a number written with '.0' or an exponent is read as a float, which holds "
            f"integers exactly only below 2**53 ({FLOAT_EXACT})")


def _check_id(v: Any) -> int | str:
    if isinstance(v, int) and not isinstance(v, bool):
        # (a bound on digits, as on text: 2,048 digits need at most 6,804 bits)
        if v.bit_length() > 6_700 and len(str(abs(v))) > MAX_ID_LENGTH:
            raise ValueError(f"an id is an integer of at most {MAX_ID_LENGTH} digits or a "
                             f"string of 1 to {MAX_ID_LENGTH} characters")
        return v
    if isinstance(v, float) and v.is_integer():  # 10.0 is an integer in JSON Schema
        if abs(v) < FLOAT_EXACT:
            return int(v)
        # (the library's float ids are ints below 2**53 too: ``integral_as_int``)
        raise ValueError(f"{_ROUNDED}, so this one may name another id "
                         "(9007199254740993.0 is read as 9007199254740992.0): send the id "
                         "as a JSON integer (no '.0', no exponent) or as text")
    if isinstance(v, str) and 1 <= len(v) <= MAX_ID_LENGTH:
        if any("\ud800" <= c <= "\udfff" for c in v):  # JSON "\ud800": no character
            raise ValueError("an id may not hold a lone surrogate (\\ud800-\\udfff)")
        return v
    raise ValueError(f"an id is an integer or a string of 1 to {MAX_ID_LENGTH} characters")


RequestId = Annotated[Any, PlainValidator(_check_id), WithJsonSchema({"anyOf": [
    {"type": "integer"}, {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}]})]
"""An id in a request: one error message, not one per union member."""


def _json_integer(v: Any) -> Any:
    if isinstance(v, (bool, str)):
        raise PydanticCustomError("int_type", "Input should be a JSON integer, not a {kind}",
                                  {"kind": "boolean" if isinstance(v, bool) else "string"})
    if isinstance(v, float) and v.is_integer() and abs(v) >= FLOAT_EXACT:
        # pydantic said "Unable to parse input string as an integer" of 1e20
        raise PydanticCustomError("int_from_float", "Input should be a JSON integer: "
                                  f"{_ROUNDED}")
    return v


# `_json_integer` guards an integer in a request body: ``true`` and ``"5"`` are refused
# (pydantic's lax mode would read them as 1 and 5); ``5.0`` is an integer in JSON Schema, so
# it is read as 5 (``5.5`` is refused by pydantic, a float from 2**53 on here). (Query
# parameters arrive as strings: they keep plain ``int``.)


class Error(BaseModel):
    """Every error response: ``detail`` is a sentence naming the field or id at fault."""

    model: str | None = Field(None, description="the served model (absent when the request "
                                                "was refused before it reached the model: "
                                                "a body too large, a host not served)")
    detail: str
    errors: list[dict[str, Any]] | None = None


class Item(BaseModel):
    item_id: Id
    title: str
    score: float = Field(description="the model's score; in a `fallback: popular` list, the "
                                     "item's number of training interactions")


class ItemRef(BaseModel):
    item_id: Id
    title: str


class UnknownFilterIds(BaseModel):
    allow: int = Field(description="ids of the request's `allow` the model does not know "
                                   "(ignored)")
    deny: int = Field(description="ids of the request's `deny` the model does not know "
                                  "(ignored: an unknown item is in no list anyway)")


_UNKNOWN = Field(None, description="present when the request gives `allow` or `deny`: how "
                                   "many of their ids the model does not know")


class Recommendations(BaseModel):
    model: str = Field(description="`name@version` of the model that answered")
    user_id: Id
    items: list[Item] = Field(description="best first; fewer than k when fewer remain")
    fallback: Literal["popular"] | None = Field(
        None, description="'popular' when the user is unknown and fallback=popular was asked")
    unknown_filter_ids: UnknownFilterIds | None = _UNKNOWN


class UserResult(BaseModel):
    user_id: Id
    items: list[Item]
    fallback: Literal["popular"] | None = None


class BatchRecommendations(BaseModel):
    model: str
    k: int
    results: list[UserResult] = Field(description="one per requested user, in request order")
    unknown_filter_ids: UnknownFilterIds | None = _UNKNOWN


class HistoryRecommendations(BaseModel):
    model: str
    items: list[Item]
    unknown_filter_ids: UnknownFilterIds | None = _UNKNOWN


class SimilarItems(BaseModel):
    model: str
    item_id: Id
    title: str
    items: list[Item]
    unknown_filter_ids: UnknownFilterIds | None = _UNKNOWN


class ItemDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    item_id: Id
    title: str
    popularity: float | int | None = None


class ItemSearchHit(BaseModel):
    item_id: Id
    title: str
    popularity: float | int


class ItemSearch(BaseModel):
    model: str
    total: int = Field(description="matches before `limit`")
    items: list[ItemSearchHit]


class UserHistory(BaseModel):
    model: str
    user_id: Id
    count: int = Field(description="items the user interacted with in training")
    items: list[ItemRef] = Field(description="the first `limit` of them")


class UserList(BaseModel):
    model: str
    total: int
    user_ids: list[Id]


class ModelInfo(BaseModel):
    name: str
    version: str
    label: str
    trained_at: str | None
    loaded_at: str
    twotower_version: str | None
    n_items: int
    n_users: int
    supports_history: bool
    config: dict[str, Any]
    index: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, Any] | None
    max_k: int = Field(description="the largest `k` the service accepts")
    deny: dict[str, Any] | None = Field(
        description="the server-wide deny list (`twotower serve --deny FILE`): its `file` "
                    "(`<stdin>` for standard input, null for ids given in code), whether a "
                    "reload reads it again (`reread_on_reload`: a file, not standard "
                    "input), its `ids`, the `items` denied in every answer, the `unknown_ids`"
                    " of the list this model does not know, when it was read (`read_at`, "
                    "UTC) and a `digest` of its set of ids; null when none is set")


class Health(BaseModel):
    status: Literal["ok"]
    model: str


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_dir: str | None = Field(None, min_length=1, max_length=4096,
                                description="run directory to load; default: the current "
                                            "run's directory again")


class ReloadResult(BaseModel):
    status: Literal["reloaded"]
    previous: str
    current: str
    load_seconds: float
    run_loaded: bool = Field(description="whether the run's files were read (false: they "
                                         "are those served, whose model was kept; only the "
                                         "deny list was read again)")


def request_models(max_k: int, max_batch: int, max_filter: int = 10_000
                   ) -> dict[str, type[BaseModel]]:
    """The request bodies, bounded by this app's settings."""
    allow_field = Field(None, min_length=1, max_length=max_filter, description=(
        f"1..{max_filter} item ids: only these may be listed (ids the model does not know "
        "are ignored, but at least one must be known)"))
    deny_field = Field(None, max_length=max_filter, description=(
        f"up to {max_filter} item ids never listed (e.g. out of stock; ids the model does "
        "not know are ignored), on top of the server's own deny list"))
    Ids = list[RequestId] | None  # noqa: N806
    # the bounds on the int, before the validator: the schema then documents them
    k_type = Annotated[int, annotated_types.Interval(ge=1, le=max_k),
                       BeforeValidator(_json_integer)] | None
    k_field = Field(None, description=f"list length, 1..{max_k} and at most the catalogue "
                                      f"size; default {min(10, max_k)}, or the catalogue size "
                                      "when smaller")
    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_ids: list[RequestId] = Field(min_length=1, max_length=max_batch,
                                   description=f"1..{max_batch} user ids")
        k: k_type = k_field  # type: ignore[valid-type]
        exclude_seen: StrictBool = True
        fallback: Literal["none", "popular"] = "none"
        allow: Ids = allow_field  # type: ignore[valid-type]
        deny: Ids = deny_field  # type: ignore[valid-type]

    class HistoryRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        item_ids: list[RequestId] = Field(min_length=1, max_length=max_batch,
                                   description=f"1..{max_batch} item ids the user interacted "
                                               "with, oldest first")
        k: k_type = k_field  # type: ignore[valid-type]
        exclude_history: StrictBool = Field(True, description="leave the given items out")
        allow: Ids = allow_field  # type: ignore[valid-type]
        deny: Ids = deny_field  # type: ignore[valid-type]

    class SimilarRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        item_id: RequestId
        k: k_type = Field(None, description=f"list length, 1..{max_k} and at most the "  # type: ignore[valid-type]
                                            "catalogue size less the item itself; default "
                                            f"{min(10, max_k)}, or that when smaller")
        allow: Ids = allow_field  # type: ignore[valid-type]
        deny: Ids = deny_field  # type: ignore[valid-type]

    return {"batch": BatchRequest, "history": HistoryRequest, "similar": SimilarRequest}
