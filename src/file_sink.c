#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "file_sink.h"
#include "log.h"
#include "record.h"
#include "thread.h"

#define SYNC_MS 200
#define LINE_MAX_BYTES (256 * 1024)

struct out_file {
	FILE *f;
	uint64_t size;              /* bytes written, buffered ones included */
	uint64_t durable;           /* bytes known on disk (after the last fdatasync) */
	bool dirty;
	int64_t rotate_after;       /* a failed rotation is tried again from then on */
};

struct file_sink {
	char *dir;
	uint64_t max_bytes;
	struct journal_reader *reader;
	struct metrics *m;
	struct out_file files[REC__END];
	char *line;
	struct outrec_json *gen;
	pthread_t thread;
	_Atomic bool stop;
	uint64_t rotations;
};

static void file_path(const struct file_sink *s, uint16_t kind, char *path, size_t cap)
{
	snprintf(path, cap, "%s/%s.ndjson", s->dir, rec_kind_name(kind));
}

/* main or sink thread */
static bool file_open(struct file_sink *s, uint16_t kind, char *err, size_t errlen)
{
	char path[4096];
	file_path(s, kind, path, sizeof(path));
	struct out_file *o = &s->files[kind];
	o->f = fopen(path, "ae");
	if(!o->f){
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return false;
	}
	setvbuf(o->f, NULL, _IOFBF, 1 << 16);
	struct stat st;
	o->size = o->durable = fstat(fileno(o->f), &st) ? 0 : (uint64_t)st.st_size;
	o->dirty = false;
	return true;
}

/* sink thread: makes one file's writes durable; false leaves it dirty */
static bool file_sync(struct out_file *o)
{
	if(!o->f || fflush(o->f) || fdatasync(fileno(o->f))) return false;
	o->durable = o->size;
	o->dirty = false;
	return true;
}

/* sink thread: the full file gets a dated name and a fresh one takes its place. A rename that fails
 * (permissions) keeps the current file and is tried again later; false only when writing failed. */
static bool file_rotate(struct file_sink *s, uint16_t kind)
{
	struct out_file *o = &s->files[kind];
	if(clock_mono_ms() < o->rotate_after) return true;
	if(!file_sync(o)) return false;
	char from[4096], to[4200], stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	file_path(s, kind, from, sizeof(from));
	snprintf(to, sizeof(to), "%s/%s-%s-%" PRIu64 ".ndjson", s->dir, rec_kind_name(kind), stamp, s->rotations + 1);
	if(rename(from, to)){
		ip_log(IP_LOG_WARNING, "iotpipe: file sink: cannot rotate %s: %s; writing on, trying again in 10 s",
				from, strerror(errno));
		o->rotate_after = clock_mono_ms() + 10000;
		return true;
	}
	s->rotations++;
	fclose(o->f);
	o->f = NULL;
	char err[512];
	return file_open(s, kind, err, sizeof(err));
}

/* sink thread: false when the record could not be written */
static bool write_record(struct file_sink *s, const struct journal_rec *rec)
{
	struct outrec r;
	if(rec->kind < REC_RAW || rec->kind >= REC__END || !outrec_decode((uint16_t)rec->kind, rec->body, rec->len, &r)){
		ip_log(IP_LOG_WARNING, "iotpipe: file sink: skipping undecodable outbox record %" PRIu64, rec->lsn);
		return true;
	}
	struct out_file *o = &s->files[rec->kind];
	char err[512];
	if(!o->f && !file_open(s, (uint16_t)rec->kind, err, sizeof(err))) return false;
	size_t n = outrec_json(s->gen, &r, s->line, LINE_MAX_BYTES - 1);
	if(n == 0){
		ip_log(IP_LOG_WARNING, "iotpipe: file sink: record %" PRIu64 " does not fit a line", rec->lsn);
		return true;
	}
	s->line[n++] = '\n';
	if(fwrite(s->line, 1, n, o->f) != n) return false;
	o->size += n;
	o->dirty = true;
	return o->size < s->max_bytes || file_rotate(s, (uint16_t)rec->kind);
}

/* sink thread */
static bool sync_files(struct file_sink *s)
{
	for(int k = REC_RAW; k < REC__END; k++){
		if(s->files[k].dirty && !file_sync(&s->files[k])) return false;
	}
	return true;
}

/* sink thread, after a failed write or sync: every file goes back to what is known on disk (no torn
 * line, nothing stdio dropped), and reading starts again from the cursor, which never passed it */
static void recover(struct file_sink *s)
{
	for(uint16_t k = REC_RAW; k < REC__END; k++){
		struct out_file *o = &s->files[k];
		if(!o->f) continue;
		fclose(o->f);       /* may still write some of the buffer: cut below */
		o->f = NULL;
		char path[4096], err[512];
		file_path(s, k, path, sizeof(path));
		if(truncate(path, (off_t)o->durable) && errno != ENOENT){
			ip_log(IP_LOG_WARNING, "iotpipe: file sink: cannot cut %s back to %" PRIu64 " bytes: %s", path,
					o->durable, strerror(errno));
		}
		file_open(s, k, err, sizeof(err));   /* a failure here is retried at the next write */
	}
	journal_rewind(s->reader);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void *file_sink_main(void *arg)
{
	struct file_sink *s = arg;
	thread_background("iotpipe-file");
	int64_t last_sync = clock_mono_ms(), failing_since = 0;
	uint64_t done = journal_reader_committed(s->reader), synced_to = done, unsynced = 0, retries = 0;
	for(;;){
		bool stopping = atomic_load(&s->stop);
		struct journal_rec rec;
		int n = 0;
		bool ok = true;
		while(n < 4096 && journal_next(s->reader, &rec)){
			if(!(ok = write_record(s, &rec))) break;
			done = rec.lsn + 1;
			n++;
		}
		unsynced += (uint64_t)n;
		int64_t now = clock_mono_ms();
		if(ok && done > synced_to && (n == 0 || now - last_sync >= SYNC_MS || stopping)){
			ok = sync_files(s);
			if(ok){
				journal_commit(s->reader, done);
				synced_to = done;
				METRIC_ADD(s->m, file_written, unsynced);
				unsynced = 0;
				if(failing_since){
					ip_log(IP_LOG_NOTICE, "iotpipe: file sink: writing again after %" PRId64 " s and %" PRIu64 " retries",
							(now - failing_since) / 1000, retries);
					failing_since = 0;
					retries = 0;
				}
			}
			last_sync = now;
		}
		if(!ok){
			int e = errno;
			if(!failing_since){
				failing_since = now;
				ip_log(IP_LOG_ERR, "iotpipe: file sink: cannot write to %s: %s; retrying every second, "
						"the outbox keeps the records", s->dir, strerror(e));
			}
			retries++;
			recover(s);
			done = synced_to;
			unsynced = 0;
			if(stopping) break;
			sleep_ms(1000);
			continue;
		}
		if(stopping && n == 0) break;
		if(n == 0) journal_wait(s->reader, 50);
	}
	return NULL;
}

struct file_sink *file_sink_start(const char *dir, uint64_t max_bytes, struct journal_reader *reader,
		struct metrics *m, char *err, size_t errlen)
{
	struct file_sink *s = calloc(1, sizeof(*s));
	/* no series JSON kept: the file sink is the default sink, where the plugin's memory is meant to
	 * grow with the fleet alone, and its JSON is cheap beside its writes */
	if(!s || !(s->dir = strdup(dir)) || !(s->line = malloc(LINE_MAX_BYTES)) || !(s->gen = outrec_json_new(false))){
		snprintf(err, errlen, "out of memory");
		goto failed;
	}
	s->max_bytes = max_bytes;
	s->reader = reader;
	s->m = m;
	for(uint16_t k = REC_RAW; k < REC__END; k++){
		if(!file_open(s, k, err, errlen)) goto failed;
	}
	if(thread_start(&s->thread, file_sink_main, s)){
		snprintf(err, errlen, "cannot start the file sink thread");
		goto failed;
	}
	return s;
failed:
	if(s){
		for(int k = 0; k < REC__END; k++) if(s->files[k].f) fclose(s->files[k].f);
		free(s->line);
		outrec_json_free(s->gen);
		free(s->dir);
		free(s);
	}
	return NULL;
}

void file_sink_stop(struct file_sink *s)
{
	if(!s) return;
	atomic_store(&s->stop, true);
	pthread_join(s->thread, NULL);
	for(int k = 0; k < REC__END; k++) if(s->files[k].f) fclose(s->files[k].f);
	free(s->line);
	outrec_json_free(s->gen);
	free(s->dir);
	free(s);
}
