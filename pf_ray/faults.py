"""Row faults vs infrastructure faults: the one taxonomy used wherever pf-ray calls out
(the ground floor: standard library only).

A *row fault* is something wrong with one row: a corrupt or oversize image, an image that
is not there (HTTP 404/410, ``NoSuchKey``), a text the tokenizer cannot take, an HTTP 400
for one prompt. It becomes a reject and the job goes on.

An *infrastructure fault* is something wrong with what the job runs on: a refused
connection, a timeout, throttling (HTTP 429, S3 ``SlowDown``), an HTTP 5xx, a key or
credential that is refused (401/403, ``AccessDenied``, ``InvalidAccessKeyId``,
``SignatureDoesNotMatch``, an expired token), a reply that cannot be parsed, a CUDA error,
an out-of-memory, a missing or corrupt model file. Every row of the micro-batch would fail
the same way, so turning them into rejects would commit the outage as data: such a fault is
retried with backoff by :func:`pf_ray.steps.base.run_step` and then fails the unit and the
job (:class:`UnitFailed`); nothing of the unit is committed (no marker, nothing in
``rejects/``) and a rerun after recovery commits every id exactly once.

The decisions, in one place:

* :func:`http_status_fault` classifies an HTTP status, for an API endpoint (an engine, a
  judge) or for an object fetched per row (an image URL);
* :func:`storage_fault` classifies an exception of an object store or file system read
  (pyarrow, s3fs / botocore, fsspec, the local disk);
* :func:`is_out_of_memory` recognises an OOM (which ``run_step`` isolates by bisection);
* :func:`llm_row_error_fault` classifies the per-row error text ``ray.data.llm`` reports;
* :func:`is_infrastructure_fault` is what ``run_step`` asks of any exception; it agrees
  with all of the above.
"""

from __future__ import annotations

import errno
import urllib.error
from typing import Literal

Fault = Literal["infrastructure", "row"]

# Substrings of RuntimeError messages raised by torch / CUDA / NCCL for device faults.
_DEVICE_MESSAGES = ("CUDA error", "CUDA out of memory", "out of memory", "NCCL error",
                    "CUBLAS_STATUS", "cuDNN error", "device-side assert")
# Exception class names of device faults, matched by name so this module needs no torch.
_DEVICE_TYPES = ("OutOfMemoryError", "AcceleratorError", "CudaError")
# Out-of-memory, by class name (torch.OutOfMemoryError, torch.cuda.OutOfMemoryError) and by
# message (CUDA's RuntimeError, the CPU allocator's "DefaultCPUAllocator: not enough memory",
# MPS, XLA's RESOURCE_EXHAUSTED).
_OOM_TYPES = ("OutOfMemoryError",)
_OOM_MESSAGES = ("out of memory", "not enough memory", "resource_exhausted",
                 "failed to allocate memory")

# ---------------------------------------------------------------- HTTP statuses

# Statuses that are the service's fault or the deployment's, whatever was asked: a key or
# payment refused (401, 402, 403), a proxy wanting credentials (407), the server timing out
# on the request (408), a request sent to the wrong server (421), "too early" (425),
# throttling (429) and every 5xx. Retried, then the unit fails.
_SERVICE_STATUSES = frozenset({401, 402, 403, 407, 408, 421, 425, 429})
# For an API endpoint (engines, judges, the Serve app), a redirect, 404 and 405 mean a wrong
# base URL, model name or method: every row would fail alike.
_ENDPOINT_STATUSES = frozenset({404, 405})
# For an object fetched per row (an image URL), 404 and 410 mean that object is not there.
_MISSING_STATUSES = frozenset({404, 410})


def http_status_fault(status: int, *, target: Literal["endpoint", "object"] = "endpoint"
                      ) -> Fault:
    """Whether an HTTP error status is the infrastructure's fault or the row's.

    ``target="endpoint"``: the URL is a service pf-ray sends rows to (an OpenAI-compatible
    server). 5xx, 429, 401/402/403/407/408/421/425 are infrastructure, and so are 3xx
    (redirects are not followed: the base URL is wrong), 404 and 405 (a wrong URL, model or
    method fails every row alike). Any other 4xx (400, 413, 422, ...) is about this request:
    a row fault.

    ``target="object"``: the URL names one row's content (an image). The service statuses
    above are infrastructure; 404/410 (not there), 3xx (a redirect, not followed so that an
    allow-list cannot be bypassed) and any other 4xx are the row's.
    """
    if target not in ("endpoint", "object"):
        raise ValueError(f"target: received {target!r}; allowed: 'endpoint', 'object'")
    if status >= 500 or status in _SERVICE_STATUSES:
        return "infrastructure"
    if target == "endpoint" and (300 <= status < 400 or status in _ENDPOINT_STATUSES):
        return "infrastructure"
    if 300 <= status < 500:
        return "row"
    # 1xx / 2xx are no errors; an unknown status says the server speaks no HTTP we know
    return "infrastructure"


# ---------------------------------------------------------------- object stores

# Exception class names of botocore / aiobotocore / s3fs / requests / aiohttp faults that
# are infrastructure (matched by name anywhere in the MRO: no import needed).
_STORE_INFRA_TYPES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "ProxyConnectionError", "SSLError", "NoCredentialsError",
    "PartialCredentialsError", "CredentialRetrievalError", "TokenRetrievalError",
    "UnauthorizedSSOTokenError", "ClientConnectorError", "ServerDisconnectedError",
    "ServerTimeoutError", "ClientPayloadError", "HTTPClientError", "ResponseStreamingError",
    "IncompleteReadError",
})
# Substrings (lower case) of store error messages that name an infrastructure fault: the
# AWS SDK error names pyarrow prints ("AWS Error ACCESS_DENIED during GetObject"), the S3
# error codes s3fs / botocore carry ("AccessDenied", "SlowDown"), curl's and the OS's
# connection errors.
_STORE_INFRA_MESSAGES = (
    "access_denied", "accessdenied", "access denied", "forbidden", "unauthorized",
    "invalid_access_key_id", "invalidaccesskeyid", "signature_does_not_match",
    "signaturedoesnotmatch", "expired_token", "expiredtoken", "token has expired",
    "request_expired", "requestexpired", "invalid_client_token_id", "invalidtoken",
    "unrecognized_client", "missing_authentication_token", "request_time_too_skewed",
    "requesttimetooskewed", "credential", "slow_down", "slowdown", "throttl",
    "service_unavailable", "serviceunavailable", "internal_failure", "internalerror",
    "network_connection", "could not connect", "couldn't connect", "connection refused",
    "connection reset", "connection aborted", "broken pipe", "timed out", "timeout",
    "request_timeout", "requesttimeout", "too many requests", "http status 5",
    "status code: 5", "(503)", "(500)", "(502)", "(504)",
)
# Substrings (lower case) of not-found messages: the object is not there.
_STORE_MISSING_MESSAGES = ("nosuchkey", "no_such_key", "not found", "does not exist",
                           "no such file", "resource_not_found", "is a directory",
                           "not a file", "not a directory")
# errno values of a local read that say "this path is no (readable) file": the row's.
_ROW_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                         errno.ELOOP})


def _type_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def storage_fault(exc: BaseException) -> Fault:
    """Whether a failed object-store or file-system read is the infrastructure's or the
    row's fault.

    Row: the object is not there (``FileNotFoundError``, ``NoSuchKey``, HTTP 404, a folder
    where a file was expected, a path too long). Infrastructure: a refused connection, a
    timeout, throttling (``SlowDown``, 503), a credential refused (``AccessDenied``,
    ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``, an expired token:
    ``PermissionError``), a 5xx. An error that names neither is infrastructure: failing
    the unit (a rerun resumes it) is recoverable, committing an outage as rejects is not.

    S3 answers 403 rather than 404 for a missing key when the credentials may not list the
    bucket: that is classified as infrastructure (fix the credentials and rerun).
    """
    if isinstance(exc, PermissionError | ConnectionError | TimeoutError):
        return "infrastructure"
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return "row"
    if _type_names(exc) & _STORE_INFRA_TYPES:
        return "infrastructure"
    if "NoSuchKey" in _type_names(exc):
        return "row"
    if isinstance(exc, urllib.error.HTTPError):
        return http_status_fault(exc.code, target="object")
    code = _client_error_code(exc)
    if code is not None:
        if code in ("NoSuchKey", "404", "NotFound"):
            return "row"
        return "infrastructure"
    text = str(exc).lower()
    if any(m in text for m in _STORE_INFRA_MESSAGES):
        return "infrastructure"
    if any(m in text for m in _STORE_MISSING_MESSAGES):
        return "row"
    if isinstance(exc, OSError) and exc.errno in _ROW_ERRNOS:
        return "row"
    return "infrastructure"


def _client_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (``exc.response['Error']['Code']``)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


# ---------------------------------------------------------------- exceptions


class InfrastructureError(RuntimeError):
    """Raised by engines and loaders for faults of the infrastructure, not of a row."""


class EngineUnavailable(InfrastructureError):
    """An inference endpoint or engine cannot serve requests (refused, timed out, 5xx,
    a key refused, a reply that is not what the API promises)."""


class ModelUnavailable(InfrastructureError):
    """A model's weights or files cannot be found or loaded (missing, truncated, corrupt)."""


class StorageUnavailable(InfrastructureError):
    """An object store, file system or image host cannot serve reads (refused, timed out,
    throttling, 5xx, credentials refused); see :func:`storage_fault`."""


class UnitFailed(RuntimeError):
    """A unit cannot be committed; the job must fail (its message says which and why)."""


# ---------------------------------------------------------------- any exception


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an out-of-memory of the host or a device (``MemoryError``,
    ``torch.OutOfMemoryError``, a ``RuntimeError`` saying "CUDA out of memory", ...)."""
    if isinstance(exc, MemoryError) or _type_names(exc) & set(_OOM_TYPES):
        return True
    if isinstance(exc, RuntimeError) and not isinstance(exc, InfrastructureError | UnitFailed):
        text = str(exc).lower()
        return any(m in text for m in _OOM_MESSAGES)
    return False


def is_infrastructure_fault(exc: BaseException) -> bool:
    """True when ``exc`` says the infrastructure failed rather than the row."""
    if isinstance(exc, InfrastructureError | MemoryError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, urllib.error.HTTPError):  # an engine's or judge's endpoint
        return http_status_fault(exc.code, target="endpoint") == "infrastructure"
    if isinstance(exc, urllib.error.URLError):  # no HTTP status: the connection failed
        return True
    if _type_names(exc) & (set(_DEVICE_TYPES) | _STORE_INFRA_TYPES):
        return True
    if isinstance(exc, PermissionError):  # a refused credential, a read-only mount
        return True
    if _client_error_code(exc) is not None:  # a store read outside the image loader
        return storage_fault(exc) == "infrastructure"
    if isinstance(exc, OSError) and any(m in str(exc).lower() for m in _STORE_INFRA_MESSAGES):
        return True  # pyarrow's "AWS Error ACCESS_DENIED ...": only named outages, since
        # PIL's "image file is truncated" is an OSError of the row
    if is_out_of_memory(exc):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return any(m in text for m in _DEVICE_MESSAGES)
    return False


# ---------------------------------------------------------------- ray.data.llm rows

# Exception class names (the text ``ray.data.llm`` stores starts with ``TypeName: ``) of
# engine faults: the vLLM engine core died or stopped (v1 ``EngineDeadError``,
# ``EngineGenerateError``; v0 ``AsyncEngineDeadError``), its queue is full (503/429 kinds),
# the device failed or ran out of memory, an actor or connection was lost.
_LLM_ENGINE_TYPES = frozenset({
    "EngineDeadError", "AsyncEngineDeadError", "EngineGenerateError", "EngineCoreError",
    "QueueOverflowError", "MaxPendingTokensError", "MaxTierPendingTokensError",
    "TooManyRequestsError", "OutOfMemoryError", "AcceleratorError", "CudaError",
    "MemoryError", "ConnectionError", "ConnectionRefusedError", "ConnectionResetError",
    "TimeoutError", "CancelledError", "RayActorError", "ActorDiedError",
    "ActorUnavailableError", "RaySystemError", "ObjectLostError", "WorkerCrashedError",
    "NodeDiedError", "EngineUnavailable", "InfrastructureError",
})
_LLM_ENGINE_MESSAGES = ("enginecore encountered an issue", "engine core", "enginecore",
                        "engine loop", "background loop", "engine is dead", "engine dead",
                        "engine process", "engine has died")


def llm_row_error_fault(error: str) -> Fault:
    """Classify the error text ``ray.data.llm`` stores in ``__inference_error__``.

    ``vLLMEngineStage._generate_with_error_handling`` (ray 2.60,
    ``ray/llm/_internal/batch/stages/vllm_engine_stage.py``) catches any exception of a
    row when ``should_continue_on_error`` is set and stores ``f"{type(e).__name__}:
    {str(e)}"``. Engine-kind errors (a dead engine core, an OOM, a CUDA error, a full
    queue, a lost actor) are infrastructure; the rest (``ValueError: The decoder prompt
    (length N) is longer than the maximum model length of M``, ``VLLMValidationError``,
    a bad sampling parameter) are about the row.
    """
    head, _, message = error.partition(":")
    type_name = head.strip().rsplit(".", 1)[-1]
    if " " in type_name or not type_name:  # no "TypeName:" prefix: judge the whole text
        type_name, message = "", error
    if type_name in _LLM_ENGINE_TYPES:
        return "infrastructure"
    lowered = message.lower()
    if any(m in lowered for m in _LLM_ENGINE_MESSAGES):
        return "infrastructure"
    if any(m.lower() in lowered for m in _DEVICE_MESSAGES) or any(
            m in lowered for m in _OOM_MESSAGES):
        return "infrastructure"
    return "row"
