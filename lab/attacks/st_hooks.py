"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=lab.attacks.st_hooks``): how to send an SDP body.

An offer is text; schemathesis knows no ``application/sdp`` serializer of its own.
"""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
