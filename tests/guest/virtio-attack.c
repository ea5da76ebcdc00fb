/*
 * virtio-attack: a hostile guest for berth-vmm's virtio-blk, virtio-net, virtio-vsock and
 * virtio-rng devices (tests/tests/vmm.rs, the_monitor_survives_a_hostile_guest).
 *
 * Run as root in a test guest after the devices were unbound from their drivers. Like
 * virtiofs-attack.c it drives a device's virtio-mmio registers itself (through /dev/mem:
 * the guest kernel's STRICT_DEVMEM gives it device registers, never RAM), with rings and
 * buffers in its own locked pages (physical addresses from /proc/self/pagemap), and sends
 * what a compromised guest kernel could: descriptors outside guest RAM, oversized
 * lengths, looping and out-of-range chains, a runaway avail index, rings outside RAM,
 * register and config-space floods, and each device's own malformed requests (block
 * requests past the disk's end, short and garbage frames, vsock packets with bad headers
 * and connection floods). Between attacks it checks that the device still answers a
 * well-formed request, after a reset where the device asked for one. Each result is
 * printed as "attack NAME: ..."; the host side checks the monitor stayed up.
 *
 * usage: virtio-attack blk|net|vsock|rng
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define QSZ 16
#define NQ 3

#define R_MAGIC 0x00
#define R_DEVICE_ID 0x08
#define R_DEV_FEAT_SEL 0x14
#define R_DRV_FEAT 0x20
#define R_DRV_FEAT_SEL 0x24
#define R_QUEUE_SEL 0x30
#define R_QUEUE_NUM_MAX 0x34
#define R_QUEUE_NUM 0x38
#define R_QUEUE_READY 0x44
#define R_QUEUE_NOTIFY 0x50
#define R_INT_STATUS 0x60
#define R_INT_ACK 0x64
#define R_STATUS 0x70
#define R_DESC_LO 0x80
#define R_DESC_HI 0x84
#define R_AVAIL_LO 0x90
#define R_AVAIL_HI 0x94
#define R_USED_LO 0xa0
#define R_USED_HI 0xa4
#define R_CONFIG 0x100

#define F_NEXT 1
#define F_WRITE 2
#define NEEDS_RESET 0x40
#define OUTSIDE_RAM 0x7ffffffff000ULL

struct desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct avail { uint16_t flags; uint16_t idx; uint16_t ring[QSZ]; uint16_t used_event; };
struct used_elem { uint32_t id; uint32_t len; };
struct used { uint16_t flags; uint16_t idx; struct used_elem ring[QSZ]; uint16_t avail_event; };

struct queue {
    struct desc *dt;
    struct avail *av;
    volatile struct used *us;
    uint16_t next_avail, seen_used;
    int ready;
};

static volatile uint32_t *regs;
static struct queue qs[NQ];
static int nqueues;
static uint8_t *buf[8];
static uint64_t buf_pa[8];

static void wr(int off, uint32_t v) { regs[off / 4] = v; __sync_synchronize(); }
static uint32_t rd(int off) { __sync_synchronize(); return regs[off / 4]; }

static void die(const char *what) { fprintf(stderr, "virtio-attack: %s: %s\n", what, strerror(errno)); exit(1); }

static uint64_t phys(void *v) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) die("pagemap");
    uint64_t e = 0;
    if (pread(fd, &e, 8, ((uintptr_t)v / PAGE) * 8) != 8) die("pagemap read");
    close(fd);
    if (!(e & (1ULL << 63))) { fprintf(stderr, "virtio-attack: page not present\n"); exit(1); }
    return (e & ((1ULL << 55) - 1)) * PAGE + (uintptr_t)v % PAGE;
}

static void *page(void) {
    void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    memset(p, 0, PAGE);
    return p;
}

static void set_queue(int q, uint64_t d, uint64_t a, uint64_t u) {
    wr(R_QUEUE_SEL, q);
    wr(R_QUEUE_NUM, QSZ);
    wr(R_DESC_LO, (uint32_t)d); wr(R_DESC_HI, d >> 32);
    wr(R_AVAIL_LO, (uint32_t)a); wr(R_AVAIL_HI, a >> 32);
    wr(R_USED_LO, (uint32_t)u); wr(R_USED_HI, u >> 32);
    wr(R_QUEUE_READY, 1);
}

/* Reset, negotiate VERSION_1 only, set up every queue in our pages, DRIVER_OK. */
static void init(void) {
    wr(R_STATUS, 0);
    wr(R_STATUS, 1);
    wr(R_STATUS, 3);
    wr(R_DRV_FEAT_SEL, 1); wr(R_DRV_FEAT, 1);
    wr(R_DRV_FEAT_SEL, 0); wr(R_DRV_FEAT, 0);
    wr(R_STATUS, 0xb);
    for (int q = 0; q < nqueues; q++) {
        memset(qs[q].dt, 0, PAGE); memset(qs[q].av, 0, PAGE); memset((void *)qs[q].us, 0, PAGE);
        qs[q].next_avail = qs[q].seen_used = 0;
        set_queue(q, phys(qs[q].dt), phys(qs[q].av), phys((void *)qs[q].us));
    }
    wr(R_STATUS, 0xf);
}

/* Publishes `head` on queue q (the avail index moved by `step`) and kicks; waits up to
 * `wait_ms` for the used index to move. Returns the used length, or -1. */
static long submit(int q, uint16_t head, uint16_t step, int wait_ms) {
    struct queue *Q = &qs[q];
    Q->av->ring[Q->next_avail % QSZ] = head;
    __sync_synchronize();
    Q->next_avail += step;
    Q->av->idx = Q->next_avail;
    __sync_synchronize();
    wr(R_QUEUE_NOTIFY, q);
    for (int i = 0; i < wait_ms; i++) {
        __sync_synchronize();
        if (Q->us->idx != Q->seen_used) {
            long len = Q->us->ring[Q->seen_used % QSZ].len;
            Q->seen_used = Q->us->idx;
            wr(R_INT_ACK, rd(R_INT_STATUS));
            return len;
        }
        usleep(1000);
    }
    return -1;
}

static void report(const char *name, long r) {
    uint32_t st = rd(R_STATUS);
    if (r < 0) printf("attack %s: no answer, status %#x\n", name, st);
    else printf("attack %s: used len %ld, status %#x\n", name, r, st);
    fflush(stdout);
}

static const char *kind;
static int req_q; /* the queue the driver sends requests on */

/* One well-formed request: whether the device served it. */
static int sane_once(void) {
    long r = -1;
    struct desc *dt = qs[req_q].dt;
    if (!strcmp(kind, "blk")) {
        uint32_t *h = (uint32_t *)buf[0];
        h[0] = 0; h[1] = 0; *(uint64_t *)(h + 2) = 0; /* read sector 0 */
        buf[2][0] = 0xff;
        dt[0] = (struct desc){ buf_pa[0], 16, F_NEXT, 1 };
        dt[1] = (struct desc){ buf_pa[1], 512, F_WRITE | F_NEXT, 2 };
        dt[2] = (struct desc){ buf_pa[2], 1, F_WRITE, 0 };
        r = submit(req_q, 0, 1, 3000);
        return r >= 0 && buf[2][0] == 0;
    } else if (!strcmp(kind, "rng")) {
        dt[0] = (struct desc){ buf_pa[1], 64, F_WRITE, 0 };
        r = submit(req_q, 0, 1, 3000);
        return r == 64;
    } else if (!strcmp(kind, "net")) {
        memset(buf[0], 0, 12 + 60); /* vnet header + a minimal broadcast frame */
        memset(buf[0] + 12, 0xff, 6);
        dt[0] = (struct desc){ buf_pa[0], 12 + 60, 0, 0 };
        r = submit(req_q, 0, 1, 3000);
        return r >= 0;
    } else { /* vsock: a request to a port nobody listens on; the answer is a reset */
        memset(buf[0], 0, 44);
        *(uint64_t *)buf[0] = 3; *(uint64_t *)(buf[0] + 8) = 2;
        *(uint32_t *)(buf[0] + 16) = 4000; *(uint32_t *)(buf[0] + 20) = 9;
        *(uint16_t *)(buf[0] + 28) = 1; *(uint16_t *)(buf[0] + 30) = 1; /* stream, REQUEST */
        *(uint32_t *)(buf[0] + 36) = 65536;
        struct desc *rx = qs[0].dt;
        dt[0] = (struct desc){ buf_pa[0], 44, 0, 0 };
        submit(req_q, 0, 1, 3000);
        /* The answer is a reset to our port; other packets (a host connection's request,
         * resets of earlier floods) may come first. */
        int op = -1;
        for (int tries = 0; tries < 1024 && r < 0; tries++) {
            memset(buf[3], 0, 64);
            rx[0] = (struct desc){ buf_pa[3], PAGE, F_WRITE, 0 };
            long got = submit(0, 0, 1, 3000);
            if (got < 0) break;
            op = *(uint16_t *)(buf[3] + 30);
            if (got >= 44 && op == 3 && *(uint32_t *)(buf[3] + 20) == 4000) r = got;
        }
        (void)op;
        return r >= 0;
    }
}

/* Whether the device still serves a well-formed request after an attack, resetting it
 * first when it asks for that (a broken ring leaves it needing a reset, as the virtio
 * spec has it), also when it finds out only on this request. */
static void sane(const char *after) {
    for (int attempt = 0; attempt < 2; attempt++) {
        if (rd(R_STATUS) & NEEDS_RESET) { printf("device needs reset after %s\n", after); init(); }
        if (sane_once()) { printf("sane after %s: served\n", after); fflush(stdout); return; }
        if (!(rd(R_STATUS) & NEEDS_RESET)) break;
    }
    printf("sane after %s: NOT SERVED\n", after);
    fflush(stdout);
}

/* Attacks every device's rings take. */
static void ring_attacks(void) {
    struct desc *dt = qs[req_q].dt;
    memset(buf[0], 0x5a, PAGE);
    dt[0] = (struct desc){ OUTSIDE_RAM, PAGE, F_NEXT, 1 };
    dt[1] = (struct desc){ buf_pa[1], PAGE, F_WRITE, 0 };
    report("outside-ram", submit(req_q, 0, 1, 500));
    sane("outside-ram");
    dt[0] = (struct desc){ buf_pa[0], 0xffffffff, F_NEXT, 1 };
    dt[1] = (struct desc){ buf_pa[1], 0xffffffff, F_WRITE, 0 };
    report("huge-len", submit(req_q, 0, 1, 500));
    sane("huge-len");
    dt[0] = (struct desc){ buf_pa[0], 64, F_NEXT, 0 };
    report("loop", submit(req_q, 0, 1, 500));
    sane("loop");
    dt[0] = (struct desc){ buf_pa[0], 64, F_NEXT, 1 };
    dt[1] = (struct desc){ buf_pa[1], 64, F_NEXT, 0 };
    report("loop-of-two", submit(req_q, 0, 1, 500));
    sane("loop-of-two");
    dt[0] = (struct desc){ buf_pa[0], 64, F_NEXT, 200 };
    report("next-out-of-range", submit(req_q, 0, 1, 500));
    sane("next-out-of-range");
    report("head-out-of-range", submit(req_q, 300, 1, 500));
    sane("head-out-of-range");
    for (int i = 0; i < QSZ; i++) qs[req_q].av->ring[i] = 0x7777;
    report("avail-runaway", submit(req_q, 0x7777, 1000, 500));
    sane("avail-runaway");
    /* Rings outside guest RAM. */
    wr(R_STATUS, 0); wr(R_STATUS, 1); wr(R_STATUS, 3);
    wr(R_DRV_FEAT_SEL, 1); wr(R_DRV_FEAT, 1); wr(R_DRV_FEAT_SEL, 0); wr(R_DRV_FEAT, 0);
    wr(R_STATUS, 0xb);
    for (int q = 0; q < nqueues; q++) set_queue(q, OUTSIDE_RAM, OUTSIDE_RAM + 0x1000, OUTSIDE_RAM + 0x2000);
    wr(R_STATUS, 0xf);
    wr(R_QUEUE_NOTIFY, req_q);
    usleep(100000);
    report("rings-outside-ram", -1);
    init();
    sane("rings-outside-ram");
    /* Floods: config space (reads and writes, in and out of range), notifies of every
     * queue number, and random register values, DRIVER_OK never set. */
    for (int i = 0; i < 0xf00; i += 4) { wr(R_CONFIG + i, 0xffffffff); (void)rd(R_CONFIG + i); }
    for (int i = 0; i < 3000; i++) wr(R_QUEUE_NOTIFY, i % 7);
    srand(7);
    for (int i = 0; i < 500; i++) wr((rand() % 0x100) & ~3, rand());
    report("mmio-flood", -1);
    init();
    sane("mmio-flood");
}

static void blk_attacks(void) {
    struct desc *dt = qs[req_q].dt;
    uint64_t sectors = rd(R_CONFIG) | ((uint64_t)rd(R_CONFIG + 4) << 32);
    printf("disk has %llu sectors\n", (unsigned long long)sectors);
    uint64_t at[] = { sectors, sectors - 1, 0xffffffffffffffffULL, 0x8000000000000000ULL };
    const char *names[] = { "read-at-end", "read-across-end", "read-sector-max", "read-sector-huge" };
    for (int i = 0; i < 4; i++) {
        uint32_t *h = (uint32_t *)buf[0];
        h[0] = 0; h[1] = 0; *(uint64_t *)(h + 2) = at[i];
        buf[2][0] = 0xff;
        dt[0] = (struct desc){ buf_pa[0], 16, F_NEXT, 1 };
        dt[1] = (struct desc){ buf_pa[1], PAGE, F_WRITE | F_NEXT, 2 };
        dt[2] = (struct desc){ buf_pa[2], 1, F_WRITE, 0 };
        long r = submit(req_q, 0, 1, 2000);
        int st = buf[2][0];
        printf("attack %s: used len %ld, blk status %d\n", names[i], r, st);
    }
    /* Writes past the end, and a write to the read-only disk's sector 0. */
    uint32_t *h = (uint32_t *)buf[0];
    h[0] = 1; *(uint64_t *)(h + 2) = sectors;
    buf[2][0] = 0xff;
    dt[0] = (struct desc){ buf_pa[0], 16, F_NEXT, 1 };
    dt[1] = (struct desc){ buf_pa[1], PAGE, F_NEXT, 2 };
    dt[2] = (struct desc){ buf_pa[2], 1, F_WRITE, 0 };
    long r = submit(req_q, 0, 1, 2000);
    int st = buf[2][0];
    printf("attack write-past-end: used len %ld, blk status %d\n", r, st);
    *(uint64_t *)(h + 2) = 0;
    buf[2][0] = 0xff;
    r = submit(req_q, 0, 1, 2000);
    st = buf[2][0];
    printf("attack write-sector-0: used len %ld, blk status %d\n", r, st);
    /* Unknown type; a header alone; a short header; a data buffer claimed writable but
     * the status missing. */
    h[0] = 0x1234;
    buf[2][0] = 0xff;
    r = submit(req_q, 0, 1, 2000);
    st = buf[2][0];
    printf("attack unknown-type: used len %ld, blk status %d\n", r, st);
    h[0] = 0;
    dt[0] = (struct desc){ buf_pa[0], 16, 0, 0 };
    report("header-only", submit(req_q, 0, 1, 500));
    dt[0] = (struct desc){ buf_pa[0], 8, F_NEXT, 1 };
    dt[1] = (struct desc){ buf_pa[2], 1, F_WRITE, 0 };
    report("short-header", submit(req_q, 0, 1, 500));
    dt[0] = (struct desc){ buf_pa[0], 16, F_NEXT, 1 };
    dt[1] = (struct desc){ buf_pa[1], PAGE, F_WRITE, 0 };
    report("no-status", submit(req_q, 0, 1, 500));
    sane("malformed-requests");
}

static void net_attacks(void) {
    struct desc *dt = qs[req_q].dt;
    dt[0] = (struct desc){ buf_pa[0], 4, 0, 0 };
    report("frame-shorter-than-header", submit(req_q, 0, 1, 500));
    /* A frame of 15 pages: more than any Ethernet frame. */
    for (int i = 0; i < 15; i++) dt[i] = (struct desc){ buf_pa[i % 8], PAGE, F_NEXT, i + 1 };
    dt[14].flags = 0;
    report("oversized-frame", submit(req_q, 0, 1, 500));
    /* A flood of garbage frames without waiting for their completion. */
    srand(3);
    for (int i = 0; i < 64; i++) buf[0][i] = rand();
    dt[0] = (struct desc){ buf_pa[0], 12 + 64, 0, 0 };
    for (int i = 0; i < 1000; i++) submit(req_q, 0, 1, i % 8 == 7 ? 50 : 0);
    report("garbage-frame-flood", -1);
    /* The receive queue stays empty: the host floods the tap meanwhile. */
    sane("malformed-frames");
}

static void vsock_hdr(uint8_t *b, uint64_t src_cid, uint64_t dst_cid, uint32_t sport, uint32_t dport,
                      uint32_t len, uint16_t type, uint16_t op) {
    memset(b, 0, 44);
    *(uint64_t *)b = src_cid; *(uint64_t *)(b + 8) = dst_cid;
    *(uint32_t *)(b + 16) = sport; *(uint32_t *)(b + 20) = dport;
    *(uint32_t *)(b + 24) = len; *(uint16_t *)(b + 28) = type; *(uint16_t *)(b + 30) = op;
    *(uint32_t *)(b + 36) = 65536;
}

static void vsock_attacks(void) {
    struct desc *dt = qs[req_q].dt;
    struct { const char *name; uint64_t src, dst; uint32_t len; uint16_t type, op; uint32_t dlen; } bad[] = {
        { "len-beyond-buffer", 3, 2, 0xffffffff, 1, 5, 44 },   /* RW with a huge len */
        { "unknown-op", 3, 2, 0, 1, 99, 44 },
        { "dgram-type", 3, 2, 0, 2, 1, 44 },
        { "not-to-the-host", 3, 7, 0, 1, 1, 44 },
        { "spoofed-source", 2, 2, 0, 1, 1, 44 },
        { "short-header", 3, 2, 0, 1, 1, 20 },
        { "rw-unknown-connection", 3, 2, 16, 1, 5, 60 },
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vsock_hdr(buf[0], bad[i].src, bad[i].dst, 5000 + i, 1234, bad[i].len, bad[i].type, bad[i].op);
        dt[0] = (struct desc){ buf_pa[0], bad[i].dlen, 0, 0 };
        report(bad[i].name, submit(req_q, 0, 1, 500));
    }
    /* A connection to the host's listener on port 1234 (outside the jail: a reset). */
    {
        struct desc *rx = qs[0].dt;
        vsock_hdr(buf[0], 3, 2, 7000, 1234, 0, 1, 1);
        dt[0] = (struct desc){ buf_pa[0], 44, 0, 0 };
        submit(req_q, 0, 1, 500);
        int op = -1;
        for (int tries = 0; tries < 1024; tries++) {
            memset(buf[3], 0, 64);
            rx[0] = (struct desc){ buf_pa[3], PAGE, F_WRITE, 0 };
            if (submit(0, 0, 1, 3000) < 0) break;
            if (*(uint32_t *)(buf[3] + 20) == 7000) { op = *(uint16_t *)(buf[3] + 30); break; }
        }
        printf("attack connect-host-listener: op %d\n", op);
        fflush(stdout);
    }
    /* A connection flood to a host port nobody listens on (each answered by a reset that
     * queues up: no receive buffer is posted), then to the host's listener on port 1234. */
    for (int port = 1234, n = 0; n < 2; n++, port = 1235) {
        for (int i = 0; i < 600; i++) {
            vsock_hdr(buf[0], 3, 2, 10000 + i, port == 1234 ? 9999 : 1234, 0, 1, 1);
            dt[0] = (struct desc){ buf_pa[0], 44, 0, 0 };
            submit(req_q, 0, 1, i % 8 == 7 ? 5 : 0);
        }
        usleep(500000);
        report(n == 0 ? "connect-flood-no-listener" : "connect-flood-listener", -1);
    }
    sane("bad-packets-and-floods");
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: virtio-attack blk|net|vsock|rng\n"); return 2; }
    kind = argv[1];
    uint32_t want = !strcmp(kind, "blk") ? 2 : !strcmp(kind, "net") ? 1 : !strcmp(kind, "vsock") ? 19 : !strcmp(kind, "rng") ? 4 : 0;
    if (!want) { fprintf(stderr, "virtio-attack: unknown device %s\n", kind); return 2; }
    nqueues = want == 2 || want == 4 ? 1 : want == 1 ? 2 : 3;
    req_q = want == 1 || want == 19 ? 1 : 0;
    if (mlockall(MCL_CURRENT | MCL_FUTURE) < 0) die("mlockall");
    int mem = open("/dev/mem", O_RDWR | O_SYNC);
    if (mem < 0) die("/dev/mem");
    char cmdline[4096] = { 0 };
    FILE *f = fopen("/proc/cmdline", "r");
    if (!f || !fgets(cmdline, sizeof cmdline, f)) die("/proc/cmdline");
    fclose(f);
    uint64_t base = 0;
    for (char *p = cmdline; (p = strstr(p, "virtio_mmio.device=4K@")); p++) {
        uint64_t b = strtoull(p + strlen("virtio_mmio.device=4K@"), NULL, 16);
        void *m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mem, b);
        if (m == MAP_FAILED) continue; /* a driver holds it */
        regs = m;
        if (rd(R_MAGIC) == 0x74726976 && rd(R_DEVICE_ID) == want) { base = b; break; }
        munmap(m, PAGE);
        regs = NULL;
    }
    if (!base) { fprintf(stderr, "virtio-attack: no unbound %s device\n", kind); return 1; }
    printf("%s device at %#llx\n", kind, (unsigned long long)base);
    for (int q = 0; q < nqueues; q++) { qs[q].dt = page(); qs[q].av = page(); qs[q].us = page(); }
    for (int i = 0; i < 8; i++) { buf[i] = page(); buf_pa[i] = phys(buf[i]); }
    init();
    sane("start");
    if (want == 2) blk_attacks();
    if (want == 1) net_attacks();
    if (want == 19) vsock_attacks();
    ring_attacks();
    printf("ATTACKS-DONE %s\n", kind);
    fflush(stdout);
    return 0;
}
