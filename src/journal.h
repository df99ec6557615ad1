/* The journal: an append-only log with one writer and several named readers, each with its own
 * persisted cursor (DESIGN.md section 3). Two instances run in the plugin: the ingest journal
 * (writer: the broker's main thread; reader: the processor) and the outbox (writer: the processor;
 * readers: the sinks).
 *
 * Segments are preallocated files mapped MAP_SHARED. An append is a memcpy into the mapping and a
 * release store: no system call, so the broker's main thread can afford it, and a record whose
 * append returned survives a SIGKILL of the process (it is in the page cache). A background thread
 * per journal msyncs every sync_ms, prepares the next segment before the writer needs it, and
 * deletes segments every reader has passed. */
#ifndef IOTPIPE_JOURNAL_H
#define IOTPIPE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define JOURNAL_MAX_READERS 8
#define JOURNAL_SEG_HEADER 64
#define JOURNAL_REC_HEADER 24

enum journal_full_policy {
	JOURNAL_FULL_REJECT,        /* refuse new records; the caller counts and reports them */
	JOURNAL_FULL_DROP_OLDEST,   /* give up the oldest segment, counted per reader */
};

enum journal_rc {
	JOURNAL_OK = 0,
	JOURNAL_FULL,               /* reject policy and the bound is reached */
	JOURNAL_TOO_BIG,            /* record larger than a segment */
	JOURNAL_IOERR,              /* could not create a segment (disk full, permissions) */
};

struct journal_opts {
	const char *dir;            /* created if missing; one journal per directory */
	uint64_t max_bytes;         /* bound on the segments' total size */
	uint64_t segment_bytes;     /* 0: derived from max_bytes */
	enum journal_full_policy full;
	int sync_ms;                /* background msync period; 0: never (tests) */
	const char *readers[JOURNAL_MAX_READERS];   /* named readers, NULL-terminated */
	bool readonly;              /* inspect only: no writer, no thread, nothing created */
};

struct journal_rec {
	uint64_t lsn;
	uint32_t kind;
	uint32_t len;
	const uint8_t *body;        /* inside the mapping: valid until the reader commits past it */
};

struct journal_stats {
	uint64_t next_lsn;          /* LSN the next append gets */
	uint64_t first_lsn;         /* oldest LSN still on disk */
	uint64_t bytes;             /* segment bytes on disk */
	uint64_t max_bytes;         /* the bound */
	uint64_t segments;
	uint64_t appended;          /* records appended since open */
	uint64_t rejected;          /* appends refused by JOURNAL_FULL_REJECT */
	uint64_t sync_segment_creates;  /* rolls that found no spare segment ready */
	uint64_t recovered_torn;    /* 1 when the open found a torn or corrupt tail and cut it */
};

struct journal;
struct journal_reader;

/* main thread at start (or any thread that owns the journal) */
struct journal *journal_open(const struct journal_opts *opts, char *err, size_t errlen);
/* the owner, after every reader and the writer have stopped: persists cursors, syncs, unmaps */
void journal_close(struct journal *j);

/* writer thread only. Appends one record made of iov pieces; *lsn gets its LSN. */
enum journal_rc journal_append(struct journal *j, uint32_t kind, const struct iovec *iov, int iovcnt,
		uint64_t *lsn);
/* writer thread only: the largest body an append can take */
size_t journal_max_record(const struct journal *j);

/* owner at start: the named reader (NULL if it was not in opts.readers) */
struct journal_reader *journal_reader(struct journal *j, const char *name);

/* that reader's thread: the next record after its read position. false: nothing new yet. */
bool journal_next(struct journal_reader *r, struct journal_rec *rec);
/* that reader's thread: every record below lsn is done with; persists at once (mapped cursor) */
void journal_commit(struct journal_reader *r, uint64_t next_lsn);
/* that reader's thread: read again from the committed cursor (a sink retrying) */
void journal_rewind(struct journal_reader *r);
/* that reader's thread: sleep until something may be new, at most timeout_ms */
void journal_wait(struct journal_reader *r, int timeout_ms);

/* any thread */
uint64_t journal_reader_committed(const struct journal_reader *r);
uint64_t journal_reader_dropped(const struct journal_reader *r);
/* records past the reader's durable cursor: what a restart reads again */
uint64_t journal_pending(const struct journal_reader *r);
/* records the reader has not read yet: its live backlog */
uint64_t journal_unread(const struct journal_reader *r);
const char *journal_reader_name(const struct journal_reader *r);
struct journal *journal_reader_journal(const struct journal_reader *r);
void journal_get_stats(struct journal *j, struct journal_stats *st);
/* the directory's per-reader cursor values, for the operator tool (works on a readonly journal) */
size_t journal_cursor_count(const struct journal *j);
bool journal_cursor_at(const struct journal *j, size_t i, const char **name, uint64_t *next_lsn);

/* readonly journals (operator tool): walk every intact record from from_lsn on */
typedef bool (*journal_visit_cb)(void *ctx, const struct journal_rec *rec);
void journal_scan(struct journal *j, uint64_t from_lsn, journal_visit_cb cb, void *ctx);

#endif
