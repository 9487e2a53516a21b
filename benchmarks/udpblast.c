/*
 * udpblast: the load generator and sink of relay_throughput.py, in one
 * single-threaded process so that both fit on one core without context switches.
 *
 *   udpblast TARGET_IP TARGET_PORT SINK_PORT FLOWS SIZE PRIME_FILE [gso|sendmmsg]
 *
 * Opens FLOWS UDP sockets on 127.0.0.1 (each one a "client": its own source
 * port), connected to TARGET (the forwarder under test, or the sink itself for
 * the direct path), and one sink socket bound to 127.0.0.1:SINK_PORT.
 * PRIME_FILE holds one hex-encoded datagram per line, one per flow: the STUN
 * Binding request that makes the relay open that flow.
 *
 * Then it reads commands on stdin, one per line, and answers each with ONE
 * JSON line on stdout:
 *
 *   prime TIMEOUT_S      send each flow's priming datagram; wait until the sink
 *                        has seen FLOWS STUN datagrams (so every flow exists).
 *   oneway RATE SECONDS  send RTP-shaped datagrams at RATE/s in total (0: as
 *                        fast as possible), round-robin over the flows; the
 *                        sink counts what arrives.  One-way throughput.
 *   sends gso|sendmmsg   switch how batches are sent (see below).
 *   echo RATE SECONDS    the same, but the sink sends every datagram back to
 *                        where it came from (through the forwarder), and the
 *                        flows time the round trip from a timestamp in the
 *                        payload.  Latency.
 *   quit
 *
 * Sending: with "gso" (the default) each batch to a flow is ONE send() of
 * back-to-back datagrams with UDP_SEGMENT set; the kernel splits it when it
 * delivers to the receiving socket, so the forwarder still reads one datagram
 * at a time, but the generator pays the IP output path once per batch: three
 * times its sendmmsg rate on these machines.  "sendmmsg" sends each datagram
 * through the whole stack: what a path that acts on every datagram on the way
 * out (netfilter NAT) must see.
 *
 * Pacing is open loop and busy-polled: the number of datagrams due is
 * RATE * elapsed, and each pass of the loop sends what is due (at most one
 * batch on the next flow, once 50 us worth is due) and drains the
 * sink (one recvmmsg).  max_backlog, the most datagrams ever due but not yet
 * sent, says whether the generator kept up: it stays within about one batch
 * when it does.
 *
 * Datagram layout (SIZE bytes, SIZE >= 32):
 *   0      0x80 0x6f           RTP version 2, payload type 111 (what the relay
 *                              classifies as media, RFC 7983)
 *   2..3   sequence (per flow, big-endian)
 *   4..7   RTP timestamp
 *   8..11  SSRC = 0x52000000 + flow index
 *   12..19 send time, CLOCK_MONOTONIC ns (host order: only this process reads it)
 *   20..23 flow index
 *   24..27 step number: datagrams of an earlier step arriving late are ignored
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TX_BATCH 32
#define RX_BATCH 64
#define MAX_SIZE 2048
#define SOCKET_BUFFER (4 * 1024 * 1024)
/* The sink's: ~8x the datagrams a 4 MiB buffer holds, so that when this process
 * is descheduled for a while (a shared machine) the sink does not drop what the
 * forwarder delivered meanwhile. */
#define SINK_BUFFER (32 * 1024 * 1024)
/* A step ends when nothing has arrived for this long after the last send... */
#define QUIET_NS 250000000ULL
/* ...or after this much draining at most. */
#define DRAIN_MAX_NS 3000000000ULL
#define SSRC_BASE 0x52000000u
#define BURST_NS 50000.0

static int n_flows;
static int *flow_fd;
static int sink_fd;
static const unsigned char PROXY_V2_SIGNATURE[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                     0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static int epoll_fd;
static size_t pkt_size;
static struct sockaddr_in target;
static unsigned char **prime_data;
static size_t *prime_len;
static uint16_t *flow_seq;
static uint64_t *flow_rx; /* per-flow datagrams seen by the sink in this step */
static uint32_t step_no;
/* Time spent inside the send calls this step: what a path that works in the
 * sender's context (netfilter NAT) costs shows up here. */
static uint64_t send_ns;

static int use_gso;
static int tx_batch = TX_BATCH;
/* One batch of datagrams back to back, SIZE bytes apart: a GSO send as is,
 * or one iovec per datagram for sendmmsg. */
static unsigned char tx_area[TX_BATCH * MAX_SIZE];
static struct mmsghdr tx_msgs[TX_BATCH];
static struct iovec tx_iov[TX_BATCH];
static unsigned char rx_buf[RX_BATCH][MAX_SIZE];
static struct mmsghdr rx_msgs[RX_BATCH];
static struct iovec rx_iov[RX_BATCH];
static struct sockaddr_in rx_addr[RX_BATCH];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void big_buffers(int fd, int size) {
    /* FORCE needs CAP_NET_ADMIN (root in the benchmark's namespace); the
     * plain option is capped at net.core.rmem_max otherwise. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

static int udp_socket(uint16_t port, int buffer) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    big_buffers(fd, buffer);
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(port)};
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind");
    return fd;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void load_primes(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die("prime file");
    prime_data = calloc((size_t)n_flows, sizeof *prime_data);
    prime_len = calloc((size_t)n_flows, sizeof *prime_len);
    char line[4 * MAX_SIZE];
    for (int i = 0; i < n_flows; i++) {
        if (!fgets(line, sizeof line, f)) {
            fprintf(stderr, "prime file: %d lines, need %d\n", i, n_flows);
            exit(2);
        }
        size_t hex = strcspn(line, "\r\n");
        prime_data[i] = malloc(hex / 2 + 1);
        for (size_t j = 0; j + 1 < hex; j += 2) {
            int hi = hexval(line[j]), lo = hexval(line[j + 1]);
            if (hi < 0 || lo < 0) {
                fprintf(stderr, "prime file: bad hex on line %d\n", i + 1);
                exit(2);
            }
            prime_data[i][j / 2] = (unsigned char)(hi << 4 | lo);
        }
        prime_len[i] = hex / 2;
    }
    fclose(f);
}

static void setup(void) {
    flow_fd = calloc((size_t)n_flows, sizeof *flow_fd);
    flow_seq = calloc((size_t)n_flows, sizeof *flow_seq);
    flow_rx = calloc((size_t)n_flows, sizeof *flow_rx);
    epoll_fd = epoll_create1(0);
    if (epoll_fd < 0) die("epoll_create1");
    for (int i = 0; i < n_flows; i++) {
        flow_fd[i] = udp_socket(0, SOCKET_BUFFER);
        if (use_gso) {
            int segment = (int)pkt_size;
            if (setsockopt(flow_fd[i], SOL_UDP, UDP_SEGMENT, &segment, sizeof segment) < 0)
                use_gso = 0; /* an old kernel: fall back to sendmmsg, and say so */
        }
        if (connect(flow_fd[i], (struct sockaddr *)&target, sizeof target) < 0) die("connect");
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, flow_fd[i], &ev) < 0) die("epoll_ctl");
    }
    for (int i = 0; i < TX_BATCH; i++) {
        tx_iov[i].iov_base = tx_area + (size_t)i * pkt_size;
        tx_iov[i].iov_len = pkt_size;
        tx_msgs[i].msg_hdr.msg_iov = &tx_iov[i];
        tx_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    memset(tx_area, 0xab, sizeof tx_area);
    /* A GSO send is one UDP datagram on the way down: at most 64 KiB. */
    if (use_gso && (size_t)tx_batch * pkt_size > 65000) tx_batch = (int)(65000 / pkt_size);
}

static void reset_rx(int with_names) {
    for (int i = 0; i < RX_BATCH; i++) {
        rx_iov[i].iov_base = rx_buf[i];
        rx_iov[i].iov_len = MAX_SIZE;
        memset(&rx_msgs[i].msg_hdr, 0, sizeof rx_msgs[i].msg_hdr);
        rx_msgs[i].msg_hdr.msg_iov = &rx_iov[i];
        rx_msgs[i].msg_hdr.msg_iovlen = 1;
        if (with_names) {
            rx_msgs[i].msg_hdr.msg_name = &rx_addr[i];
            rx_msgs[i].msg_hdr.msg_namelen = sizeof rx_addr[i];
        }
    }
}

static void put32(unsigned char *p, uint32_t v) {
    v = htonl(v);
    memcpy(p, &v, 4);
}

static uint32_t get32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return ntohl(v);
}

/* Send up to `count` datagrams on flow `flow`; returns how many left. */
static int send_batch(int flow, int count, uint64_t *errors) {
    uint64_t t = now_ns();
    for (int i = 0; i < count; i++) {
        unsigned char *p = tx_area + (size_t)i * pkt_size;
        p[0] = 0x80;
        p[1] = 0x6f;
        uint16_t seq = htons(flow_seq[flow]++);
        memcpy(p + 2, &seq, 2);
        put32(p + 4, (uint32_t)(t / 125000)); /* 8 kHz clock, like a voice codec's */
        put32(p + 8, SSRC_BASE + (uint32_t)flow);
        memcpy(p + 12, &t, 8);
        put32(p + 20, (uint32_t)flow);
        put32(p + 24, step_no);
    }
    int sent;
    uint64_t before = now_ns();
    if (use_gso) {
        ssize_t bytes = send(flow_fd[flow], tx_area, (size_t)count * pkt_size, MSG_DONTWAIT);
        sent = bytes < 0 ? -1 : (int)((size_t)bytes / pkt_size);
    } else {
        sent = sendmmsg(flow_fd[flow], tx_msgs, (unsigned)count, MSG_DONTWAIT);
    }
    send_ns += now_ns() - before;
    if (sent < 0) {
        /* EAGAIN/ENOBUFS (buffer full) or ECONNREFUSED (an ICMP error reported late). */
        (*errors)++;
        return 0;
    }
    if (sent < count) (*errors)++;
    return sent;
}

struct sink_counts {
    uint64_t rtp, stun, stale, other;
};

/* One recvmmsg on the sink; counts, and in echo mode sends each datagram back. */
static int drain_sink(struct sink_counts *c, int echo, uint64_t *echo_errors) {
    reset_rx(echo);
    int got = recvmmsg(sink_fd, rx_msgs, RX_BATCH, MSG_DONTWAIT, NULL);
    if (got <= 0) return 0;
    for (int i = 0; i < got; i++) {
        unsigned char *p = rx_buf[i];
        unsigned len = rx_msgs[i].msg_len;
        /* A relay forwarding with --forward encap puts a PROXY v2 header in front
         * (signature, 4 fixed bytes, then its declared length): count what follows.
         * The echo sends the whole datagram back, header included, as a media
         * server answers behind the header it was given. */
        if (len >= 16 && memcmp(p, PROXY_V2_SIGNATURE, 12) == 0) {
            unsigned skip = 16u + ((unsigned)p[14] << 8 | p[15]);
            if (skip > len) skip = len;
            p += skip;
            len -= skip;
        }
        if (len >= 28 && (p[0] & 0xc0) == 0x80) {
            if (get32(p + 24) != step_no) {
                c->stale++;
                continue;
            }
            c->rtp++;
            uint32_t flow = get32(p + 20);
            if (flow < (uint32_t)n_flows) flow_rx[flow]++;
        } else if (len >= 1 && p[0] < 4) {
            c->stun++;
        } else {
            c->other++;
        }
    }
    if (echo) {
        for (int i = 0; i < got; i++) {
            rx_iov[i].iov_len = rx_msgs[i].msg_len;
            rx_msgs[i].msg_hdr.msg_namelen = sizeof rx_addr[i];
        }
        int done = 0;
        while (done < got) {
            int r = sendmmsg(sink_fd, rx_msgs + done, (unsigned)(got - done), MSG_DONTWAIT);
            if (r <= 0) {
                *echo_errors += (uint64_t)(got - done);
                break;
            }
            done += r;
        }
    }
    return got;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double pct(const uint64_t *sorted, uint64_t n, double q) {
    if (n == 0) return -1;
    uint64_t i = (uint64_t)(q * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1000.0;
}

/* Round trips in echo mode: drain every readable flow socket. */
static uint64_t drain_flows(uint64_t *rtt, uint64_t cap, uint64_t n, uint64_t *stale) {
    struct epoll_event evs[256];
    int ready = epoll_wait(epoll_fd, evs, 256, 0);
    for (int e = 0; e < ready; e++) {
        int fd = flow_fd[evs[e].data.u32];
        for (;;) {
            reset_rx(0);
            int got = recvmmsg(fd, rx_msgs, RX_BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0) break;
            uint64_t t = now_ns();
            for (int i = 0; i < got; i++) {
                unsigned char *p = rx_buf[i];
                if (rx_msgs[i].msg_len < 28 || get32(p + 24) != step_no) {
                    (*stale)++;
                    continue;
                }
                uint64_t sent_at;
                memcpy(&sent_at, p + 12, 8);
                if (n < cap) rtt[n] = t - sent_at;
                n++;
            }
            if (got < RX_BATCH) break;
        }
    }
    return n;
}

static void run_step(double rate, double seconds, int echo) {
    step_no++;
    send_ns = 0;
    memset(flow_rx, 0, sizeof *flow_rx * (size_t)n_flows);
    struct sink_counts c = {0};
    uint64_t sent = 0, send_errors = 0, echo_errors = 0, max_backlog = 0, stale_rtt = 0;
    uint64_t cap = echo ? (uint64_t)(rate * seconds * 1.2) + 1024 : 0;
    uint64_t *rtt = echo ? malloc(cap * sizeof *rtt) : NULL;
    uint64_t n_rtt = 0;
    int flow = 0;
    /* A sendmmsg per datagram costs several times one per batch: wait until a
     * burst of BURST_NS worth of datagrams is due (one datagram at low rates,
     * so latency steps stay smooth; a full batch from ~640k/s up). */
    uint64_t min_batch = (uint64_t)(rate * BURST_NS / 1e9);
    if (min_batch < 1) min_batch = 1;
    if (min_batch > (uint64_t)tx_batch) min_batch = (uint64_t)tx_batch;
    uint64_t start = now_ns();
    uint64_t end = start + (uint64_t)(seconds * 1e9);
    uint64_t t = start;
    while (t < end) {
        uint64_t want;
        if (rate > 0) {
            uint64_t due = (uint64_t)(rate * (double)(t - start) / 1e9);
            want = due > sent ? due - sent : 0;
            if (want > max_backlog) max_backlog = want;
            if (want > (uint64_t)tx_batch) want = (uint64_t)tx_batch;
            if (want < min_batch) want = 0;
        } else {
            want = (uint64_t)tx_batch;
        }
        if (want) {
            sent += (uint64_t)send_batch(flow, (int)want, &send_errors);
            flow = (flow + 1) % n_flows;
        }
        drain_sink(&c, echo, &echo_errors);
        if (echo) n_rtt = drain_flows(rtt, cap, n_rtt, &stale_rtt);
        t = now_ns();
    }
    uint64_t send_end = t;
    /* Drain: what is still queued in the forwarder arrives now.  last_rx - send_end
     * is how long the forwarder was still working (the quiet wait after is not). */
    uint64_t last_rx = t;
    uint64_t expect = sent;
    while (t - send_end < DRAIN_MAX_NS && t - last_rx < QUIET_NS) {
        uint64_t before = c.rtp + n_rtt;
        drain_sink(&c, echo, &echo_errors);
        if (echo) n_rtt = drain_flows(rtt, cap, n_rtt, &stale_rtt);
        t = now_ns();
        if (c.rtp + n_rtt != before) last_rx = t;
        if ((echo ? n_rtt : c.rtp) >= expect) break;
    }
    double send_s = (double)(send_end - start) / 1e9;
    int flows_seen = 0;
    for (int i = 0; i < n_flows; i++) flows_seen += flow_rx[i] > 0;
    printf("{\"mode\":\"%s\",\"offered_pps\":%.1f,\"seconds\":%.3f,\"sent\":%llu,"
           "\"send_seconds\":%.6f,\"achieved_pps\":%.1f,\"max_backlog\":%llu,"
           "\"send_errors\":%llu,\"sink_received\":%llu,\"sink_stale\":%llu,"
           "\"sink_other\":%llu,\"flows_seen\":%d,\"drain_seconds\":%.3f,"
           "\"drain_active_seconds\":%.6f,\"send_ns_per_datagram\":%.1f",
           echo ? "echo" : "oneway", rate, seconds, (unsigned long long)sent, send_s,
           send_s > 0 ? (double)sent / send_s : 0.0, (unsigned long long)max_backlog,
           (unsigned long long)send_errors, (unsigned long long)c.rtp,
           (unsigned long long)c.stale, (unsigned long long)(c.other + c.stun), flows_seen,
           (double)(t - send_end) / 1e9, (double)(last_rx - send_end) / 1e9,
           sent ? (double)send_ns / (double)sent : 0.0);
    if (echo) {
        uint64_t kept = n_rtt < cap ? n_rtt : cap;
        /* Round trips in arrival order, cut into about one-second windows: one
         * bad second (a neighbour on the machine) then shows as one window. */
        int windows = (int)(seconds + 0.5);
        if (windows < 1) windows = 1;
        printf(",\"windows_us\":[");
        for (int w = 0; w < windows; w++) {
            uint64_t from = kept * (uint64_t)w / (uint64_t)windows;
            uint64_t to = kept * (uint64_t)(w + 1) / (uint64_t)windows;
            qsort(rtt + from, to - from, sizeof *rtt, cmp_u64);
            printf("%s{\"p50\":%.2f,\"p99\":%.2f}", w ? "," : "", pct(rtt + from, to - from, 0.5),
                   pct(rtt + from, to - from, 0.99));
        }
        printf("]");
        qsort(rtt, kept, sizeof *rtt, cmp_u64);
        double sum = 0;
        for (uint64_t i = 0; i < kept; i++) sum += (double)rtt[i];
        printf(",\"echo_errors\":%llu,\"replies\":%llu,\"replies_stale\":%llu,"
               "\"rtt_us\":{\"min\":%.2f,\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,"
               "\"p999\":%.2f,\"max\":%.2f,\"mean\":%.2f}",
               (unsigned long long)echo_errors, (unsigned long long)n_rtt,
               (unsigned long long)stale_rtt, pct(rtt, kept, 0.0), pct(rtt, kept, 0.5),
               pct(rtt, kept, 0.9), pct(rtt, kept, 0.99), pct(rtt, kept, 0.999),
               pct(rtt, kept, 1.0), kept ? sum / (double)kept / 1000.0 : -1.0);
        free(rtt);
    }
    printf("}\n");
    fflush(stdout);
}

static void prime(double timeout_s) {
    uint64_t errors = 0;
    for (int i = 0; i < n_flows; i++)
        if (send(flow_fd[i], prime_data[i], prime_len[i], 0) < 0) errors++;
    struct sink_counts c = {0};
    uint64_t start = now_ns(), t = start;
    while ((int)c.stun < n_flows && (double)(t - start) / 1e9 < timeout_s) {
        if (!drain_sink(&c, 0, &errors)) usleep(1000);
        t = now_ns();
    }
    printf("{\"primed\":%llu,\"flows\":%d,\"send_errors\":%llu,\"seconds\":%.3f}\n",
           (unsigned long long)c.stun, n_flows, (unsigned long long)errors,
           (double)(t - start) / 1e9);
    fflush(stdout);
}

static void set_sends(int gso) {
    int segment = gso ? (int)pkt_size : 0;
    for (int i = 0; i < n_flows; i++)
        if (setsockopt(flow_fd[i], SOL_UDP, UDP_SEGMENT, &segment, sizeof segment) < 0) gso = 0;
    use_gso = gso;
    tx_batch = TX_BATCH;
    if (use_gso && (size_t)tx_batch * pkt_size > 65000) tx_batch = (int)(65000 / pkt_size);
    printf("{\"gso\":%s,\"batch\":%d}\n", use_gso ? "true" : "false", tx_batch);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr,
                "usage: %s TARGET_IP TARGET_PORT SINK_PORT FLOWS SIZE PRIME_FILE [gso|sendmmsg]\n"
                "then commands on stdin: prime T | oneway RATE S | echo RATE S | quit\n",
                argv[0]);
        return 2;
    }
    target.sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1) die("target address");
    target.sin_port = htons((uint16_t)atoi(argv[2]));
    int sink_port = atoi(argv[3]);
    n_flows = atoi(argv[4]);
    pkt_size = (size_t)atoi(argv[5]);
    if (n_flows < 1 || pkt_size < 32 || pkt_size > MAX_SIZE) {
        fprintf(stderr, "need FLOWS >= 1 and 32 <= SIZE <= %d\n", MAX_SIZE);
        return 2;
    }
    use_gso = argc < 8 || strcmp(argv[7], "sendmmsg") != 0;
    load_primes(argv[6]);
    /* The sink first: a flow socket must not take its port. */
    sink_fd = udp_socket((uint16_t)sink_port, SINK_BUFFER);
    setup();
    printf("{\"ready\":true,\"gso\":%s,\"batch\":%d}\n", use_gso ? "true" : "false", tx_batch);
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32], word[32] = "";
        double a = 0, b = 0;
        int fields = sscanf(line, "%31s %lf %lf", cmd, &a, &b);
        if (fields < 1) continue;
        if (!strcmp(cmd, "quit")) break;
        if (!strcmp(cmd, "sends") && sscanf(line, "%*s %31s", word) == 1) {
            set_sends(strcmp(word, "sendmmsg") != 0);
            continue;
        }
        if (!strcmp(cmd, "prime") && fields >= 2) prime(a);
        else if (!strcmp(cmd, "oneway") && fields == 3) run_step(a, b, 0);
        else if (!strcmp(cmd, "echo") && fields == 3) run_step(a, b, 1);
        else {
            printf("{\"error\":\"bad command\"}\n");
            fflush(stdout);
        }
    }
    return 0;
}
