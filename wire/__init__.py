"""Protocol code the rtclab processes share.

Pure and standard-library only (STUN, first-byte demux, route token, SDP edits,
addresses, logging), except :mod:`wire.service`, the HTTP plumbing every server
uses.  Nothing here imports another rtclab package.
"""
