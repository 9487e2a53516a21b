"""The docker compose lab: the stack in containers, a caller that moves itself.

``scripts/compose`` (:mod:`lab.compose.cli`) builds the images -- from a
registry, or from Debian's packages and a wheelhouse made here when none can
be pulled (:mod:`lab.compose.images`) -- starts docker-compose.yml
(:mod:`lab.compose.project`), and runs scenarios in its caller container once
per relay policy they compare (:mod:`lab.compose.passes`).  Inside that
container, :mod:`lab.compose.caller` is the scenario environment: the stack
is the running services, the path the container's own NAT and impairment.
See docs/labs.md.
"""
