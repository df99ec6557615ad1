/* The registry file watcher and the snapshot hand-off (see regwatch.h). */
#include "regwatch.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "thread.h"

/* --- regslot -------------------------------------------------------------------------------- */

/* before either side runs */
void regslot_init(struct regslot *s)
{
	atomic_init(&s->pending, NULL);
	s->held = NULL;
}

/* loader thread */
void regslot_publish(struct regslot *s, struct ip_registry *reg)
{
	struct ip_registry *old;

	if(reg == NULL) return;
	registry_seal(reg);
	/* release: the reader must see the snapshot's contents once it sees the pointer */
	old = atomic_exchange_explicit(&s->pending, reg, memory_order_acq_rel);
	/* The exchange took it out of the slot, so the reader never had it. */
	registry_free(old);
}

/* processor thread */
const struct ip_registry *regslot_take(struct regslot *s)
{
	struct ip_registry *n;

	/* The common case must not write to a cache line the loader also writes. */
	if(atomic_load_explicit(&s->pending, memory_order_relaxed) == NULL) return s->held;
	n = atomic_exchange_explicit(&s->pending, NULL, memory_order_acquire);
	if(n != NULL){
		registry_free(s->held);
		s->held = n;
	}
	return s->held;
}

/* after both sides have stopped */
void regslot_destroy(struct regslot *s)
{
	registry_free(atomic_exchange(&s->pending, NULL));
	registry_free(s->held);
	s->held = NULL;
}

/* --- regwatch ------------------------------------------------------------------------------- */

/* What tells a changed file apart without reading it. ctime too, because some tools restore
 * mtime after writing. */
struct regwatch_sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

struct regwatch {
	struct regslot slot;
	char *path;
	char *base;            /* the file's name in its directory, for inotify events */
	int poll_ms;
	int efd;               /* eventfd: wakes the thread for a reload request or stop */
	int ifd;               /* inotify on the file's directory; -1: polling only */
	pthread_t thread;
	atomic_bool stop;
	atomic_bool reload;
	_Atomic uint64_t loads, failures, version;

	/* loader thread only, once started */
	struct regwatch_sig sig;   /* of the file behind the current snapshot (or the last refused one) */
	bool have_sig;
	uint64_t hash;             /* of the bytes behind the current snapshot (or the refused one) */
	size_t len;
	bool have_hash;
	bool missing;              /* the last stat failed and was logged */
};

static bool regwatch__stat(const char *path, struct regwatch_sig *sig, int *err)
{
	struct stat st;

	if(stat(path, &st) < 0){
		*err = errno;
		return false;
	}
	memset(sig, 0, sizeof(*sig));
	sig->dev = st.st_dev;
	sig->ino = st.st_ino;
	sig->size = st.st_size;
	sig->mtime = st.st_mtim;
	sig->ctime = st.st_ctim;
	return true;
}

static bool regwatch__sig_eq(const struct regwatch_sig *a, const struct regwatch_sig *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size
		&& a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec
		&& a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static void regwatch__publish(struct regwatch *w, struct ip_registry *reg)
{
	size_t count = registry_count(reg);
	uint64_t version;

	regslot_publish(&w->slot, reg);   /* seals it: the version exists from here */
	version = registry_version(reg);  /* reg may be freed by the next publish, not before */
	atomic_store(&w->version, version);
	ip_log(IP_LOG_NOTICE, "iotpipe: registry %s loaded: %zu devices (version %llu)",
			w->path, count, (unsigned long long)version);
	atomic_fetch_add(&w->loads, 1);
}

/* Why the loader looks at the file. */
enum regwatch_why {
	REGWATCH_POLL,      /* timer: read only if the signature changed */
	REGWATCH_EVENT,     /* inotify saw a write or rename: read, load if the content changed */
	REGWATCH_REQUEST,   /* regwatch_request_reload (SIGHUP): load whatever is there */
};

/* FNV-1a: tells "written again with the same bytes" apart from a change without keeping a copy. */
static uint64_t regwatch__hash(const char *buf, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for(size_t i = 0; i < len; i++){
		h ^= (unsigned char)buf[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void regwatch__refused(struct regwatch *w, const char *why)
{
	ip_log(IP_LOG_WARNING, "iotpipe: registry %s not reloaded, keeping version %llu: %s",
			w->path, (unsigned long long)atomic_load(&w->version), why);
	/* counted after logging: whoever sees the count can find the line */
	atomic_fetch_add(&w->failures, 1);
}

/* loader thread */
static void regwatch__check(struct regwatch *w, enum regwatch_why why)
{
	struct regwatch_sig before, after;
	struct ip_registry *reg;
	char err[512], msg[600];
	char ebuf[128];
	char *buf;
	size_t len;
	uint64_t hash;
	int e;
	bool ok;

	if(!regwatch__stat(w->path, &before, &e)){
		/* Editors that delete and recreate leave a short gap: say it once, not every poll. */
		if(why == REGWATCH_REQUEST || !w->missing){
			snprintf(msg, sizeof(msg), "cannot stat: %s", strerror_r(e, ebuf, sizeof(ebuf)));
			regwatch__refused(w, msg);
		}
		w->missing = true;
		w->have_sig = false;
		w->have_hash = false;   /* whatever comes back is news, and is logged as such */
		return;
	}
	w->missing = false;
	if(why == REGWATCH_POLL && w->have_sig && regwatch__sig_eq(&before, &w->sig)) return;

	ok = registry_read_file(w->path, &buf, &len, err, sizeof(err));
	if(!regwatch__stat(w->path, &after, &e) || !regwatch__sig_eq(&before, &after)){
		/* Written while we read it: what we read may be half of it. The next poll sees a
		 * signature other than the recorded one and tries again. */
		free(buf);
		return;
	}
	w->sig = before;
	w->have_sig = true;   /* a refused file is not retried until it changes again */
	if(!ok){
		w->have_hash = false;
		regwatch__refused(w, err);
		return;
	}
	/* The timer and inotify often both report one change; and a touch is no change. */
	hash = regwatch__hash(buf, len);
	if(why != REGWATCH_REQUEST && w->have_hash && w->hash == hash && w->len == len){
		free(buf);
		return;
	}
	w->hash = hash;
	w->len = len;
	w->have_hash = true;
	ok = registry_parse_json(buf, len, &reg, err, sizeof(err));
	free(buf);
	if(!ok){
		regwatch__refused(w, err);
		return;
	}
	regwatch__publish(w, reg);
}

/* loader thread: true when an event says our file was written or renamed into place. */
static bool regwatch__inotify_drain(struct regwatch *w)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	const struct inotify_event *ev;
	bool hit = false;
	ssize_t n;

	for(;;){
		n = read(w->ifd, buf, sizeof(buf));
		if(n < 0 && errno == EINTR) continue;
		if(n <= 0) break;
		for(char *p = buf; p < buf + n; p += sizeof(struct inotify_event) + ev->len){
			ev = (const struct inotify_event *)(void *)p;
			if(ev->mask & IN_Q_OVERFLOW) hit = true;
			if(ev->mask & IN_IGNORED){
				/* The directory went away: the stat polling carries on alone. */
				close(w->ifd);
				w->ifd = -1;
				return hit;
			}
			if(ev->len > 0 && strcmp(ev->name, w->base) == 0) hit = true;
		}
	}
	return hit;
}

/* loader thread */
static void *regwatch__run(void *arg)
{
	struct regwatch *w = arg;
	struct pollfd pfd[2];
	uint64_t v;
	enum regwatch_why why;
	int rc;

	while(!atomic_load(&w->stop)){
		pfd[0].fd = w->efd;
		pfd[0].events = POLLIN;
		pfd[1].fd = w->ifd;   /* poll ignores a negative fd */
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		rc = poll(pfd, 2, w->poll_ms);
		if(rc < 0 && errno != EINTR){
			/* Cannot wait on the fds (ENOMEM): still poll the file, without spinning. */
			struct timespec ts = {w->poll_ms / 1000, (long)(w->poll_ms % 1000) * 1000000L};
			nanosleep(&ts, NULL);
		}
		if(pfd[0].revents & POLLIN){
			while(read(w->efd, &v, sizeof(v)) < 0 && errno == EINTR){}
		}
		if(atomic_load(&w->stop)) break;
		why = REGWATCH_POLL;
		if(w->ifd >= 0 && (pfd[1].revents & POLLIN) && regwatch__inotify_drain(w)) why = REGWATCH_EVENT;
		if(atomic_exchange(&w->reload, false)) why = REGWATCH_REQUEST;
		regwatch__check(w, why);
	}
	return NULL;
}

/* main thread: the inotify watch is an accelerator only, so any failure here means polling. */
static void regwatch__inotify_setup(struct regwatch *w)
{
	char *dir;
	char *slash;

	w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if(w->ifd < 0) return;
	dir = strdup(w->path);
	if(dir == NULL) goto failed;
	slash = strrchr(dir, '/');
	if(slash == NULL){
		free(dir);
		dir = strdup(".");
		if(dir == NULL) goto failed;
	}else if(slash == dir){
		slash[1] = '\0';
	}else{
		*slash = '\0';
	}
	/* CLOSE_WRITE: rewritten in place; MOVED_TO: an editor renamed its temp file over it. */
	if(inotify_add_watch(w->ifd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR) < 0){
		free(dir);
		goto failed;
	}
	free(dir);
	return;

failed:
	close(w->ifd);
	w->ifd = -1;
}

/* The process's working directory is shared with the broker and every other plugin: a chdir()
 * anywhere after start must not change which file is watched. Not realpath(): a symlinked path
 * has to stay a symlink so that swapping its target is seen. */
static char *regwatch__abspath(const char *path)
{
	char cwd[PATH_MAX];
	char *abs;
	size_t n;

	if(path[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL) return strdup(path);
	n = strlen(cwd) + 1 + strlen(path) + 1;
	abs = malloc(n);
	if(abs) snprintf(abs, n, "%s/%s", cwd, path);
	return abs;
}

static void regwatch__free(struct regwatch *w)
{
	if(w->efd >= 0) close(w->efd);
	if(w->ifd >= 0) close(w->ifd);
	regslot_destroy(&w->slot);
	free(w->path);
	free(w);
}

/* main thread */
struct regwatch *regwatch_start(const char *path, int poll_ms, char *err, size_t errlen)
{
	struct regwatch *w;
	struct ip_registry *reg;
	struct regwatch_sig after;
	char msg[512];
	const char *slash;
	char *buf;
	size_t len;
	bool ok;
	int e;

	if(path == NULL || path[0] == '\0'){
		snprintf(err, errlen, "registry_file: empty path");
		return NULL;
	}
	w = calloc(1, sizeof(*w));
	if(w == NULL){
		snprintf(err, errlen, "registry_file %s: out of memory", path);
		return NULL;
	}
	regslot_init(&w->slot);
	atomic_init(&w->stop, false);
	atomic_init(&w->reload, false);
	atomic_init(&w->loads, 0);
	atomic_init(&w->failures, 0);
	atomic_init(&w->version, 0);
	w->efd = -1;
	w->ifd = -1;
	w->poll_ms = poll_ms > 0 ? poll_ms : 1000;
	w->path = regwatch__abspath(path);
	if(w->path == NULL){
		snprintf(err, errlen, "registry_file %s: out of memory", path);
		goto failed;
	}
	slash = strrchr(w->path, '/');
	w->base = slash ? (char *)slash + 1 : w->path;

	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if(w->efd < 0){
		snprintf(err, errlen, "registry_file %s: eventfd: %s", path, strerror_r(errno, msg, sizeof(msg)));
		goto failed;
	}
	/* Watch before the first read, so a write racing the start is not missed. */
	regwatch__inotify_setup(w);

	w->have_sig = regwatch__stat(path, &w->sig, &e);
	if(!registry_read_file(path, &buf, &len, msg, sizeof(msg))){
		snprintf(err, errlen, "registry_file %s: %s", path, msg);
		goto failed;
	}
	w->hash = regwatch__hash(buf, len);
	w->len = len;
	w->have_hash = true;
	ok = registry_parse_json(buf, len, &reg, msg, sizeof(msg));
	free(buf);
	if(!ok){
		snprintf(err, errlen, "registry_file %s: %s", path, msg);
		goto failed;
	}
	/* Changed while read: still start with it, the thread reloads at its first poll. */
	if(w->have_sig && (!regwatch__stat(path, &after, &e) || !regwatch__sig_eq(&w->sig, &after))){
		w->have_sig = false;
		w->have_hash = false;
	}
	regwatch__publish(w, reg);

	e = thread_start(&w->thread, regwatch__run, w);
	if(e != 0){
		snprintf(err, errlen, "registry_file %s: cannot start the loader thread: %s",
				path, strerror_r(e, msg, sizeof(msg)));
		goto failed;
	}
	pthread_setname_np(w->thread, "iotpipe-reg");   /* 15 bytes at most */
	return w;

failed:
	regwatch__free(w);
	return NULL;
}

/* any thread */
void regwatch_request_reload(struct regwatch *w)
{
	uint64_t one = 1;
	ssize_t n;

	if(w == NULL) return;
	atomic_store(&w->reload, true);
	/* Non-blocking eventfd: a full counter (EAGAIN) already means a wake-up is pending. */
	n = write(w->efd, &one, sizeof(one));
	(void)n;
}

/* processor thread */
const struct ip_registry *regwatch_current(struct regwatch *w)
{
	return regslot_take(&w->slot);
}

struct regslot *regwatch_slot(struct regwatch *w)
{
	return &w->slot;
}

/* any thread */
void regwatch_stats(struct regwatch *w, struct regwatch_stats *st)
{
	st->loads = atomic_load(&w->loads);
	st->failures = atomic_load(&w->failures);
	st->version = atomic_load(&w->version);
}

/* main thread */
void regwatch_stop(struct regwatch *w)
{
	uint64_t one = 1;
	ssize_t n;

	if(w == NULL) return;
	atomic_store(&w->stop, true);
	n = write(w->efd, &one, sizeof(one));
	(void)n;
	pthread_join(w->thread, NULL);
	regwatch__free(w);
}
