# rtclab in one image: every part of the stack and the lab's caller.
#   docker compose build                      (see docker-compose.yml and docs/labs.md)
#   docker run --rm rtclab:dev --help
FROM python:3.11-slim-bookworm

# iproute2: tc netem and the caller's address moves; nftables and conntrack: the caller's
# own NAT, whose mapping a rebind flushes.  Only the compose caller uses them (as root,
# with NET_ADMIN); the servers never do.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 nftables conntrack \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY wire ./wire
COPY agent ./agent
COPY stun_lb ./stun_lb
COPY webrtc_server ./webrtc_server
COPY signaling ./signaling
COPY lab ./lab
# The dependencies as pyproject.toml pins them (aiortc/aioice to the versions whose
# internals webrtc_server/aioice_patch.py relies on).
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin rtclab
USER rtclab
WORKDIR /home/rtclab

ENTRYPOINT ["rtclab"]
CMD ["--help"]
