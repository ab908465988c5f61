"""Errors of the actor runtime.

    ActorError
    ├── MailboxFull          a mailbox refused a message (local: raised at once; remote: typed reply)
    ├── AskTimeout           no reply before the ask's deadline
    ├── ActorDeadError       the actor stopped (or its node's lease lapsed) with the ask pending
    ├── ActorNotFound        nothing can host this kind of actor
    ├── BadMessage           the message is not one the actor accepts (it was dead-lettered)
    ├── RemoteError          the actor answered with a typed error (`code`, `retryable`)
    └── LeaseLost            this node no longer holds the actor's lease; the activation stops

`Refusal` is not a failure of the actor: raised by a handler, it is sent back to the asker as a
typed error and the actor carries on (OTP's `{error, Reason}` reply rather than a crash).
"""

from __future__ import annotations

from switchboard.protocols import ErrorReply


class ActorError(Exception):
    code = "actor_error"
    retryable = False


class MailboxFull(ActorError):
    code = "mailbox_full"
    retryable = True


class AskTimeout(ActorError, TimeoutError):
    code = "timeout"
    retryable = True


class ActorDeadError(ActorError):
    code = "actor_dead"
    retryable = True


class ActorNotFound(ActorError):
    code = "not_found"


class BadMessage(ActorError):
    code = "bad_message"


class LeaseLost(ActorError):
    code = "lease_lost"
    retryable = True


class RemoteError(ActorError):
    """A typed error answered by an actor; `code` comes from the wire."""

    def __init__(self, code: str, message: str, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after


class Refusal(Exception):
    """Raise in a handler to answer an ask with a typed error without crashing the actor."""

    def __init__(self, code: str, message: str, *, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after


_BY_CODE: dict[str, type[ActorError]] = {
    cls.code: cls for cls in (MailboxFull, AskTimeout, ActorDeadError, ActorNotFound,
                              BadMessage, LeaseLost)
}


def error_to_reply(exc: BaseException) -> ErrorReply:
    """The wire form of an exception, without its traceback or any personal data."""
    if isinstance(exc, (Refusal, RemoteError)):
        return ErrorReply(code=exc.code, message=str(exc), retryable=exc.retryable,
                          retry_after=exc.retry_after)
    if isinstance(exc, ActorError):
        return ErrorReply(code=exc.code, message=str(exc), retryable=exc.retryable)
    # An unexpected crash: say which exception type, never its text (it may echo user input).
    return ErrorReply(code="actor_crashed",
                      message=f"the actor crashed handling this message ({type(exc).__name__}); "
                              "its supervisor decides whether it restarts",
                      retryable=True)


def reply_to_error(reply: ErrorReply) -> ActorError:
    """The exception an asker raises for a typed error reply."""
    cls = _BY_CODE.get(reply.code)
    if cls is not None and cls is not AskTimeout:
        return cls(reply.message)
    return RemoteError(reply.code, reply.message, reply.retryable, reply.retry_after)
