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
	uint64_t size;
	bool dirty;
};

struct file_sink {
	char *dir;
	uint64_t max_bytes;
	struct journal_reader *reader;
	struct metrics *m;
	struct out_file files[REC__END];
	char *line;
	pthread_t thread;
	_Atomic bool stop;
	uint64_t rotations;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool file_open(struct file_sink *s, uint16_t kind, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s.ndjson", s->dir, rec_kind_name(kind));
	struct out_file *o = &s->files[kind];
	o->f = fopen(path, "ae");
	if(!o->f){
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return false;
	}
	setvbuf(o->f, NULL, _IOFBF, 1 << 16);
	struct stat st;
	o->size = fstat(fileno(o->f), &st) ? 0 : (uint64_t)st.st_size;
	return true;
}

/* sink thread: the full file gets a dated name and a fresh one takes its place */
static void file_rotate(struct file_sink *s, uint16_t kind)
{
	struct out_file *o = &s->files[kind];
	fflush(o->f);
	fdatasync(fileno(o->f));
	fclose(o->f);
	o->f = NULL;
	char from[4096], to[4200], stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(from, sizeof(from), "%s/%s.ndjson", s->dir, rec_kind_name(kind));
	snprintf(to, sizeof(to), "%s/%s-%s-%" PRIu64 ".ndjson", s->dir, rec_kind_name(kind), stamp, ++s->rotations);
	if(rename(from, to)) ip_log(IP_LOG_WARNING, "iotpipe: file sink: cannot rotate %s: %s", from, strerror(errno));
	char err[512];
	if(!file_open(s, kind, err, sizeof(err))) ip_log(IP_LOG_ERR, "iotpipe: file sink: %s", err);
}

/* sink thread: false when the record could not be written (then it is retried) */
static bool write_record(struct file_sink *s, const struct journal_rec *rec)
{
	struct outrec r;
	if(rec->kind < REC_RAW || rec->kind >= REC__END || !outrec_decode((uint16_t)rec->kind, rec->body, rec->len, &r)){
		ip_log(IP_LOG_WARNING, "iotpipe: file sink: skipping undecodable outbox record %" PRIu64, rec->lsn);
		return true;
	}
	struct out_file *o = &s->files[rec->kind];
	if(!o->f) return false;
	size_t n = outrec_to_json(&r, s->line, LINE_MAX_BYTES - 1);
	if(n == 0){
		ip_log(IP_LOG_WARNING, "iotpipe: file sink: record %" PRIu64 " does not fit a line", rec->lsn);
		return true;
	}
	s->line[n++] = '\n';
	if(fwrite(s->line, 1, n, o->f) != n) return false;
	o->size += n;
	o->dirty = true;
	if(o->size >= s->max_bytes) file_rotate(s, (uint16_t)rec->kind);
	return true;
}

/* sink thread: make what was written durable, then move the cursor past it */
static bool sync_files(struct file_sink *s)
{
	bool ok = true;
	for(int k = REC_RAW; k < REC__END; k++){
		struct out_file *o = &s->files[k];
		if(!o->dirty || !o->f) continue;
		if(fflush(o->f) || fdatasync(fileno(o->f))) ok = false;
		o->dirty = false;
	}
	return ok;
}

static void *file_sink_main(void *arg)
{
	struct file_sink *s = arg;
	thread_background("iotpipe-file");
	int64_t last_sync = mono_ms();
	uint64_t done = 0, synced_to = 0;   /* next LSN after what was written / made durable */
	bool failing = false;
	for(;;){
		bool stopping = atomic_load(&s->stop);
		struct journal_rec rec;
		int n = 0;
		while(n < 4096 && journal_next(s->reader, &rec)){
			if(!write_record(s, &rec)){
				if(!failing) ip_log(IP_LOG_ERR, "iotpipe: file sink: cannot write to %s: %s; retrying", s->dir, strerror(errno));
				failing = true;
				journal_rewind(s->reader);
				done = synced_to;
				break;
			}
			failing = false;
			done = rec.lsn + 1;
			n++;
		}
		METRIC_ADD(s->m, file_written, (uint64_t)n);
		int64_t now = mono_ms();
		if(done > synced_to && (n == 0 || now - last_sync >= SYNC_MS || stopping)){
			if(sync_files(s)){
				journal_commit(s->reader, done);
				synced_to = done;
			}
			last_sync = now;
		}
		if(stopping && n == 0) break;
		if(n == 0) journal_wait(s->reader, failing ? 1000 : 50);
	}
	return NULL;
}

struct file_sink *file_sink_start(const char *dir, uint64_t max_bytes, struct journal_reader *reader,
		struct metrics *m, char *err, size_t errlen)
{
	struct file_sink *s = calloc(1, sizeof(*s));
	if(!s || !(s->dir = strdup(dir)) || !(s->line = malloc(LINE_MAX_BYTES))){
		snprintf(err, errlen, "out of memory");
		goto failed;
	}
	s->max_bytes = max_bytes;
	s->reader = reader;
	s->m = m;
	for(uint16_t k = REC_RAW; k < REC__END; k++){
		if(!file_open(s, k, err, errlen)) goto failed;
	}
	if(pthread_create(&s->thread, NULL, file_sink_main, s)){
		snprintf(err, errlen, "cannot start the file sink thread");
		goto failed;
	}
	return s;
failed:
	if(s){
		for(int k = 0; k < REC__END; k++) if(s->files[k].f) fclose(s->files[k].f);
		free(s->line);
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
	free(s->dir);
	free(s);
}
