"""Test and benchmark support code (not shipped with the carebridge package)."""

#: scrypt cost of the throwaway OAuth clients the tests register (``CAREBRIDGE_AUTH_SECRET_LOG2N``):
#: real scrypt, 16 times cheaper than the deployment default, whose cost tests/auth checks on its own.
TEST_SECRET_LOG2N = 10
