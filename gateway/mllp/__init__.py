"""MLLP transport: framing, the asyncio listener, a blocking client and TLS helpers.

MLLP = Minimal Lower Layer Protocol, HL7 v2.5 Appendix C (and the HL7 "MLLP
Release 2" transport specification): each message travels as
``<SB=0x0B> payload <EB=0x1C><CR=0x0D>`` over a TCP stream.
"""
