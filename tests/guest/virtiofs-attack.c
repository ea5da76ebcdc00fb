/*
 * virtiofs-attack: a hostile guest for berth's virtio-fs device (tests/tests/vmm.rs).
 *
 * Run as root in a test guest after the virtio-fs device was unbound from its drivers.
 * It drives the device's virtio-mmio registers itself (through /dev/mem: the guest
 * kernel's STRICT_DEVMEM gives it device registers, never RAM), with its rings and buffers
 * in its own locked pages (physical addresses from /proc/self/pagemap), and sends what a
 * compromised guest kernel could: garbage FUSE requests, descriptors outside guest RAM,
 * looping and out-of-range chains, oversized lengths, a runaway avail index, and path
 * traversal attempts ("..", names with '/', through a symlink). Each result is printed;
 * the host side checks that the monitor stayed up or stopped cleanly and that nothing
 * outside the shared directory changed.
 *
 * usage: virtiofs-attack   (finds the device among the kernel command line's
 * virtio_mmio.device= entries: the one /dev/mem maps, no driver holding it, with ID 26)
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

/* virtio-mmio registers */
#define R_MAGIC 0x00
#define R_DEVICE_ID 0x08
#define R_DEV_FEAT_SEL 0x14
#define R_DRV_FEAT 0x20
#define R_DRV_FEAT_SEL 0x24
#define R_QUEUE_SEL 0x30
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

/* FUSE */
#define FUSE_LOOKUP 1
#define FUSE_GETATTR 3
#define FUSE_SYMLINK 6
#define FUSE_MKDIR 9
#define FUSE_INIT 26

struct desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct avail { uint16_t flags; uint16_t idx; uint16_t ring[QSZ]; uint16_t used_event; };
struct used_elem { uint32_t id; uint32_t len; };
struct used { uint16_t flags; uint16_t idx; struct used_elem ring[QSZ]; uint16_t avail_event; };
struct in_hdr { uint32_t len, opcode; uint64_t unique, nodeid; uint32_t uid, gid, pid; uint16_t extlen, pad; };
struct out_hdr { uint32_t len; int32_t error; uint64_t unique; };
struct entry_out { uint64_t nodeid, generation, entry_valid, attr_valid; uint32_t ev_nsec, av_nsec; uint8_t attr[88]; };

static volatile uint32_t *regs;
static struct desc *dt;
static struct avail *av;
static volatile struct used *us;
static uint8_t *req, *rep;
static uint64_t req_pa, rep_pa;
static uint16_t next_avail, seen_used;
static uint64_t unique = 1;

static void wr(int off, uint32_t v) { regs[off / 4] = v; __sync_synchronize(); }
static uint32_t rd(int off) { __sync_synchronize(); return regs[off / 4]; }

static void die(const char *what) { fprintf(stderr, "virtiofs-attack: %s: %s\n", what, strerror(errno)); exit(1); }

static uint64_t phys(void *v) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) die("pagemap");
    uint64_t e = 0;
    if (pread(fd, &e, 8, ((uintptr_t)v / PAGE) * 8) != 8) die("pagemap read");
    close(fd);
    if (!(e & (1ULL << 63))) { fprintf(stderr, "virtiofs-attack: page not present\n"); exit(1); }
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

/* Publishes descriptor `head` on the request queue, kicks, and waits up to 2 s for the
 * used index to move. Returns the used length, or -1 when nothing came back. */
static long submit(uint16_t head, uint16_t avail_step) {
    av->ring[next_avail % QSZ] = head;
    __sync_synchronize();
    next_avail += avail_step;
    av->idx = next_avail;
    __sync_synchronize();
    wr(R_QUEUE_NOTIFY, 1);
    for (int i = 0; i < 2000; i++) {
        __sync_synchronize();
        if (us->idx != seen_used) {
            long len = us->ring[seen_used % QSZ].len;
            seen_used = us->idx;
            wr(R_INT_ACK, rd(R_INT_STATUS));
            return len;
        }
        usleep(1000);
    }
    return -1;
}

/* A request in `req` (device-readable) and a reply buffer (device-writable). */
static long fuse(uint32_t opcode, uint64_t nodeid, const void *body, uint32_t body_len) {
    struct in_hdr *h = (struct in_hdr *)req;
    memset(req, 0, PAGE);
    memset(rep, 0, PAGE);
    h->len = sizeof *h + body_len;
    h->opcode = opcode;
    h->unique = unique++;
    h->nodeid = nodeid;
    memcpy(req + sizeof *h, body, body_len);
    dt[0] = (struct desc){ req_pa, h->len, 1, 1 };
    dt[1] = (struct desc){ rep_pa, PAGE, 2, 0 };
    return submit(0, 1);
}

static int32_t reply_error(void) { return ((struct out_hdr *)rep)->error; }

static void report(const char *name, long r) {
    if (r < 0) printf("attack %s: no answer\n", name);
    else printf("attack %s: used len %ld, error %d\n", name, r, r >= 16 ? reply_error() : 0);
    fflush(stdout);
}

int main(void) {
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
        if (rd(R_MAGIC) == 0x74726976 && rd(R_DEVICE_ID) == 26) { base = b; break; }
        munmap(m, PAGE);
        regs = NULL;
    }
    if (!base) { fprintf(stderr, "virtiofs-attack: no unbound virtio-fs device\n"); return 1; }
    printf("virtio-fs device at %#llx\n", (unsigned long long)base);
    dt = page(); av = page(); us = page(); req = page(); rep = page();
    struct desc *hdt = page(); struct avail *hav = page(); struct used *hus = page();
    req_pa = phys(req); rep_pa = phys(rep);

    /* Reset and negotiate VERSION_1 only. */
    wr(R_STATUS, 0);
    wr(R_STATUS, 1);
    wr(R_STATUS, 3);
    wr(R_DEV_FEAT_SEL, 1);
    wr(R_DRV_FEAT_SEL, 1); wr(R_DRV_FEAT, 1);
    wr(R_DRV_FEAT_SEL, 0); wr(R_DRV_FEAT, 0);
    wr(R_STATUS, 0xb);
    set_queue(0, phys(hdt), phys(hav), phys(hus));
    set_queue(1, phys(dt), phys(av), phys((void *)us));
    wr(R_STATUS, 0xf);
    printf("device status %#x\n", rd(R_STATUS));

    /* A proper FUSE_INIT first: the backend answers nothing else before it. */
    uint32_t init[16] = { 7, 31, 0, 0 };
    report("init", fuse(FUSE_INIT, 0, init, 16));

    /* Traversal: ".." of the root, names with '/', through a symlink to "/". */
    long r = fuse(FUSE_LOOKUP, 1, "..", 3);
    report("lookup-dotdot", r);
    uint64_t up = (r >= 16 && reply_error() == 0) ? ((struct entry_out *)(rep + 16))->nodeid : 0;
    printf("lookup .. of the root gave node %llu\n", (unsigned long long)up);
    if (up) {
        uint8_t mk[8 + 16] = { 0 };
        *(uint32_t *)mk = 0755;
        strcpy((char *)mk + 8, "escaped");
        report("mkdir-under-dotdot", fuse(FUSE_MKDIR, up, mk, 8 + 8));
        r = fuse(FUSE_LOOKUP, up, "..", 3);
        uint64_t up2 = (r >= 16 && reply_error() == 0) ? ((struct entry_out *)(rep + 16))->nodeid : 0;
        if (up2) report("mkdir-under-dotdot-dotdot", fuse(FUSE_MKDIR, up2, mk, 8 + 8));
    }
    uint8_t mk2[8 + 16] = { 0 };
    *(uint32_t *)mk2 = 0755;
    strcpy((char *)mk2 + 8, "../escaped2");
    report("mkdir-slash-name", fuse(FUSE_MKDIR, 1, mk2, 8 + 12));
    report("symlink-to-root", fuse(FUSE_SYMLINK, 1, "lnk\0/", 6));
    r = fuse(FUSE_LOOKUP, 1, "lnk", 4);
    uint64_t ln = (r >= 16 && reply_error() == 0) ? ((struct entry_out *)(rep + 16))->nodeid : 0;
    if (ln) {
        uint8_t mk3[8 + 16] = { 0 };
        *(uint32_t *)mk3 = 0755;
        strcpy((char *)mk3 + 8, "escaped3");
        report("mkdir-through-symlink", fuse(FUSE_MKDIR, ln, mk3, 8 + 9));
        report("lookup-through-symlink", fuse(FUSE_LOOKUP, ln, "etc", 4));
    }

    /* Garbage: random bytes as a request, with a plausible and an absurd length. */
    srand(1);
    for (int i = 0; i < 8; i++) {
        memset(rep, 0, PAGE);
        for (int j = 0; j < 256; j++) req[j] = rand();
        if (i % 2) ((struct in_hdr *)req)->len = 256;
        dt[0] = (struct desc){ req_pa, 256, 1, 1 };
        dt[1] = (struct desc){ rep_pa, PAGE, 2, 0 };
        report("garbage", submit(0, 1));
    }
    /* A header claiming far more than the descriptor holds. */
    struct in_hdr *h = (struct in_hdr *)req;
    fuse(FUSE_GETATTR, 1, (uint8_t[16]){ 0 }, 16);
    h->len = 0xffffffff;
    dt[0] = (struct desc){ req_pa, 56, 1, 1 };
    report("header-len", submit(0, 1));
    report("getattr-unknown-node", fuse(FUSE_GETATTR, 0xdeadbeef, (uint8_t[16]){ 0 }, 16));
    /* Still serving after malformed requests? */
    report("getattr-root-after-garbage", fuse(FUSE_GETATTR, 1, (uint8_t[16]){ 0 }, 16));

    /* Malformed rings last: a backend may stop serving the device on these. */
    /* Descriptors outside guest RAM, oversized, looping, out of range, no reply buffer. */
    dt[0] = (struct desc){ 0x7ffffffff000ULL, PAGE, 1, 1 };
    dt[1] = (struct desc){ rep_pa, PAGE, 2, 0 };
    report("outside-ram", submit(0, 1));
    dt[0] = (struct desc){ req_pa, 0xffffffff, 1, 1 };
    report("huge-len", submit(0, 1));
    dt[0] = (struct desc){ req_pa, 64, 1, 0 };
    report("loop", submit(0, 1));
    dt[0] = (struct desc){ req_pa, 64, 1, 200 };
    report("next-out-of-range", submit(0, 1));
    report("head-out-of-range", submit(300, 1));
    fuse(FUSE_GETATTR, 1, (uint8_t[16]){ 0 }, 16);
    dt[0].flags = 0; /* no writable buffer for the reply */
    report("no-reply-buffer", submit(0, 1));
    dt[0] = (struct desc){ rep_pa, PAGE, 2, 0 }; /* write-only request */
    report("write-only-request", submit(0, 1));

    /* A runaway avail index: far more entries than the ring holds. */
    for (int i = 0; i < QSZ; i++) av->ring[i] = 0x7777;
    report("avail-runaway", submit(0x7777, 1000));

    /* MMIO floods: config-space and register writes out of range. */
    for (int i = 0; i < 4096; i += 4) wr(0x100 + (i % 0xf00), 0xffffffff);
    for (int i = 0; i < 10000; i++) wr(R_QUEUE_NOTIFY, i % 4);
    printf("ATTACKS-DONE\n");
    fflush(stdout);
    return 0;
}
