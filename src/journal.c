#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "journal.h"
#include "log.h"
#include "thread.h"

#define SEG_MAGIC "IOTPSEG1"
#define CUR_MAGIC "IOTPCUR1"
#define CURSOR_FILE_BYTES 4096
#define ALIGN8(x) (((x) + 7u) & ~(size_t)7u)
#define MIN_SEGMENT (64u * 1024u)
#define MAX_SEGMENT (64u * 1024u * 1024u)
#define MAINT_TICK_MS 10

struct seg_header {
	char magic[8];
	uint32_t version;
	uint32_t reserved;
	uint64_t seg_bytes;
	uint64_t first_lsn;         /* 0 while the segment is a spare */
};

struct rec_header {
	uint32_t len;
	uint32_t crc;               /* CRC32C of len, lsn, kind, reserved and the body */
	uint64_t lsn;
	uint32_t kind;
	uint32_t reserved;
};
_Static_assert(sizeof(struct rec_header) == JOURNAL_REC_HEADER, "record header layout");
_Static_assert(sizeof(struct seg_header) <= JOURNAL_SEG_HEADER, "segment header layout");

struct cursor_file {
	char magic[8];
	_Atomic uint64_t next_lsn;
};

struct seg {
	uint64_t seq;
	uint64_t first_lsn;
	uint8_t *map;
	size_t size;
	_Atomic size_t used;        /* published end of records; release-stored by the writer */
	_Atomic uint64_t last_lsn;  /* set when sealed (the tail is never collected) */
	_Atomic(struct seg *) next;
	_Atomic bool sealed;        /* the writer has moved on; set after next */
	bool doomed;                /* given up by drop_oldest (under lock) */
	size_t synced;              /* maintenance thread */
	char path[];
};

struct journal_reader {
	struct journal *j;
	char name[32];
	struct cursor_file *cur;    /* mapped: a store is persisted in the page cache */
	struct seg *seg;
	size_t off;
	size_t seen_used;           /* the segment's end as last loaded: reload only when reached */
	uint64_t pos_lsn;           /* next LSN to read */
	_Atomic uint64_t read_lsn;  /* pos_lsn for other threads (journal_unread) */
	_Atomic uint64_t seg_seq;   /* segment being read, so the maintenance thread keeps it */
	_Atomic uint64_t floor;     /* drop_oldest: records below are gone */
	_Atomic uint64_t dropped;
	unsigned idle;
};

struct journal {
	char *dir;
	struct journal_opts opts;
	uint64_t seg_bytes;
	pthread_mutex_t lock;       /* segs, spare, doomed; never held across a system call by the writer */
	struct seg **segs;
	size_t nsegs, segcap, ndoomed;
	struct seg *spare;
	uint64_t next_seq;
	struct seg *tail;           /* writer */
	uint64_t next_lsn;          /* writer */
	_Atomic uint64_t pub_next_lsn;
	struct journal_reader readers[JOURNAL_MAX_READERS];
	size_t nreaders;
	pthread_t thread;
	bool thread_started;
	_Atomic bool stop;
	_Atomic uint64_t appended, rejected, sync_creates;
	uint64_t recovered_torn;
};

static uint32_t rec_crc(const struct rec_header *h, const uint8_t *body)
{
	uint32_t crc = crc32_iscsi((unsigned char *)&h->len, sizeof(h->len), 0xFFFFFFFFu);
	crc = crc32_iscsi((unsigned char *)&h->lsn, 16, crc);
	return crc32_iscsi((unsigned char *)body, (int)h->len, crc);
}

static uint64_t seg_default_bytes(uint64_t max_bytes)
{
	uint64_t s = (max_bytes / 8) & ~(uint64_t)4095;
	if(s < MIN_SEGMENT) s = MIN_SEGMENT;
	if(s > MAX_SEGMENT) s = MAX_SEGMENT;
	return s;
}

static void seg_unmap(struct seg *s)
{
	if(s->map) munmap(s->map, s->size);
	free(s);
}

static struct seg *seg_map_file(const char *path, uint64_t seq, size_t size, bool readonly, int fd)
{
	struct seg *s = calloc(1, sizeof(*s) + strlen(path) + 1);
	if(!s) return NULL;
	strcpy(s->path, path);
	s->seq = seq;
	s->size = size;
	s->map = mmap(NULL, size, readonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if(s->map == MAP_FAILED){
		free(s);
		return NULL;
	}
	return s;
}

/* owner or maintenance thread: a new spare segment, preallocated so a later store into the
 * mapping can never hit an unallocated block (SIGBUS on a full disk). */
static struct seg *seg_create(struct journal *j, uint64_t seq, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%016" PRIx64 ".seg", j->dir, seq);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if(fd < 0){
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		return NULL;
	}
	int rc = posix_fallocate(fd, 0, (off_t)j->seg_bytes);
	if(rc){
		snprintf(err, errlen, "cannot allocate %" PRIu64 " bytes for %s: %s", j->seg_bytes, path, strerror(rc));
		close(fd);
		unlink(path);
		return NULL;
	}
	/* fallocate leaves unwritten extents: the first store into each page would then convert its
	 * extent inside a page fault, on the writer's thread. Writing the zeros here, in the background,
	 * turns them into ordinary allocated blocks already in the page cache. */
	static const char zeros[1 << 16];
	for(off_t off = 0; off < (off_t)j->seg_bytes; off += (off_t)sizeof(zeros)){
		ssize_t w = pwrite(fd, zeros, sizeof(zeros), off);
		if(w != (ssize_t)sizeof(zeros)){
			snprintf(err, errlen, "cannot write %s: %s", path, w < 0 ? strerror(errno) : "short write");
			close(fd);
			unlink(path);
			return NULL;
		}
	}
	struct seg *s = seg_map_file(path, seq, j->seg_bytes, false, fd);
	close(fd);
	if(!s){
		snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
		unlink(path);
		return NULL;
	}
	/* and a store per page maps each one writable now, so the writer's memcpy takes no fault */
	long page = sysconf(_SC_PAGESIZE);
	for(size_t off = 0; off < s->size; off += (size_t)page) ((volatile uint8_t *)s->map)[off] = 0;
	struct seg_header h = {.version = 1, .seg_bytes = j->seg_bytes};
	memcpy(h.magic, SEG_MAGIC, 8);
	memcpy(s->map, &h, sizeof(h));
	atomic_store(&s->used, JOURNAL_SEG_HEADER);
	return s;
}

static bool segs_push(struct journal *j, struct seg *s)
{
	if(j->nsegs == j->segcap){
		size_t cap = j->segcap ? j->segcap * 2 : 16;
		struct seg **n = realloc(j->segs, cap * sizeof(*n));
		if(!n) return false;
		j->segs = n;
		j->segcap = cap;
	}
	j->segs[j->nsegs++] = s;
	return true;
}

/* Walks a segment's intact records from its start; stops at the clean end, a torn write, a bad
 * CRC or an LSN out of sequence. Returns the end offset; *next gets the LSN after the last good one. */
static size_t seg_scan(const struct seg *s, uint64_t *next, bool *torn)
{
	size_t off = JOURNAL_SEG_HEADER;
	uint64_t expect = s->first_lsn;
	*torn = false;
	while(off + JOURNAL_REC_HEADER <= s->size){
		struct rec_header h;
		memcpy(&h, s->map + off, sizeof(h));
		if(h.len == 0 && h.lsn == 0 && h.crc == 0) break;
		if(h.lsn < s->first_lsn) break;     /* left over from before the segment was recycled */
		if(h.len > s->size - off - JOURNAL_REC_HEADER || h.lsn != expect
				|| rec_crc(&h, s->map + off + JOURNAL_REC_HEADER) != h.crc){
			*torn = true;
			break;
		}
		off += ALIGN8(JOURNAL_REC_HEADER + h.len);
		expect++;
	}
	*next = expect;
	return off;
}

/* Order by first LSN, not by file number: a spare may be numbered before a segment the writer had
 * to create itself and filled first. Unused spares (first LSN 0) go last. */
static int seg_order(const void *a, const void *b)
{
	const struct seg *x = *(struct seg *const *)a, *y = *(struct seg *const *)b;
	uint64_t fx = x->first_lsn ? x->first_lsn : UINT64_MAX, fy = y->first_lsn ? y->first_lsn : UINT64_MAX;
	return fx < fy ? -1 : fx > fy;
}

static bool open_segments(struct journal *j, char *err, size_t errlen)
{
	DIR *d = opendir(j->dir);
	if(!d){
		snprintf(err, errlen, "cannot open %s: %s", j->dir, strerror(errno));
		return false;
	}
	struct dirent *de;
	while((de = readdir(d))){
		uint64_t seq;
		char tail[8];
		if(sscanf(de->d_name, "%16" SCNx64 "%7s", &seq, tail) != 2 || strcmp(tail, ".seg")) continue;
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", j->dir, de->d_name);
		int fd = open(path, j->opts.readonly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CLOEXEC);
		struct stat st;
		if(fd < 0 || fstat(fd, &st) || (size_t)st.st_size < JOURNAL_SEG_HEADER + JOURNAL_REC_HEADER){
			/* A spare whose creation was interrupted: nothing was ever written to it. */
			if(fd >= 0 && !j->opts.readonly){
				unlink(path);
			}else{
				ip_log(IP_LOG_WARNING, "iotpipe: journal: ignoring unreadable segment %s", path);
			}
			if(fd >= 0) close(fd);
			continue;
		}
		struct seg *s = seg_map_file(path, seq, (size_t)st.st_size, j->opts.readonly, fd);
		close(fd);
		if(!s){
			closedir(d);
			snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
			return false;
		}
		struct seg_header h;
		memcpy(&h, s->map, sizeof(h));
		static const char zero[8];
		if(!memcmp(h.magic, zero, 8) && !j->opts.readonly){
			unlink(path);   /* allocated, killed before its header was written */
			seg_unmap(s);
			continue;
		}
		if(memcmp(h.magic, SEG_MAGIC, 8) || h.version != 1){
			ip_log(IP_LOG_WARNING, "iotpipe: journal: ignoring %s: not a journal segment", path);
			seg_unmap(s);
			continue;
		}
		s->first_lsn = h.first_lsn;
		if(!segs_push(j, s)){
			seg_unmap(s);
			closedir(d);
			snprintf(err, errlen, "out of memory");
			return false;
		}
		if(seq >= j->next_seq) j->next_seq = seq + 1;
	}
	closedir(d);
	if(j->nsegs) qsort(j->segs, j->nsegs, sizeof(*j->segs), seg_order);

	/* Unused segments (first_lsn 0) were spares: keep the newest as the spare, drop the rest. */
	size_t keep = 0;
	for(size_t i = 0; i < j->nsegs; i++){
		struct seg *s = j->segs[i];
		if(s->first_lsn == 0){
			if(!j->opts.readonly && !j->spare && s->size == j->seg_bytes){
				atomic_store(&s->used, JOURNAL_SEG_HEADER);   /* records start after the header */
				j->spare = s;
			}else{
				if(!j->opts.readonly) unlink(s->path);
				seg_unmap(s);
			}
			continue;
		}
		j->segs[keep++] = s;
	}
	j->nsegs = keep;

	uint64_t next = 1;
	for(size_t i = 0; i < j->nsegs; i++){
		struct seg *s = j->segs[i];
		bool torn;
		uint64_t seg_next;
		if(s->first_lsn < next){
			ip_log(IP_LOG_WARNING, "iotpipe: journal: %s overlaps its predecessor", s->path);
		}
		size_t end = seg_scan(s, &seg_next, &torn);
		atomic_store(&s->used, end);
		atomic_store(&s->last_lsn, seg_next > s->first_lsn ? seg_next - 1 : 0);
		if(i > 0) atomic_store(&j->segs[i - 1]->next, s);
		if(i + 1 < j->nsegs){
			atomic_store(&s->sealed, true);
			if(torn) ip_log(IP_LOG_WARNING, "iotpipe: journal: %s is corrupt after LSN %" PRIu64
					"; later records of that segment are lost", s->path, seg_next - 1);
		}else if(torn){
			j->recovered_torn = 1;
			ip_log(IP_LOG_NOTICE, "iotpipe: journal: %s ends in a torn or corrupt record after LSN %"
					PRIu64 "; resuming there", s->path, seg_next - 1);
			if(!j->opts.readonly){
				/* Clear the torn bytes so a later scan cannot take them for records. */
				struct rec_header h;
				memcpy(&h, s->map + end, sizeof(h));
				size_t n = JOURNAL_REC_HEADER + (h.len <= s->size - end - JOURNAL_REC_HEADER ? h.len : 0);
				memset(s->map + end, 0, ALIGN8(n) <= s->size - end ? ALIGN8(n) : s->size - end);
			}
		}
		next = seg_next;
	}
	j->next_lsn = next;
	atomic_store(&j->pub_next_lsn, next);
	j->tail = j->nsegs ? j->segs[j->nsegs - 1] : NULL;
	return true;
}

static struct cursor_file *cursor_map(const char *dir, const char *name, bool readonly, uint64_t initial)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/cursor.%s", dir, name);
	int fd = open(path, readonly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if(fd < 0) return NULL;
	struct stat st;
	bool fresh = !fstat(fd, &st) && st.st_size < CURSOR_FILE_BYTES;
	if(fresh && (readonly || posix_fallocate(fd, 0, CURSOR_FILE_BYTES))){
		close(fd);
		return NULL;
	}
	void *m = mmap(NULL, CURSOR_FILE_BYTES, readonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if(m == MAP_FAILED) return NULL;
	struct cursor_file *c = m;
	if(memcmp(c->magic, CUR_MAGIC, 8)){
		if(readonly){
			munmap(m, CURSOR_FILE_BYTES);
			return NULL;
		}
		atomic_store(&c->next_lsn, initial);
		memcpy(c->magic, CUR_MAGIC, 8);
	}
	return c;
}

/* any thread holding j->lock: the segment holding lsn, or the first one after it */
static struct seg *seg_find_locked(struct journal *j, uint64_t lsn)
{
	struct seg *found = NULL;
	for(size_t i = 0; i < j->nsegs; i++){
		if(j->segs[i]->doomed) continue;
		if(!found || j->segs[i]->first_lsn <= lsn) found = j->segs[i];
		if(j->segs[i]->first_lsn > lsn) break;
	}
	return found;
}

/* reader thread: put the read position at target (or the oldest record after it) */
static void reader_seek(struct journal_reader *r, uint64_t target)
{
	struct journal *j = r->j;
	pthread_mutex_lock(&j->lock);
	struct seg *s = seg_find_locked(j, target);
	if(s) atomic_store(&r->seg_seq, s->seq);
	pthread_mutex_unlock(&j->lock);

	r->seg = s;
	r->off = JOURNAL_SEG_HEADER;
	r->seen_used = 0;
	if(!s){
		r->pos_lsn = target;
		atomic_store_explicit(&r->read_lsn, target, memory_order_relaxed);
		return;
	}
	r->pos_lsn = s->first_lsn;
	size_t used = atomic_load_explicit(&s->used, memory_order_acquire);
	while(r->pos_lsn < target && r->off < used){
		struct rec_header h;
		memcpy(&h, s->map + r->off, sizeof(h));
		r->off += ALIGN8(JOURNAL_REC_HEADER + h.len);
		r->pos_lsn = h.lsn + 1;
	}
	atomic_store_explicit(&r->read_lsn, r->pos_lsn, memory_order_relaxed);
}

static void *maintenance_main(void *arg);
static void open_cursors_readonly(struct journal *j);

struct journal *journal_open(const struct journal_opts *opts, char *err, size_t errlen)
{
	struct journal *j = calloc(1, sizeof(*j));
	if(!j){
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	j->opts = *opts;
	j->dir = strdup(opts->dir);
	j->next_seq = 1;
	j->seg_bytes = opts->segment_bytes ? opts->segment_bytes : seg_default_bytes(opts->max_bytes);
	pthread_mutex_init(&j->lock, NULL);
	if(!j->dir) goto failed;
	if(!opts->readonly && opts->max_bytes < 4 * j->seg_bytes){
		snprintf(err, errlen, "bound %" PRIu64 " bytes is under four segments of %" PRIu64,
				opts->max_bytes, j->seg_bytes);
		goto failed;
	}
	if(!opts->readonly && mkdir(j->dir, 0750) && errno != EEXIST){
		snprintf(err, errlen, "cannot create %s: %s", j->dir, strerror(errno));
		goto failed;
	}
	if(!open_segments(j, err, errlen)) goto failed;

	uint64_t oldest = j->nsegs ? j->segs[0]->first_lsn : j->next_lsn;
	for(size_t i = 0; !opts->readonly && i < JOURNAL_MAX_READERS && opts->readers[i]; i++){
		struct journal_reader *r = &j->readers[j->nreaders];
		r->j = j;
		snprintf(r->name, sizeof(r->name), "%s", opts->readers[i]);
		r->cur = cursor_map(j->dir, r->name, false, oldest);
		if(!r->cur){
			snprintf(err, errlen, "cannot map the cursor of reader %s in %s: %s", r->name, j->dir, strerror(errno));
			goto failed;
		}
		j->nreaders++;
		uint64_t c = atomic_load(&r->cur->next_lsn);
		if(c > j->next_lsn){
			ip_log(IP_LOG_WARNING, "iotpipe: journal %s: cursor of %s (%" PRIu64 ") is past the end (%"
					PRIu64 "); the journal was cut or replaced", j->dir, r->name, c, j->next_lsn);
			atomic_store(&r->cur->next_lsn, j->next_lsn);
		}else if(c < oldest){
			ip_log(IP_LOG_WARNING, "iotpipe: journal %s: %s had not read %" PRIu64 " records that are gone",
					j->dir, r->name, oldest - c);
			atomic_store(&r->dropped, oldest - c);
			atomic_store(&r->cur->next_lsn, oldest);
		}
		reader_seek(r, atomic_load(&r->cur->next_lsn));
	}
	if(opts->readonly){
		open_cursors_readonly(j);
		return j;
	}

	if(!j->spare){
		j->spare = seg_create(j, j->next_seq++, err, errlen);
		if(!j->spare) goto failed;
	}
	if(thread_start(&j->thread, maintenance_main, j)){
		snprintf(err, errlen, "cannot start the journal thread");
		goto failed;
	}
	j->thread_started = true;
	return j;

failed:
	journal_close(j);
	return NULL;
}

/* writer thread: move to a new segment. Only the lock is taken; the segment file itself was made
 * ahead by the maintenance thread, except when the writer outran it. */
static enum journal_rc roll(struct journal *j)
{
	pthread_mutex_lock(&j->lock);
	if((j->nsegs - j->ndoomed + 1) * j->seg_bytes > j->opts.max_bytes){
		if(j->opts.full == JOURNAL_FULL_REJECT){
			pthread_mutex_unlock(&j->lock);
			return JOURNAL_FULL;
		}
		/* drop_oldest: give up the oldest live segment; readers skip it on their next read */
		struct seg *victim = NULL, *after = NULL;
		for(size_t i = 0; i + 1 < j->nsegs; i++){
			if(!j->segs[i]->doomed){
				victim = j->segs[i];
				after = j->segs[i + 1];
				break;
			}
		}
		if(victim){
			victim->doomed = true;
			j->ndoomed++;
			for(size_t i = 0; i < j->nreaders; i++){
				struct journal_reader *r = &j->readers[i];
				uint64_t c = atomic_load(&r->cur->next_lsn);
				uint64_t f = atomic_load(&r->floor);
				uint64_t from = c > f ? c : f;
				if(from < after->first_lsn){
					atomic_fetch_add(&r->dropped, after->first_lsn - from);
					atomic_store(&r->floor, after->first_lsn);
				}
			}
		}
	}
	struct seg *s = j->spare;
	j->spare = NULL;
	uint64_t seq = s ? 0 : j->next_seq++;
	pthread_mutex_unlock(&j->lock);

	if(!s){
		char err[512];
		atomic_fetch_add(&j->sync_creates, 1);
		s = seg_create(j, seq, err, sizeof(err));
		if(!s){
			ip_log(IP_LOG_ERR, "iotpipe: journal %s: %s", j->dir, err);
			return JOURNAL_IOERR;
		}
	}
	s->first_lsn = j->next_lsn;
	((struct seg_header *)s->map)->first_lsn = s->first_lsn;

	pthread_mutex_lock(&j->lock);
	bool ok = segs_push(j, s);
	pthread_mutex_unlock(&j->lock);
	if(!ok){
		seg_unmap(s);
		return JOURNAL_IOERR;
	}
	struct seg *old = j->tail;
	j->tail = s;
	if(old){
		atomic_store_explicit(&old->last_lsn, s->first_lsn - 1, memory_order_relaxed);
		atomic_store_explicit(&old->next, s, memory_order_release);
		atomic_store_explicit(&old->sealed, true, memory_order_release);
	}
	return JOURNAL_OK;
}

size_t journal_max_record(const struct journal *j)
{
	return j->seg_bytes - JOURNAL_SEG_HEADER - JOURNAL_REC_HEADER;
}

enum journal_rc journal_append(struct journal *j, uint32_t kind, const struct iovec *iov, int iovcnt,
		uint64_t *lsn)
{
	size_t len = 0;
	for(int i = 0; i < iovcnt; i++) len += iov[i].iov_len;
	if(len > journal_max_record(j)) return JOURNAL_TOO_BIG;
	size_t need = ALIGN8(JOURNAL_REC_HEADER + len);

	struct seg *s = j->tail;
	size_t off = s ? atomic_load_explicit(&s->used, memory_order_relaxed) : 0;
	if(!s || off + need > s->size){
		enum journal_rc rc = roll(j);
		if(rc != JOURNAL_OK){
			if(rc == JOURNAL_FULL) atomic_fetch_add_explicit(&j->rejected, 1, memory_order_relaxed);
			return rc;
		}
		s = j->tail;
		off = atomic_load_explicit(&s->used, memory_order_relaxed);
	}

	uint8_t *p = s->map + off;
	struct rec_header h = {.len = (uint32_t)len, .lsn = j->next_lsn, .kind = kind};
	uint8_t *b = p + JOURNAL_REC_HEADER;
	for(int i = 0; i < iovcnt; i++){
		if(!iov[i].iov_len) continue;   /* an empty piece may come with a NULL base */
		memcpy(b, iov[i].iov_base, iov[i].iov_len);
		b += iov[i].iov_len;
	}
	h.crc = rec_crc(&h, p + JOURNAL_REC_HEADER);
	memcpy(p, &h, sizeof(h));

	if(lsn) *lsn = j->next_lsn;
	j->next_lsn++;
	atomic_store_explicit(&s->used, off + need, memory_order_release);
	/* single writer: plain stores, no locked read-modify-write on the hot path */
	atomic_store_explicit(&j->pub_next_lsn, j->next_lsn, memory_order_release);
	atomic_store_explicit(&j->appended, atomic_load_explicit(&j->appended, memory_order_relaxed) + 1,
			memory_order_relaxed);
	return JOURNAL_OK;
}

struct journal_reader *journal_reader(struct journal *j, const char *name)
{
	for(size_t i = 0; i < j->nreaders; i++){
		if(!strcmp(j->readers[i].name, name)) return &j->readers[i];
	}
	return NULL;
}

bool journal_next(struct journal_reader *r, struct journal_rec *rec)
{
	uint64_t floor = atomic_load_explicit(&r->floor, memory_order_acquire);
	if(floor > r->pos_lsn || !r->seg) reader_seek(r, floor > r->pos_lsn ? floor : r->pos_lsn);
	struct seg *s = r->seg;
	if(!s) return false;
	for(;;){
		/* The writer stores `used` on every append; loading it only when the cached end is reached
		 * keeps its cache line from bouncing between the two cores record by record. */
		if(r->off >= r->seen_used) r->seen_used = atomic_load_explicit(&s->used, memory_order_acquire);
		if(r->off < r->seen_used){
			struct rec_header h;
			memcpy(&h, s->map + r->off, sizeof(h));
			rec->lsn = h.lsn;
			rec->kind = h.kind;
			rec->len = h.len;
			rec->body = s->map + r->off + JOURNAL_REC_HEADER;
			r->off += ALIGN8(JOURNAL_REC_HEADER + h.len);
			r->pos_lsn = h.lsn + 1;
			atomic_store_explicit(&r->read_lsn, r->pos_lsn, memory_order_relaxed);
			r->idle = 0;
			return true;
		}
		if(!atomic_load_explicit(&s->sealed, memory_order_acquire)) return false;
		r->seen_used = atomic_load_explicit(&s->used, memory_order_acquire);
		if(r->off < r->seen_used) continue;
		struct seg *n = atomic_load_explicit(&s->next, memory_order_acquire);
		if(!n) return false;
		r->seg = s = n;
		r->off = JOURNAL_SEG_HEADER;
		r->seen_used = 0;
		atomic_store(&r->seg_seq, n->seq);
	}
}

void journal_commit(struct journal_reader *r, uint64_t next_lsn)
{
	uint64_t floor = atomic_load_explicit(&r->floor, memory_order_relaxed);
	if(next_lsn < floor) next_lsn = floor;
	if(next_lsn > atomic_load_explicit(&r->cur->next_lsn, memory_order_relaxed)){
		atomic_store_explicit(&r->cur->next_lsn, next_lsn, memory_order_release);
	}
}

void journal_rewind(struct journal_reader *r)
{
	reader_seek(r, atomic_load(&r->cur->next_lsn));
}

void journal_wait(struct journal_reader *r, int timeout_ms)
{
	/* Polling keeps the writer free of system calls: the broker's main thread never wakes anyone. */
	long us = r->idle < 200 ? 1000 : 5000;
	if(us > (long)timeout_ms * 1000) us = (long)timeout_ms * 1000;
	r->idle++;
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

uint64_t journal_reader_committed(const struct journal_reader *r)
{
	return atomic_load(&r->cur->next_lsn);
}

uint64_t journal_reader_dropped(const struct journal_reader *r)
{
	return atomic_load(&r->dropped);
}

uint64_t journal_pending(const struct journal_reader *r)
{
	uint64_t end = atomic_load(&r->j->pub_next_lsn);
	uint64_t c = atomic_load(&r->cur->next_lsn);
	return end > c ? end - c : 0;
}

uint64_t journal_unread(const struct journal_reader *r)
{
	uint64_t end = atomic_load(&r->j->pub_next_lsn);
	uint64_t c = atomic_load(&r->cur->next_lsn);
	uint64_t read = atomic_load_explicit(&r->read_lsn, memory_order_relaxed);
	if(read > c) c = read;
	return end > c ? end - c : 0;
}

const char *journal_reader_name(const struct journal_reader *r)
{
	return r->name;
}

struct journal *journal_reader_journal(const struct journal_reader *r)
{
	return r->j;
}

void journal_get_stats(struct journal *j, struct journal_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->next_lsn = atomic_load(&j->pub_next_lsn);
	st->max_bytes = j->opts.max_bytes;
	pthread_mutex_lock(&j->lock);
	st->segments = j->nsegs + (j->spare ? 1 : 0);
	for(size_t i = 0; i < j->nsegs; i++) st->bytes += j->segs[i]->size;
	if(j->spare) st->bytes += j->spare->size;
	st->first_lsn = j->nsegs ? j->segs[0]->first_lsn : st->next_lsn;
	pthread_mutex_unlock(&j->lock);
	st->appended = atomic_load(&j->appended);
	st->rejected = atomic_load(&j->rejected);
	st->sync_segment_creates = atomic_load(&j->sync_creates);
	st->recovered_torn = j->recovered_torn;
}

/* maintenance thread: flush what the writer added since the last pass */
static void sync_segments(struct journal *j)
{
	long page = sysconf(_SC_PAGESIZE);
	pthread_mutex_lock(&j->lock);
	size_t n = j->nsegs;
	struct seg *todo[8];
	size_t k = 0;
	for(size_t i = n > 8 ? n - 8 : 0; i < n; i++) todo[k++] = j->segs[i];
	pthread_mutex_unlock(&j->lock);
	/* Segments are only unmapped by this thread, so the pointers stay valid here. */
	for(size_t i = 0; i < k; i++){
		struct seg *s = todo[i];
		size_t used = atomic_load(&s->used);
		if(used <= s->synced) continue;
		size_t from = s->synced & ~(size_t)(page - 1);
		msync(s->map + from, used - from, MS_SYNC);
		s->synced = used;
	}
	for(size_t i = 0; i < j->nreaders; i++) msync(j->readers[i].cur, CURSOR_FILE_BYTES, MS_SYNC);
}

/* maintenance thread: take out the segments that no reader needs any more */
/* maintenance thread: a segment every reader has passed becomes the next spare when there is
 * none (its blocks are allocated and written already, so recycling costs no new I/O), otherwise it
 * is deleted. Stale records left in it can never be read as new ones: their LSNs are older than
 * any LSN the journal will write. */
static bool recycle(struct journal *j, struct seg *s)
{
	if(s->size != j->seg_bytes) return false;
	pthread_mutex_lock(&j->lock);
	bool want = !j->spare;
	uint64_t seq = want ? j->next_seq++ : 0;
	pthread_mutex_unlock(&j->lock);
	if(!want) return false;
	char path[4096];
	snprintf(path, sizeof(path), "%s/%016" PRIx64 ".seg", j->dir, seq);
	if(strlen(path) != strlen(s->path) || rename(s->path, path)) return false;
	strcpy(s->path, path);
	s->seq = seq;
	s->first_lsn = 0;
	((struct seg_header *)s->map)->first_lsn = 0;
	atomic_store(&s->used, JOURNAL_SEG_HEADER);
	atomic_store(&s->last_lsn, 0);
	atomic_store(&s->next, NULL);
	atomic_store(&s->sealed, false);
	s->doomed = false;
	s->synced = 0;
	pthread_mutex_lock(&j->lock);
	j->spare = s;
	pthread_mutex_unlock(&j->lock);
	return true;
}

static void collect_segments(struct journal *j)
{
	struct seg *dead[16];
	size_t ndead = 0;
	pthread_mutex_lock(&j->lock);
	while(j->nsegs > 1 && ndead < 16){
		struct seg *s = j->segs[0];
		if(s == j->tail) break;
		bool needed = false;
		for(size_t i = 0; i < j->nreaders && !needed; i++){
			struct journal_reader *r = &j->readers[i];
			uint64_t c = atomic_load(&r->cur->next_lsn);
			uint64_t f = atomic_load(&r->floor);
			uint64_t done = c > f ? c : f;
			if(atomic_load(&r->seg_seq) <= s->seq) needed = true;
			if(!s->doomed && atomic_load(&s->last_lsn) >= done) needed = true;
		}
		if(needed) break;
		if(s->doomed) j->ndoomed--;
		memmove(j->segs, j->segs + 1, (j->nsegs - 1) * sizeof(*j->segs));
		j->nsegs--;
		dead[ndead++] = s;
	}
	pthread_mutex_unlock(&j->lock);
	for(size_t i = 0; i < ndead; i++){
		if(recycle(j, dead[i])) continue;
		unlink(dead[i]->path);
		seg_unmap(dead[i]);
	}
}

static void *maintenance_main(void *arg)
{
	struct journal *j = arg;
	thread_background("iotpipe-journal");
	int since_sync = 0;
	while(!atomic_load(&j->stop)){
		struct timespec ts = {.tv_sec = 0, .tv_nsec = MAINT_TICK_MS * 1000000L};
		nanosleep(&ts, NULL);

		pthread_mutex_lock(&j->lock);
		bool need_spare = !j->spare;
		uint64_t seq = need_spare ? j->next_seq++ : 0;
		pthread_mutex_unlock(&j->lock);
		if(need_spare){
			char err[512];
			struct seg *s = seg_create(j, seq, err, sizeof(err));
			if(s){
				pthread_mutex_lock(&j->lock);
				j->spare = s;
				pthread_mutex_unlock(&j->lock);
			}else{
				ip_log(IP_LOG_ERR, "iotpipe: journal %s: %s", j->dir, err);
			}
		}
		collect_segments(j);
		since_sync += MAINT_TICK_MS;
		if(j->opts.sync_ms > 0 && since_sync >= j->opts.sync_ms){
			sync_segments(j);
			since_sync = 0;
		}
	}
	return NULL;
}

void journal_close(struct journal *j)
{
	if(!j) return;
	if(j->thread_started){
		atomic_store(&j->stop, true);
		pthread_join(j->thread, NULL);
		sync_segments(j);
	}
	for(size_t i = 0; i < j->nsegs; i++) seg_unmap(j->segs[i]);
	if(j->spare) seg_unmap(j->spare);
	for(size_t i = 0; i < j->nreaders; i++){
		if(j->readers[i].cur) munmap(j->readers[i].cur, CURSOR_FILE_BYTES);
	}
	free(j->segs);
	free(j->dir);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

size_t journal_cursor_count(const struct journal *j)
{
	return j->nreaders;
}

bool journal_cursor_at(const struct journal *j, size_t i, const char **name, uint64_t *next_lsn)
{
	if(i >= j->nreaders) return false;
	*name = j->readers[i].name;
	*next_lsn = atomic_load(&j->readers[i].cur->next_lsn);
	return true;
}

/* owner at open of a readonly journal: every cursor file in the directory */
static void open_cursors_readonly(struct journal *j)
{
	DIR *d = opendir(j->dir);
	if(!d) return;
	struct dirent *de;
	while((de = readdir(d)) && j->nreaders < JOURNAL_MAX_READERS){
		if(strncmp(de->d_name, "cursor.", 7)) continue;
		struct journal_reader *r = &j->readers[j->nreaders];
		snprintf(r->name, sizeof(r->name), "%s", de->d_name + 7);
		r->j = j;
		r->cur = cursor_map(j->dir, r->name, true, 0);
		if(r->cur) j->nreaders++;
	}
	closedir(d);
}

void journal_scan(struct journal *j, uint64_t from_lsn, journal_visit_cb cb, void *ctx)
{
	for(size_t i = 0; i < j->nsegs; i++){
		struct seg *s = j->segs[i];
		size_t used = atomic_load(&s->used), off = JOURNAL_SEG_HEADER;
		while(off < used){
			struct rec_header h;
			memcpy(&h, s->map + off, sizeof(h));
			if(h.lsn >= from_lsn){
				struct journal_rec rec = {.lsn = h.lsn, .kind = h.kind, .len = h.len,
					.body = s->map + off + JOURNAL_REC_HEADER};
				if(!cb(ctx, &rec)) return;
			}
			off += ALIGN8(JOURNAL_REC_HEADER + h.len);
		}
	}
}
