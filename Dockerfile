# rtclab in one image: every part of the stack and the lab's caller.
#
#   docker compose build                 (with a registry: python:3.11-slim-bookworm, PyPI)
#   scripts/compose build                (without one: a Debian base built here, a wheelhouse)
#   docker run --rm rtclab:dev --help
#
# Two build arguments choose where things come from; the steps are the same either way:
#   BASE_IMAGE    the Debian bookworm image with python3 (default: python:3.11-slim-bookworm).
#                 scripts/compose imports one built with debootstrap when none can be pulled.
#   WHEELS_IMAGE  an image holding a wheelhouse at /wheels: pip installs from it and nothing
#                 else (--no-index).  Default: the empty stage below, and pip uses PyPI.
# Nothing of the build machine's (pip or apt configuration, CA bundles, proxies,
# credentials) enters the image: only the files COPY names.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG WHEELS_IMAGE=no-wheels

FROM ${BASE_IMAGE} AS no-wheels
RUN mkdir -p /wheels

FROM ${WHEELS_IMAGE} AS wheels

# The virtualenv is built in a stage of its own, so the wheelhouse never becomes a layer
# of the image.
FROM ${BASE_IMAGE} AS venv
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=wheels /wheels /wheels
WORKDIR /src
COPY pyproject.toml README.md ./
# The dependencies as pyproject.toml pins them (aiortc/aioice to the versions whose
# internals webrtc_server/aioice_patch.py relies on), in a layer of their own: a change
# to the code does not install them again.  (With no packages copied yet, `.` is an
# empty rtclab, removed at once.)
RUN python3 -m venv /opt/rtclab \
    && if [ -n "$(ls -A /wheels)" ]; then source="--no-index --find-links /wheels"; fi \
    && /opt/rtclab/bin/pip install $source . \
    && /opt/rtclab/bin/pip uninstall -y rtclab
COPY wire ./wire
COPY agent ./agent
COPY stun_lb ./stun_lb
COPY webrtc_server ./webrtc_server
COPY signaling ./signaling
COPY lab ./lab
RUN if [ -n "$(ls -A /wheels)" ]; then source="--no-index --find-links /wheels"; fi \
    && /opt/rtclab/bin/pip install --no-deps $source . \
    && /opt/rtclab/bin/rtclab --version

FROM ${BASE_IMAGE}
# iproute2: the caller's address moves and tc; nftables and conntrack: the caller's own
# NAT, whose mapping a rebind flushes.  Only the compose caller uses them (as root, with
# NET_ADMIN); the servers never do.  A base built by scripts/compose has them already.
RUN if ! command -v ip >/dev/null || ! command -v nft >/dev/null \
        || ! command -v conntrack >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends iproute2 nftables conntrack \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=venv /opt/rtclab /opt/rtclab
ENV PATH=/opt/rtclab/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin rtclab
USER rtclab
WORKDIR /home/rtclab

ENTRYPOINT ["rtclab"]
CMD ["--help"]
