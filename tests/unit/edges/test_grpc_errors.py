"""The one table from core errors to gRPC status codes."""

from __future__ import annotations

import grpc
import pytest

from service import errors
from service.edges.grpc.errors import code_for, retry_after_metadata


def every_error_class(root: type[errors.RnnServeError]) -> list[type[errors.RnnServeError]]:
    found = []
    for cls in root.__subclasses__():
        found += [cls, *every_error_class(cls)]
    return found


@pytest.mark.parametrize("cls", every_error_class(errors.RnnServeError), ids=lambda c: c.__name__)
def test_every_client_facing_error_has_a_status_other_than_internal(
    cls: type[errors.RnnServeError],
) -> None:
    if issubclass(cls, errors.SessionConflictError):
        exc: errors.RnnServeError = cls("conflict", expected_seq=3)
    else:
        exc = cls("message")
    expected_internal = issubclass(cls, errors.RepositoryError | errors.InternalError)
    assert (code_for(exc) is grpc.StatusCode.INTERNAL) == expected_internal


def test_retry_later_errors_carry_retry_after_and_specific_codes() -> None:
    full = errors.QueueFullError("full", retry_after_s=2.4)
    assert code_for(full) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_after_metadata(full) == (("retry-after", "2"),)
    assert code_for(errors.NotReadyError("starting")) is grpc.StatusCode.UNAVAILABLE
    assert code_for(errors.ModelNotFoundError("nope")) is grpc.StatusCode.NOT_FOUND
    assert retry_after_metadata(errors.InvalidInputError("bad")) == ()
