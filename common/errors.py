"""The one exception tree of carebridge, rendered twice.

Every domain failure raises a :class:`CarebridgeError` subclass.  The HTTP
adapter renders it as a FHIR ``OperationOutcome``
(https://hl7.org/fhir/R4/operationoutcome.html) with ``http_status``; the MLLP
adapter renders it as an HL7 v2 ACK with ``MSA-1`` = ``hl7_ack`` and an ``ERR``
segment whose ERR-3 is ``hl7_error_code`` (HL7 table 0357) and ERR-2 the
``location``.  Nothing here imports anything else of ours: every package may
raise these.

``location`` is a FHIRPath-like element path (``Patient.birthDate``) for FHIR
errors and an HL7 location (``PID-7`` or ``PID-3.1``) for message errors.
"""

from __future__ import annotations


class CarebridgeError(Exception):
    """Base class: an error with enough structure to be rendered on any wire."""

    http_status: int = 500
    issue_code: str = "exception"  # http://hl7.org/fhir/valueset-issue-type.html
    hl7_ack: str = "AE"  # AE = application error, AR = application reject
    hl7_error_code: str = "207"  # table 0357: application internal error
    hl7_severity: str = "E"  # ERR-4, table 0516: E error, W warning, I information

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        return f"{self.message} (at {self.location})" if self.location else self.message


class InvalidInput(CarebridgeError):
    """Malformed or schema-invalid input: bad JSON, unknown element, bad date."""

    http_status = 400
    issue_code = "invalid"
    hl7_error_code = "102"  # data type error


class RequiredFieldMissing(InvalidInput):
    """A required element or HL7 field is absent."""

    issue_code = "required"
    hl7_error_code = "101"


class UnparseableMessage(CarebridgeError):
    """Input that cannot be read at all (no MSH, not HL7, broken encoding)."""

    http_status = 400
    issue_code = "structure"
    hl7_ack = "AR"
    hl7_error_code = "100"  # segment sequence error


class UnsupportedMessageType(CarebridgeError):
    """A message type or trigger event carebridge does not process."""

    http_status = 400
    issue_code = "not-supported"
    hl7_ack = "AR"
    hl7_error_code = "200"  # unsupported message type

    def __init__(self, message: str, *, location: str | None = None, event: bool = False) -> None:
        super().__init__(message, location=location)
        if event:
            self.hl7_error_code = "201"  # unsupported event code


class MessageIgnored(CarebridgeError):
    """A message accepted and journaled ``ignored``: it carries nothing carebridge stores.

    Not a failure: the sender gets AA (HL7 v2.5 ch. 2.9.2, the receiver accepted
    responsibility), with an ERR of severity I (table 0516 "information") and
    code 0 (table 0357 "message accepted") whose ERR-8 says why nothing was
    stored.  A reject (AR) would stop many HIS outbound queues until a person
    intervenes, for a message nobody needs to resend.
    """

    http_status = 200
    issue_code = "informational"
    hl7_ack = "AA"
    hl7_error_code = "0"
    hl7_severity = "I"


class UnsupportedVersion(UnsupportedMessageType):
    """HL7 version outside 2.3-2.8."""

    hl7_error_code = "203"


class NotFound(CarebridgeError):
    http_status = 404
    issue_code = "not-found"
    hl7_error_code = "204"  # unknown key identifier


class Gone(CarebridgeError):
    """The resource existed and was deleted (FHIR: read of a deleted resource → 410)."""

    http_status = 410
    issue_code = "deleted"
    hl7_error_code = "204"


class MethodNotAllowed(CarebridgeError):
    http_status = 405
    issue_code = "not-supported"


class VersionConflict(CarebridgeError):
    """Concurrent modification or a duplicate business identifier."""

    http_status = 409
    issue_code = "conflict"
    hl7_error_code = "205"  # duplicate key identifier


class PreconditionFailed(CarebridgeError):
    """``If-Match`` mismatch, or a conditional operation matching several resources."""

    http_status = 412
    issue_code = "conflict"


class MultipleMatches(PreconditionFailed):
    issue_code = "multiple-matches"


class BusinessRuleViolation(CarebridgeError):
    """Well-formed input that breaks a domain rule (FHIR 422)."""

    http_status = 422
    issue_code = "business-rule"


class RetentionHold(BusinessRuleViolation):
    """A change the retention rule forbids: deleting a medical record under legal hold.

    409, not the 422 of other business rules: FHIR R4 http.html#delete asks a
    server that refuses to delete "because of reasons specific to that
    resource" for ``409 Conflict`` (HAPI does the same for referential
    integrity); the issue code still says which kind of refusal it is.
    """

    http_status = 409


class UnsupportedMediaType(CarebridgeError):
    http_status = 415
    issue_code = "not-supported"


class PayloadTooLarge(CarebridgeError):
    """Input over a size limit; the text names the limit and its setting.

    HL7: AR with table 0357 code 104 "Value too long" (added to the table in v2.6;
    ERR-3 carries the code's text too, so an older receiver still reads it) rather
    than 207, which says the fault is the receiver's.
    """

    http_status = 413
    issue_code = "too-costly"
    hl7_ack = "AR"
    hl7_error_code = "104"


class TooManySegments(PayloadTooLarge):
    """More segments in one HL7 message than the configured limit (table 0357: 100 segment sequence error)."""

    hl7_error_code = "100"


class ForbiddenCharacter(InvalidInput):
    """A character no HL7 v2 data type allows (NUL, U+0000), refused with AR naming its field.

    HL7 v2.5 ch. 2.7: the data types are built from printable characters; NUL cannot
    be stored in a PostgreSQL ``text`` column either, so SQLite and PostgreSQL would
    otherwise disagree.  Table 0357 code 102 "data type error".
    """

    hl7_ack = "AR"


class HeaderFieldMissing(RequiredFieldMissing):
    """A required MSH field is empty (MSH-10): AR, table 0357 code 101 "required field missing".

    An empty MSH-10 leaves nothing to echo in MSA-2 and nothing to detect a duplicate
    delivery by (HL7 v2.5 ch. 2.14.9.10: MSH-10 is required and unique per sender).
    """

    hl7_ack = "AR"


class TooCostly(InvalidInput):
    """A request beyond a configured complexity limit (FHIR issue type ``too-costly``).

    The message names the limit's setting, so a client knows what to change and an
    operator which knob to turn (issue #17).
    """

    issue_code = "too-costly"


class DatabaseTimeout(CarebridgeError):
    """The database cancelled a statement that ran past its timeout (PostgreSQL SQLSTATE 57014).

    503 rather than 400: the same request may succeed on a less loaded server; FHIR issue
    type ``timeout`` (https://hl7.org/fhir/R4/valueset-issue-type.html).
    """

    http_status = 503
    issue_code = "timeout"


class Unauthenticated(CarebridgeError):
    http_status = 401
    issue_code = "login"
    hl7_ack = "AR"


class Forbidden(CarebridgeError):
    http_status = 403
    issue_code = "forbidden"
    hl7_ack = "AR"


class Concealed(NotFound):
    """A refusal answered exactly like "not found", so the answer does not reveal that something exists.

    Why: a patient-bound caller that got 403 for another patient's id and 404 for
    a missing one could tell which ids exist (an existence oracle).  RFC 9110
    §15.5.4: a server that wishes to hide the existence of a forbidden target
    resource may answer 404 instead of 403.
    The response carries the message the missing case would carry; ``reason``
    (never sent to the caller) is what the audit trail records, as a denial
    (IHE BALP outcome 12), so a probe is still a security event.
    """

    def __init__(self, message: str, *, location: str | None = None, reason: str) -> None:
        super().__init__(message, location=location)
        self.reason = reason
