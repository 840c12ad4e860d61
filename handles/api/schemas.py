"""What the API accepts and what it answers, as pydantic schemas: Ninja validates each request with them and
generates the OpenAPI document (/api/v1/openapi.json) from them, so the two cannot drift apart.

Input fields are checked by the project's own validators (handles.validators, the same the admin uses), in
the order Django's form fields ran them, and every refusal carries the stable code of docs/api.md
(`invalid_url`, `suffix_too_long`, `blank`, `unknown_field` ...); handles.api.errors turns them into our
error body. They check shape and syntax only; the services check state (exists, deleted, allowed ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import (
    MaxLengthValidator,
    MaxValueValidator,
    MinValueValidator,
    ProhibitNullCharactersValidator,
    RegexValidator,
)
from ninja import Schema
from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from handles.models import Handle, HandleRequest
from handles.validators import (
    PREFIX_RE,
    validate_new_suffix,
    validate_prefix,
    validate_suffix,
    validate_target_url,
)

MAX_PAGE_SIZE = 1000
MAX_CURSOR = 200  # characters: more than any cursor the list gives out
SOURCE_SYSTEM_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
SOURCE_SYSTEM_VALIDATOR = RegexValidator(SOURCE_SYSTEM_PATTERN, "Lower-case letters, digits, '.', '_' and '-'.",
                                         code="invalid_source_system")
Problem = tuple[str, str]  # (code, message)


# --- Refusals -------------------------------------------------------------------------------------
def refuse(problems: list[Problem]) -> PydanticCustomError:
    """One field's problems as a pydantic error: the first names it, all of them travel in its context."""
    code, message = problems[0]
    return PydanticCustomError(code, "{message}", {"message": message, "problems": problems})


def _problems(value: Any, checks: Iterable[Callable[[Any], None]]) -> list[Problem]:
    """Run every check, as a Django form field runs its validators, and keep every refusal."""
    found: list[Problem] = []
    for check in checks:
        try:
            check(value)
        except DjangoValidationError as exc:
            found.extend((error.code or "invalid", " ".join(error.messages)) for error in exc.error_list)
    return found


REQUIRED: Problem = ("required", "This field is required.")
BLANK: Problem = ("blank", "Empty; leave the field out instead.")


# --- Field types ----------------------------------------------------------------------------------
def text(*, max_length: int, checks: Iterable[Callable[[Any], None]] = (), required: bool = True,
         allow_blank: bool = False, json: bool = True, strip: bool = False, schema: dict[str, Any]) -> Any:
    """A text field. In a JSON body (`json`) numbers, lists and objects are refused rather than turned into text,
    and null counts as left out. An empty value is "no value": a required field refuses it, an optional one
    refuses it too (`blank`: `?prefix=` must not mean every prefix) unless `allow_blank` (e.g. clear the title)."""
    checks = list(checks)
    limits: list[Callable[[Any], None]] = [*checks, MaxLengthValidator(max_length), ProhibitNullCharactersValidator()]

    def clean(value: Any) -> str | None:
        if value is None:  # JSON null: as if left out
            if required:
                raise refuse([REQUIRED])
            return None
        if not isinstance(value, str):
            raise refuse([("invalid_type", "Must be a JSON string.")])
        if json:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate such as "\ud800" is valid JSON but not text
                raise refuse([("invalid_text", "Contains characters that are not valid Unicode text.")]) from None
        if value == "" and not required and not allow_blank:
            raise refuse([BLANK])
        if strip:
            value = value.strip()
        if value == "":
            if required:
                raise refuse([REQUIRED])
            return value
        # The length and NUL checks in line for the usual value; Django's validators word the refusals.
        fine = len(value) <= max_length and "\x00" not in value
        problems = _problems(value, checks if fine else limits)
        if problems:
            raise refuse(problems)
        return value

    json_schema = {"type": "string", "minLength": 0 if allow_blank else 1, "maxLength": max_length, **schema}
    if not required and json:
        json_schema = {"anyOf": [json_schema, {"type": "null"}]}
    return Annotated[str | None, PlainValidator(clean), WithJsonSchema(json_schema)]


def _optional_null(clean: Callable[[str], Any]) -> Callable[[str], Any]:
    """An optional query value: "" is `blank` (leave the parameter out instead)."""

    def read(value: str) -> Any:
        if value == "":
            raise refuse([BLANK])
        return clean(value)

    return read


def whole_number(*, minimum: int, maximum: int, about: str) -> Any:
    """An optional integer in a query string (what Django's IntegerField takes: `5`, ` 5 `, `5.0`)."""
    limits = [MinValueValidator(minimum), MaxValueValidator(maximum)]

    def clean(value: str) -> int:
        try:
            number = int(forms.IntegerField.re_decimal.sub("", value))
        except ValueError:
            raise refuse([("invalid", "Enter a whole number.")]) from None
        problems = _problems(number, limits)
        if problems:
            raise refuse(problems)
        return number

    return Annotated[int | None, PlainValidator(_optional_null(clean)),
                     WithJsonSchema({"type": "integer", "minimum": minimum, "maximum": maximum, "description": about})]


def path_part(check: Callable[[str], None], schema: dict[str, Any]) -> Any:
    """A prefix or suffix in the URL path."""

    def clean(value: str) -> str:
        problems = _problems(value, [check])
        if problems:
            raise refuse(problems[:1])
        return value

    return Annotated[str, PlainValidator(clean), WithJsonSchema({"type": "string", **schema})]


URL_SCHEMA = {"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", "description": "An absolute http(s) URL, no spaces, "
              "no user:password@.", "example": "https://collections.example.edu/node/4711"}
PREFIX_SCHEMA = {"pattern": PREFIX_RE.pattern, "example": "20.500.12345"}
SUFFIX_SCHEMA = {"description": "Any printable text without leading/trailing spaces, control characters, '//' "
                 "or '.'/'..' segments; at most 255 bytes of UTF-8. Case-insensitive (ASCII).", "example": "x7kq2m"}
SOURCE_SYSTEM_SCHEMA = {"pattern": SOURCE_SYSTEM_PATTERN, "example": "dams"}

Url = text(max_length=settings.HANDLES_MAX_URL_LENGTH, checks=[validate_target_url], schema=URL_SCHEMA)


def suffix_only(value: str) -> None:
    if value.lower().startswith(("hdl:", "http://", "https://")):
        raise DjangoValidationError("Give the suffix only, such as 'x7kq2m', not a full or resolver form.",
                                    code="invalid_suffix")


NewSuffix = text(max_length=255, checks=[validate_new_suffix, suffix_only], required=False,
                 schema={**SUFFIX_SCHEMA, "description": "The suffix. Optional where the prefix mints (random or "
                         "asset-id policy)."})
OptionalPrefix = text(max_length=64, checks=[validate_prefix], required=False,
                      schema={**PREFIX_SCHEMA, "description": "Optional: the default prefix."})
SourceSystem = text(max_length=64, checks=[SOURCE_SYSTEM_VALIDATOR], schema=SOURCE_SYSTEM_SCHEMA)
ExternalId = text(max_length=255, schema={"example": "node-4711"})
PrefixInPath = path_part(validate_prefix, {"minLength": 1, "maxLength": 64, **PREFIX_SCHEMA,
                                           "description": "The prefix, such as 20.500.12345."})
SuffixInPath = path_part(validate_suffix, {"minLength": 1, "maxLength": 255, **SUFFIX_SCHEMA,
                                           "description": "The suffix; percent-encode '/' inside it as %2F "
                                                          "(or send it raw)."})
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,100}$"


def _idempotency_key(value: str) -> str:
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, value):
        raise refuse([("invalid_idempotency_key", "The Idempotency-Key must be 1 to 100 printable ASCII characters "
                       "without spaces, such as a UUID.")])
    return value


IdempotencyKey = Annotated[str | None, PlainValidator(_idempotency_key), WithJsonSchema({
    "type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN, "description": "Any unique string (a UUID): a retried "
    "call with the same key returns the first call's request record instead of acting twice."})]


# --- Inputs ---------------------------------------------------------------------------------------
# The field types are made by functions (text(), whole_number(), documented()), which pydantic reads and a type
# checker cannot: each field that uses one says `# type: ignore[valid-type]` for that reason.
class Strict(BaseModel):
    """Refuses the keys it does not know (typos such as "URL"), beside the other problems it finds.

    Inputs are plain pydantic models: Ninja's Schema wraps every validation to read ORM objects, which a
    request never is."""

    model_config = ConfigDict(extra="forbid")
    from_query: ClassVar[bool] = False  # query models see only their own keys: ask the request for the rest

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any, handler: Callable[[Any], Any], info: ValidationInfo) -> Any:
        sent = (info.context or {})["request"].GET if cls.from_query else data
        unknown = [key for key in sent if key not in cls.model_fields] if isinstance(sent, dict) else []
        if not unknown:
            return handler(data)
        expected = ", ".join(cls.model_fields)
        errors = [InitErrorDetails(type=refuse([("unknown_field", f"Unknown field; expected: {expected}.")]),
                                   loc=(key,), input=None) for key in unknown]
        try:
            handler({key: value for key, value in data.items() if key in cls.model_fields})
        except ValidationError as exc:
            errors += [InitErrorDetails(type=PydanticCustomError(error["type"], "{message}", {
                **error.get("ctx", {}), "message": error["msg"]}), loc=error["loc"], input=None)
                for error in exc.errors()]
        raise ValidationError.from_exception_data(cls.__name__, errors)


class CreateHandleIn(Strict):
    handle: NewSuffix = None  # type: ignore[valid-type]
    url: Url  # type: ignore[valid-type]
    prefix: OptionalPrefix = None  # type: ignore[valid-type]

    model_config = ConfigDict(json_schema_extra={"example": {
        "handle": "x7kq2m", "url": "https://collections.example.edu/node/4711", "prefix": "20.500.12345"}})


class UpdateHandleIn(Strict):
    url: Url  # type: ignore[valid-type]

    model_config = ConfigDict(json_schema_extra={"example": {"url": "https://collections.example.edu/node/4711/v2"}})


class AssetRefIn(Strict):
    source_system: SourceSystem  # type: ignore[valid-type]
    external_id: ExternalId  # type: ignore[valid-type]

    model_config = ConfigDict(json_schema_extra={"example": {"source_system": "dams", "external_id": "4711"}})


class PublishIn(AssetRefIn):
    url: Url  # type: ignore[valid-type]
    title: text(max_length=1000, required=False, allow_blank=True, schema={}) = None  # type: ignore[valid-type]
    prefix: OptionalPrefix = None  # type: ignore[valid-type]
    handle: text(max_length=255, checks=[validate_new_suffix], required=False,  # type: ignore[valid-type]
                 schema={**SUFFIX_SCHEMA, "description": "Suffix for a new handle, only where the prefix's "
                         "policy is 'given'."}) = None

    model_config = ConfigDict(json_schema_extra={"example": {
        "source_system": "dams", "external_id": "4711", "url": "https://collections.example.edu/node/4711",
        "title": "Letter"}})


class ChangeUrlIn(AssetRefIn):
    url: Url  # type: ignore[valid-type]

    model_config = ConfigDict(json_schema_extra={"example": {
        "source_system": "dams", "external_id": "4711", "url": "https://collections.example.edu/items/4711"}})


class AssetDeleteIn(AssetRefIn):
    reason: text(max_length=2000, required=False, allow_blank=True,  # type: ignore[valid-type]
                 schema={"description": "Shown on tombstone pages; a default names the source."}) = None

    model_config = ConfigDict(json_schema_extra={"example": {
        "source_system": "dams", "external_id": "4711", "reason": "Withdrawn at the donor's request"}})


def documented(schema: dict[str, Any]) -> Any:
    """A query parameter Ninja passes on as sent: described in the OpenAPI document, checked by the view."""
    return Annotated[str | None, WithJsonSchema(schema)]


class HandleListQuery(BaseModel):
    """The list's parameters, for the OpenAPI document only: the view hands the raw query string to the one
    handle filter (handles.desk.filters.api_handles), which checks the filters and refuses unknown parameters,
    and checks its paging with HandlePaging."""

    prefix: documented({"type": "string", "minLength": 1, "maxLength": 64, **PREFIX_SCHEMA,  # type: ignore[valid-type]
                        "description": "Only this prefix."}) = None
    status: documented({"type": "string", "enum": list(Handle.Status.values),  # type: ignore[valid-type]
                        "description": "Only this status."}) = None
    source_system: documented({"type": "string", "minLength": 1, "maxLength": 64,  # type: ignore[valid-type]
                               **SOURCE_SYSTEM_SCHEMA,
                               "description": "Only handles of assets from this source system."}) = None
    external_id: documented({"type": "string", "minLength": 1, "maxLength": 255,  # type: ignore[valid-type]
                             "example": "node-4711",
                             "description": "Only handles of this asset (with source_system)."}) = None
    changed_since: documented({"type": "string", "format": "date-time",  # type: ignore[valid-type]
                               "description": "Only handles changed at or after this time (ISO 8601)."}) = None
    cursor: documented({"type": "string", "minLength": 1, "maxLength": MAX_CURSOR,  # type: ignore[valid-type]
                        "description": "From the previous page's next_cursor."}) = None
    limit: documented({"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE,  # type: ignore[valid-type]
                       "description": "Page size (default 100)."}) = None


class HandlePaging(BaseModel):
    """The list's own parameters; the filter accepts them and leaves them alone."""

    cursor: text(max_length=MAX_CURSOR, required=False, json=False, strip=True, schema={}) = None  # type: ignore[valid-type]
    limit: whole_number(minimum=1, maximum=MAX_PAGE_SIZE, about="") = None  # type: ignore[valid-type]


class RemoteListQuery(Strict):
    from_query = True
    page: whole_number(minimum=0, maximum=10_000_000, about="From 0.") = None  # type: ignore[valid-type]
    page_size: whole_number(minimum=1, maximum=MAX_PAGE_SIZE, about="Default 100.") = None  # type: ignore[valid-type]


class AssetQuery(BaseModel):
    source_system: text(max_length=64, checks=[SOURCE_SYSTEM_VALIDATOR], json=False, strip=True,  # type: ignore[valid-type]
                        schema={**SOURCE_SYSTEM_SCHEMA, "description": "The asset's source system."})
    external_id: text(max_length=255, json=False,  # type: ignore[valid-type]
                      schema={"example": "node-4711", "description": "The asset's id there (e.g. the DAMS node id)."})


class HandleQuery(BaseModel):
    handle: text(max_length=400, json=False, strip=True,  # type: ignore[valid-type]
                 schema={"example": "hdl:20.500.12345/X7KQ2M", "description": "The handle in any cited form: "
                         "PREFIX/SUFFIX, hdl:PREFIX/SUFFIX or a resolver URL."})


class UrlQuery(BaseModel):
    url: text(max_length=settings.HANDLES_MAX_URL_LENGTH, checks=[validate_target_url],  # type: ignore[valid-type]
              json=False, schema={**URL_SCHEMA, "description": "The exact target URL."})


# --- Answers (the views build them with handles.api.representations; the suite checks they match) ---
class Out(Schema):
    model_config = ConfigDict(extra="forbid")


class AssetRefOut(Out):
    source_system: str
    external_id: str


class HandleOut(Out):
    handle: str
    prefix: str
    suffix: str
    url: str
    resolver_url: str
    file_uri: str | None
    status: Literal[tuple(Handle.Status.values)]  # type: ignore[valid-type]
    in_sync: bool
    is_primary: bool
    asset: AssetRefOut | None
    created_at: datetime
    updated_at: datetime


class RequestOut(Out):
    id: int
    op: Literal[tuple(HandleRequest.Op.values)]  # type: ignore[valid-type]
    full_handle: str
    url: str
    attempts: int
    status: Literal[tuple(HandleRequest.Status.values)]  # type: ignore[valid-type]
    javastdout: str
    java_stderr: str
    error: str
    action: Literal[tuple(HandleRequest.Action.values)]  # type: ignore[valid-type]
    created_at: datetime
    finished_at: datetime | None
    status_url: str


class AssetOut(Out):
    source_system: str
    external_id: str
    title: str
    url: str
    state: Literal["published", "unpublished", "deleted"]
    created_at: datetime
    updated_at: datetime


class HandlePage(Out):
    results: list[HandleOut]
    next_cursor: str | None
    next: str | None


class ServerRecord(Out):
    found: bool
    url: str | None
    values: list[dict[str, Any]]


class Resolution(Out):
    handle: str
    server: ServerRecord
    local: HandleOut | None
    agrees: bool | None


class RemotePage(Out):
    prefix: str
    page: int
    page_size: int
    total: int
    handles: list[str]
    next_page: int | None


class AssetChange(Out):
    asset: AssetOut
    handles: list[HandleOut]
    requests: list[RequestOut]


class AssetHandles(Out):
    asset: AssetOut
    handles: list[HandleOut]


class UrlHandles(Out):
    url: str
    handles: list[HandleOut]


class LanguageMap(Out):
    en: list[str]


class NoLanguageMap(Out):
    none: list[str]


class IiifEntry(Out):
    label: LanguageMap
    value: NoLanguageMap


class IiifMetadata(Out):
    metadata: list[IiifEntry]


class FieldError(Out):
    code: str
    message: str


class ErrorDetail(Out):
    code: str
    message: str
    fields: dict[str, list[FieldError]] | None = None


class ErrorOut(Out):
    error: ErrorDetail
