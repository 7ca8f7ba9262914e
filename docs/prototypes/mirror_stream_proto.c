/* Prototype: stream /proc/PID/pagemap into a 4-level table mirror with node-of-frame from the
 * node memory-block ranges; votes per PTE table; 1 byte of node per page.  Standalone (no
 * project code): measures the cost floor of the design against one pread of the region. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static double cpu(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

#define MAXNODES 64
#define NODE_UNKNOWN 0xFF
static uint8_t *blk_node; static uint64_t nblk; static int blk_shift; /* pfn >> blk_shift = block */

static int load_blocks(void)
{
	FILE *f = fopen("/sys/devices/system/memory/block_size_bytes", "r");
	unsigned long long bs; if (!f || fscanf(f, "%llx", &bs) != 1) return -1; fclose(f);
	blk_shift = __builtin_ctzll(bs) - 12;
	uint64_t cap = 1 << 16; blk_node = malloc(cap); memset(blk_node, NODE_UNKNOWN, cap); nblk = 0;
	DIR *d = opendir("/sys/devices/system/node"); struct dirent *e;
	while ((e = readdir(d))) {
		int node; if (sscanf(e->d_name, "node%d", &node) != 1) continue;
		char p[256]; snprintf(p, sizeof p, "/sys/devices/system/node/%s", e->d_name);
		DIR *nd = opendir(p); struct dirent *m;
		while ((m = readdir(nd))) {
			unsigned long b; if (sscanf(m->d_name, "memory%lu", &b) != 1) continue;
			if (b >= cap) { uint64_t nc = (b + 1) * 2; blk_node = realloc(blk_node, nc); memset(blk_node + cap, NODE_UNKNOWN, nc - cap); cap = nc; }
			blk_node[b] = (blk_node[b] == NODE_UNKNOWN) ? node : 0xFE; /* 0xFE: block on 2 nodes -> ask move_pages */
			if (b + 1 > nblk) nblk = b + 1;
		}
		closedir(nd);
	}
	closedir(d);
	return 0;
}
static inline uint8_t node_of_pfn(uint64_t pfn) { uint64_t b = pfn >> blk_shift; return b < nblk ? blk_node[b] : NODE_UNKNOWN; }

/* ---- the mirror: 4-level x86-64 tables in an mmap'd arena of 4 KiB frames ---------------- */
static uint64_t *arena; static uint32_t nframes, cap_frames; static uint8_t *frame_node;
static uint32_t new_frame(int node) { uint32_t f = nframes++; frame_node[f] = node; return f; } /* frames come zeroed */
#define ENT(f) (arena + (uint64_t)(f) * 512)
static uint32_t root;
static uint32_t table_for(uint64_t va, int node) /* PTE table for va, creating the path */
{
	uint32_t t = root;
	for (int lvl = 3; lvl > 0; lvl--) {
		int idx = (va >> (12 + 9 * lvl)) & 511;
		uint64_t e = ENT(t)[idx];
		if (!e) { uint32_t n = new_frame(node); ENT(t)[idx] = ((uint64_t)n << 12) | 0x67; t = n; }
		else t = e >> 12;
	}
	return t;
}

struct span { uint64_t key; uint32_t votes[4]; };  /* per PTE table: anon votes per node (<=4 nodes here) */

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]); uint64_t reg = strtoull(argv[2], 0, 0), regpages = strtoull(argv[3], 0, 0);
	int rounds = argc > 4 ? atoi(argv[4]) : 5; size_t chunk = argc > 5 ? strtoull(argv[5], 0, 0) : 65536; /* entries */
	char path[64]; snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
	load_blocks();
	cap_frames = 1 << 20; arena = mmap(0, (size_t)cap_frames * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	frame_node = calloc(cap_frames, 1);
	uint64_t *buf = malloc(chunk * 8);
	for (int r = 0; r <= rounds; r++) {
		/* baseline: one pread of the region into a fresh buffer (as the bench does, Python's os.pread) */
		int fd = open(path, O_RDONLY);
		double cb0 = cpu(); double t0 = now(); char *b = malloc(regpages * 8); pread(fd, b, regpages * 8, reg / 4096 * 8); double tb = now() - t0, cb = cpu() - cb0; free(b);
		/* the pipeline */
		double c0 = cpu(); t0 = now();
		char mp[64]; snprintf(mp, sizeof mp, "/proc/%d/maps", pid); FILE *mf = fopen(mp, "r");
		char line[512]; uint64_t vs[4096], ve[4096]; int anon[4096], nv = 0;
		while (fgets(line, sizeof line, mf)) {
			unsigned long long s, e; char perms[8]; unsigned long long off; char dev[16]; unsigned long ino; char p[400] = "";
			sscanf(line, "%llx-%llx %7s %llx %15s %lu %399[^\n]", &s, &e, perms, &off, dev, &ino, p);
			char *q = p; while (*q == ' ') q++;
			if (!strcmp(q, "[vsyscall]")) continue;
			vs[nv] = s; ve[nv] = e; anon[nv] = !*q || !strcmp(q, "[heap]") || !strcmp(q, "[stack]") || !strncmp(q, "[anon:", 6); nv++;
		}
		fclose(mf);
		double t_maps = now() - t0;
		/* reset the mirror */
		memset(arena, 0, (size_t)nframes * 4096); nframes = 0; root = new_frame(0);
		uint8_t *pnode = malloc(1 << 24); uint64_t npages = 0; /* 1 byte per resident page */
		uint64_t node_pages[256] = {0}; uint64_t unknown = 0, tables = 0;
		struct span cur = { .key = ~0ull }; uint32_t cur_table = 0;
		for (int v = 0; v < nv; v++) {
			uint64_t vpn = vs[v] >> 12, end = ve[v] >> 12;
			while (vpn < end) {
				size_t n = end - vpn < chunk ? end - vpn : chunk;
				ssize_t got = pread(fd, buf, n * 8, vpn * 8);
				if (got <= 0) break;
				n = got / 8;
				for (size_t i = 0; i < n; i++) {
					uint64_t e = buf[i];
					if (!(e >> 63)) continue;
					uint64_t va = (vpn + i) << 12, pfn = e & ((1ull << 55) - 1);
					uint8_t nd = node_of_pfn(pfn);
					pnode[npages++] = nd;
					if (nd >= MAXNODES) { unknown++; nd = 0; } else node_pages[nd]++;
					uint64_t key = va >> 21;
					if (key != cur.key) { /* a new PTE table: (the node decision would use cur.votes) */
						cur.key = key; memset(cur.votes, 0, sizeof cur.votes);
						uint32_t before = nframes; cur_table = table_for(va, 0); tables += nframes != before;
					}
					if (anon[v]) cur.votes[nd & 3]++;
					ENT(cur_table)[(va >> 12) & 511] = (va & ((1ull << 52) - 1)) | 0x67; /* identity leaf, plain store */
				}
				vpn += n;
			}
		}
		double tt = now() - t0, tc = cpu() - c0;
		/* the pagemap reads alone, same chunks */
		double cr0 = cpu(), tr0 = now();
		for (int v = 0; v < nv; v++) for (uint64_t vpn = vs[v] >> 12, end = ve[v] >> 12; vpn < end;) {
			size_t n = end - vpn < chunk ? end - vpn : chunk; ssize_t got = pread(fd, buf, n * 8, vpn * 8); if (got <= 0) break; vpn += got / 8; }
		double tr = now() - tr0, cr = cpu() - cr0;
		close(fd);
		if (r) printf("pages %lu tables %u unknown %lu | base pread wall %.4f cpu %.4f | pipeline wall %.4f cpu %.4f | reads-only wall %.4f cpu %.4f | ratio wall %.2fx cpu %.2fx (reads-only cpu %.2fx) | %.1f ns/page cpu\n",
			      npages, nframes, unknown, tb, cb, tt, tc, tr, cr, tt / tb, tc / cb, cr / cb, tc / npages * 1e9);
		if (r == rounds) { /* check against move_pages */
			uint64_t *addrs = malloc(npages * 8); int *st = malloc(npages * 4); uint64_t k = 0;
			fd = open(path, O_RDONLY);
			for (int v = 0; v < nv; v++) for (uint64_t vpn = vs[v] >> 12; vpn < ve[v] >> 12; vpn++) {
				uint64_t e; if (pread(fd, &e, 8, vpn * 8) == 8 && (e >> 63)) { if (k < npages) addrs[k] = vpn << 12; k++; } }
			close(fd);
			double m0 = now();
			long rc = syscall(SYS_move_pages, pid, npages, (void **)addrs, NULL, st, 0);
			double mt = now() - m0;
			uint64_t agree = 0, dis = 0, neg = 0;
			for (uint64_t i = 0; i < npages && i < k; i++) { if (st[i] < 0) { neg++; if (neg < 4) fprintf(stderr, "move_pages %d at %#lx, pfn node %u\n", st[i], addrs[i], pnode[i]); } else if (st[i] == pnode[i]) agree++; else dis++; }
			printf("check vs move_pages (rc %ld, %.4fs = %.2fx pread): agree %lu disagree %lu negative-status %lu (reread %lu pages)\n", rc, mt, mt / tb, agree, dis, neg, k);
		}
		free(pnode);
	}
	return 0;
}
