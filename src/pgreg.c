/* The PostgreSQL registry loader (see pgreg.h). */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "log.h"
#include "pg_conn.h"
#include "pg_schema.h"
#include "pgreg.h"
#include "registry.h"
#include "thread.h"

#define PGREG_DEBOUNCE_MS 50            /* changes this close together are read once */
#define PGREG_QUERY_TIMEOUT_MS 60000
#define PGREG_RETRY_MIN_MS 200
#define PGREG_RETRY_MAX_MS 5000
#define PGREG_LOG_PROBLEMS 5            /* invalid rows named per load; the rest are counted */

struct pgreg {
	struct regslot slot;
	char *conninfo;
	char *cache_path;
	int efd;                        /* wakes the thread: stop or reload */
	pthread_t thread;
	atomic_bool stop, reload, answered;
	_Atomic uint64_t loads, failures, skipped, version;
	/* loader thread only */
	bool failing;                   /* a failure was logged; the next load logs the recovery */
	bool cache_failing;
	bool empty_logged;
	bool no_tables;                 /* the last failure: the tables are not made yet */
	uint64_t problems;              /* the invalid rows of the last load (pgreg_load.problems) */
	char target[160];
};

enum pgreg_wait { W_READY, W_WAKE, W_TIMEOUT, W_STOP };

/* any thread */
const char *pgreg_load_sql(void)
{
	/* one statement: one consistent snapshot of both tables. Sensors in ordinal order, so the
	 * first is the default; a device without sensors comes as one row with a NULL sensor. */
	return "SELECT d.device_id, d.location, d.zone, d.device_type, s.sensor_id, s.unit, s.min, s.max, s.threshold, "
		"s.anomaly_z FROM devices d LEFT JOIN sensors s ON s.device_id = d.device_id "
		"ORDER BY d.device_id, s.ordinal, s.sensor_id";
}

/* loader thread: until the socket is ready for events, the deadline (mono ms, 0: none) passes,
 * or the eventfd rings */
static enum pgreg_wait pgreg__wait(struct pgreg *g, PGconn *c, short events, int64_t deadline)
{
	struct pollfd pfd[2] = {{.fd = g->efd, .events = POLLIN}, {.fd = c ? PQsocket(c) : -1, .events = events}};
	int timeout = -1;
	if(deadline){
		int64_t left = deadline - clock_mono_ms();
		timeout = left < 0 ? 0 : left > 60000 ? 60000 : (int)left;
	}
	int rc = poll(pfd, 2, timeout);
	if(atomic_load(&g->stop)) return W_STOP;
	if(rc < 0){
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
		return W_WAKE;
	}
	if(pfd[0].revents & POLLIN){
		uint64_t v;
		while(read(g->efd, &v, sizeof(v)) < 0 && errno == EINTR){}
	}
	if(pfd[1].revents) return W_READY;
	if(pfd[0].revents) return W_WAKE;
	return deadline && clock_mono_ms() >= deadline ? W_TIMEOUT : W_WAKE;
}

/* loader thread: a ready connection, or NULL with why set (empty when stopping) */
static PGconn *pgreg__connect(struct pgreg *g, char *why, size_t cap)
{
	why[0] = '\0';
	PGconn *c = pg_conn_start(g->conninfo, "iotpipe-registry");
	if(!c){
		snprintf(why, cap, "out of memory");
		return NULL;
	}
	pg_conn_target(c, g->target, sizeof(g->target));
	if(PQstatus(c) == CONNECTION_BAD) goto failed;
	int64_t deadline = clock_mono_ms() + PG_CONNECT_TIMEOUT_MS;
	short ev = POLLOUT;
	for(;;){
		enum pgreg_wait w = pgreg__wait(g, c, ev, deadline);
		if(w == W_STOP){
			PQfinish(c);
			return NULL;
		}
		if(w == W_TIMEOUT){
			snprintf(why, cap, "timed out connecting");
			PQfinish(c);
			return NULL;
		}
		if(w != W_READY) continue;   /* PQconnectPoll only when the socket is ready */
		PostgresPollingStatusType st = PQconnectPoll(c);
		if(st == PGRES_POLLING_FAILED) goto failed;
		if(st == PGRES_POLLING_OK) break;
		ev = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
	}
	if(!pg_conn_ready(c)){
		snprintf(why, cap, "cannot make the connection non-blocking");
		PQfinish(c);
		return NULL;
	}
	pg_conn_target(c, g->target, sizeof(g->target));
	return c;
failed:
	pg_conn_error(c, why, cap);
	PQfinish(c);
	return NULL;
}

typedef bool (*pgreg_row_cb)(void *ctx, const PGresult *r);

/* loader thread: every result of the command sent; rows (single-row mode) to cb. false with why
 * set when the command or the connection failed (why empty when stopping). */
static bool pgreg__results(struct pgreg *g, PGconn *c, pgreg_row_cb cb, void *ctx, char *why, size_t cap)
{
	bool ok = true;
	int64_t deadline = clock_mono_ms() + PGREG_QUERY_TIMEOUT_MS;
	why[0] = '\0';
	for(;;){
		int f = PQflush(c);
		if(f < 0) goto lost;
		if(f == 1 || PQisBusy(c)){
			enum pgreg_wait w = pgreg__wait(g, c, (short)(POLLIN | (f == 1 ? POLLOUT : 0)), deadline);
			if(w == W_STOP) return false;
			if(w == W_TIMEOUT){
				snprintf(why, cap, "no answer in %d s", PGREG_QUERY_TIMEOUT_MS / 1000);
				return false;
			}
			if(w == W_READY && !PQconsumeInput(c)) goto lost;
			continue;
		}
		PGresult *r = PQgetResult(c);
		if(!r) return ok;
		switch(PQresultStatus(r)){
		case PGRES_SINGLE_TUPLE:
			if(ok && cb && !cb(ctx, r)){
				snprintf(why, cap, "out of memory");
				ok = false;
			}
			break;
		case PGRES_TUPLES_OK:
		case PGRES_COMMAND_OK:
			break;
		default:
			if(ok){
				const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
				g->no_tables = st && !strcmp(st, "42P01");
				pg_result_error(r, why, cap);
			}
			ok = false;
			break;
		}
		PQclear(r);
	}
lost:
	pg_conn_error(c, why, cap);
	return false;
}

/* loader thread */
static bool pgreg__exec(struct pgreg *g, PGconn *c, const char *sql, char *why, size_t cap)
{
	if(!PQsendQuery(c, sql)){
		pg_conn_error(c, why, cap);
		return false;
	}
	return pgreg__results(g, c, NULL, NULL, why, cap);
}

/* --- building a snapshot -------------------------------------------------------------------- */

/* A device is collected whole before it goes into the snapshot: one invalid sensor row leaves the
 * whole device out (its readings are then unknown_device), never a device without that sensor. */
struct pgreg_load {
	struct ip_registry *reg;
	char *id, *location, *zone, *device_type;
	struct ip_sensor_info *sensors;
	size_t nsensors, cap;
	bool bad;
	char why[200];
	size_t devices, skipped;
	bool oom;
	uint64_t problems;              /* a hash of the invalid rows: they are named when it changes */
	char named[PGREG_LOG_PROBLEMS][300];
};

/* loader thread */
static char *dup_or_null(const PGresult *r, int col)
{
	if(PQgetisnull(r, 0, col)) return NULL;
	return strdup(PQgetvalue(r, 0, col));
}

/* loader thread: a double column, or dflt when NULL; false when not a number */
static bool num_or(const PGresult *r, int col, double dflt, double *out)
{
	if(PQgetisnull(r, 0, col)){
		*out = dflt;
		return true;
	}
	const char *s = PQgetvalue(r, 0, col);
	char *end;
	errno = 0;
	*out = strtod(s, &end);
	return end != s && *end == '\0';
}

/* loader thread */
static void pgreg__device_clear(struct pgreg_load *L)
{
	free(L->id);
	free(L->location);
	free(L->zone);
	free(L->device_type);
	L->id = L->location = L->zone = L->device_type = NULL;
	L->nsensors = 0;
	L->bad = false;
	L->why[0] = '\0';
}

/* loader thread: the collected device into the snapshot, or its problem into the log */
static void pgreg__device_end(struct pgreg_load *L)
{
	if(!L->id) return;
	char msg[200];
	struct ip_device_info *d = NULL;
	if(!L->bad){
		d = registry_add_device(L->reg, L->id, L->location, L->zone, L->device_type, msg, sizeof(msg));
		if(!d){
			L->bad = true;
			snprintf(L->why, sizeof(L->why), "%s", msg);
		}
	}
	for(size_t i = 0; d && i < L->nsensors; i++){
		if(!registry_add_sensor(d, &L->sensors[i], msg, sizeof(msg))){
			/* checked before; only memory can fail here, and the device is in already */
			L->oom = true;
			break;
		}
	}
	if(L->bad){
		if(L->skipped < PGREG_LOG_PROBLEMS){
			snprintf(L->named[L->skipped], sizeof(L->named[0]), "device \"%.64s\" left out: %s", L->id, L->why);
		}
		for(const char *p = L->id; *p; p++) L->problems = (L->problems ^ (uint8_t)*p) * 0x100000001b3ULL;
		for(const char *p = L->why; *p; p++) L->problems = (L->problems ^ (uint8_t)*p) * 0x100000001b3ULL;
		L->skipped++;
	}else{
		L->devices++;
	}
	pgreg__device_clear(L);
}

/* loader thread: the first problem of a device is the one named */
static void pgreg__bad(struct pgreg_load *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pgreg__bad(struct pgreg_load *L, const char *fmt, ...)
{
	if(L->bad) return;
	L->bad = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(L->why, sizeof(L->why), fmt, ap);
	va_end(ap);
}

/* loader thread: one row of pgreg_load_sql() */
static bool pgreg__row(void *ctx, const PGresult *r)
{
	struct pgreg_load *L = ctx;
	if(PQnfields(r) != 10 || PQgetisnull(r, 0, 0)) return true;
	const char *id = PQgetvalue(r, 0, 0);
	if(!L->id || strcmp(L->id, id)){
		pgreg__device_end(L);
		L->id = strdup(id);
		L->location = dup_or_null(r, 1);
		L->zone = dup_or_null(r, 2);
		L->device_type = dup_or_null(r, 3);
		if(!L->id || (!PQgetisnull(r, 0, 1) && !L->location) || (!PQgetisnull(r, 0, 2) && !L->zone)
				|| (!PQgetisnull(r, 0, 3) && !L->device_type)){
			L->oom = true;
			return false;
		}
		const char *bad = registry_id_check(id);
		if(bad) pgreg__bad(L, "device_id %s", bad);
	}
	if(PQgetisnull(r, 0, 4) || L->bad) return true;

	struct ip_sensor_info si;
	registry_sensor_init(&si);
	const char *sid = PQgetvalue(r, 0, 4);
	const char *bad = registry_id_check(sid);
	if(bad){
		pgreg__bad(L, "sensor_id %s", bad);
		return true;
	}
	snprintf(si.sensor_id, sizeof(si.sensor_id), "%s", sid);
	if(!PQgetisnull(r, 0, 5)){
		const char *unit = PQgetvalue(r, 0, 5);
		if(strlen(unit) >= IP_UNIT_MAX){
			pgreg__bad(L, "sensor \"%s\": unit is %d bytes or longer", si.sensor_id, IP_UNIT_MAX);
			return true;
		}
		snprintf(si.unit, sizeof(si.unit), "%s", unit);
	}
	double z;
	if(!num_or(r, 6, -INFINITY, &si.min) || !num_or(r, 7, INFINITY, &si.max) || !num_or(r, 8, NAN, &si.threshold)
			|| !num_or(r, 9, 0, &z)){
		pgreg__bad(L, "sensor \"%s\": a limit is not a number", si.sensor_id);
		return true;
	}
	if(isnan(si.min) || isnan(si.max) || si.min > si.max){
		pgreg__bad(L, "sensor \"%s\": min and max must be numbers with min <= max", si.sensor_id);
		return true;
	}
	if(!PQgetisnull(r, 0, 9) && !(z > 0 && isfinite(z))){
		/* as in the file: 0 would silently mean "the default", so an explicit value must be usable */
		pgreg__bad(L, "sensor \"%s\": anomaly_z must be greater than 0 (NULL: the default)", si.sensor_id);
		return true;
	}
	si.anomaly_z = z;
	if(L->nsensors >= IP_REGISTRY_MAX_SENSORS){
		pgreg__bad(L, "more than %d sensors", IP_REGISTRY_MAX_SENSORS);
		return true;
	}
	if(L->nsensors == L->cap){
		size_t cap = L->cap ? L->cap * 2 : 8;
		struct ip_sensor_info *p = realloc(L->sensors, cap * sizeof(*p));
		if(!p){
			L->oom = true;
			return false;
		}
		L->sensors = p;
		L->cap = cap;
	}
	L->sensors[L->nsensors++] = si;
	return true;
}

/* loader thread, and tests */
char *pgreg_to_json(const struct ip_registry *r)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *devs = root ? cJSON_AddArrayToObject(root, "devices") : NULL;
	if(!devs) goto failed;
	for(const struct ip_device_info *d = registry_first(r); d; d = registry_next(d)){
		cJSON *o = cJSON_CreateObject();
		if(!o || !cJSON_AddItemToArray(devs, o)){
			cJSON_Delete(o);
			goto failed;
		}
		cJSON_AddStringToObject(o, "deviceId", d->device_id);
		if(d->location) cJSON_AddStringToObject(o, "location", d->location);
		if(d->zone) cJSON_AddStringToObject(o, "zone", d->zone);
		if(d->device_type) cJSON_AddStringToObject(o, "deviceType", d->device_type);
		if(d->any_sensor) continue;
		cJSON *ss = cJSON_AddArrayToObject(o, "sensors");
		for(size_t i = 0; ss && i < d->nsensors; i++){
			const struct ip_sensor_info *s = &d->sensors[i];
			cJSON *so = cJSON_CreateObject();
			if(!so || !cJSON_AddItemToArray(ss, so)){
				cJSON_Delete(so);
				goto failed;
			}
			cJSON_AddStringToObject(so, "sensorId", s->sensor_id);
			if(s->unit[0]) cJSON_AddStringToObject(so, "unit", s->unit);
			if(isfinite(s->min)) cJSON_AddNumberToObject(so, "min", s->min);
			if(isfinite(s->max)) cJSON_AddNumberToObject(so, "max", s->max);
			if(isfinite(s->threshold)) cJSON_AddNumberToObject(so, "threshold", s->threshold);
			if(s->anomaly_z > 0) cJSON_AddNumberToObject(so, "anomalyZ", s->anomaly_z);
		}
	}
	char *out = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return out;
failed:
	cJSON_Delete(root);
	return NULL;
}

/* loader thread: the snapshot to the cache file, replaced whole (rename) */
static void pgreg__cache(struct pgreg *g, const struct ip_registry *reg)
{
	if(!g->cache_path) return;
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp", g->cache_path);
	char *json = pgreg_to_json(reg);
	FILE *f = json ? fopen(tmp, "we") : NULL;
	bool ok = f && fputs(json, f) >= 0;
	if(f && fclose(f)) ok = false;
	if(ok && rename(tmp, g->cache_path)) ok = false;
	if(!ok){
		if(f) unlink(tmp);
		if(!g->cache_failing){
			ip_log(IP_LOG_WARNING, "iotpipe: registry from PostgreSQL: cannot write the cache %s: %s", g->cache_path,
					json ? strerror(errno) : "out of memory");
		}
	}
	g->cache_failing = !ok;
	cJSON_free(json);
}

/* loader thread: both tables into a new snapshot, published */
static bool pgreg__load(struct pgreg *g, PGconn *c, char *why, size_t cap)
{
	struct pgreg_load L;
	memset(&L, 0, sizeof(L));
	L.reg = registry_new();
	if(!L.reg){
		snprintf(why, cap, "out of memory");
		return false;
	}
	bool ok = PQsendQuery(c, pgreg_load_sql()) && PQsetSingleRowMode(c);
	if(!ok) pg_conn_error(c, why, cap);
	else ok = pgreg__results(g, c, pgreg__row, &L, why, cap);
	if(ok) pgreg__device_end(&L);
	if(ok && L.oom){
		snprintf(why, cap, "out of memory");
		ok = false;
	}
	pgreg__device_clear(&L);
	free(L.sensors);
	if(!ok){
		registry_free(L.reg);
		return false;
	}
	if(L.problems != g->problems){
		/* named once, not at every reload while they stay */
		for(size_t i = 0; i < L.skipped && i < PGREG_LOG_PROBLEMS; i++){
			ip_log(IP_LOG_WARNING, "iotpipe: registry from PostgreSQL: %s", L.named[i]);
		}
		if(L.skipped > PGREG_LOG_PROBLEMS){
			ip_log(IP_LOG_WARNING, "iotpipe: registry from PostgreSQL: %zu devices left out for invalid rows in all",
					L.skipped);
		}
		g->problems = L.problems;
	}
	size_t n = registry_count(L.reg);
	if(n == 0 && L.skipped == 0 && atomic_load(&g->version) == 0){
		/* PostgreSQL is the sink but nobody keeps a registry in it: as without registry_file */
		registry_free(L.reg);
		if(!g->empty_logged){
			ip_log(IP_LOG_NOTICE, "iotpipe: registry from PostgreSQL %s: table devices is empty: no registry in use, "
					"devices pass unenriched until it has rows", g->target);
		}
		g->empty_logged = true;
		return true;
	}
	pgreg__cache(g, L.reg);
	regslot_publish(&g->slot, L.reg);   /* sealed: the version exists from here */
	uint64_t version = registry_version(L.reg);
	atomic_store(&g->version, version);
	atomic_store(&g->skipped, L.skipped);
	ip_log(IP_LOG_NOTICE, "iotpipe: registry from PostgreSQL %s loaded: %zu devices (version %llu)", g->target, n,
			(unsigned long long)version);
	atomic_fetch_add(&g->loads, 1);
	return true;
}

/* loader thread: LISTEN, read, then read again after each change until the connection fails */
static void pgreg__session(struct pgreg *g, PGconn *c, int *backoff)
{
	char why[512];
	bool dirty = false;
	int64_t dirty_at = 0;
	atomic_store(&g->reload, false);
	if(!pgreg__exec(g, c, "LISTEN " PG_REGISTRY_CHANNEL, why, sizeof(why)) || !pgreg__load(g, c, why, sizeof(why))){
		goto failed;
	}
	atomic_store(&g->answered, true);
	if(g->failing) ip_log(IP_LOG_NOTICE, "iotpipe: registry from PostgreSQL: %s answers again", g->target);
	g->failing = false;
	g->no_tables = false;
	*backoff = 0;
	for(;;){
		/* before waiting: a notification that came in while a load read its rows is already in libpq's
		 * buffer, and the socket will not wake us for it */
		PGnotify *n;
		while((n = PQnotifies(c))){
			if(!dirty){
				dirty = true;
				dirty_at = clock_mono_ms();
			}
			PQfreemem(n);
		}
		int64_t now = clock_mono_ms();
		if(dirty && now >= dirty_at + PGREG_DEBOUNCE_MS){
			dirty = false;
			if(!pgreg__load(g, c, why, sizeof(why))) goto failed;
			continue;
		}
		enum pgreg_wait w = pgreg__wait(g, c, POLLIN, dirty ? dirty_at + PGREG_DEBOUNCE_MS : 0);
		if(w == W_STOP) return;
		if(atomic_exchange(&g->reload, false) && !dirty){
			dirty = true;
			dirty_at = now - PGREG_DEBOUNCE_MS;
		}
		if(w != W_READY) continue;
		if(!PQconsumeInput(c)){
			pg_conn_error(c, why, sizeof(why));
			goto failed;
		}
	}
failed:
	if(atomic_load(&g->stop)) return;
	atomic_fetch_add(&g->failures, 1);
	atomic_store(&g->answered, true);
	if(g->no_tables){
		/* a new database: the sink's maintenance connection is making the schema right now */
		g->no_tables = false;
		ip_log(IP_LOG_INFO, "iotpipe: registry from PostgreSQL %s: no tables devices and sensors yet (the pg sink "
				"makes them); retrying", g->target);
		return;
	}
	if(!g->failing){
		ip_log(IP_LOG_WARNING, "iotpipe: registry from PostgreSQL %s: %s; keeping the registry in use and retrying",
				g->target, why[0] ? why : "connection lost");
	}
	g->failing = true;
}

/* loader thread */
static void *pgreg__run(void *arg)
{
	struct pgreg *g = arg;
	int backoff = 0;
	thread_background("iotpipe-pgreg");
	while(!atomic_load(&g->stop)){
		char why[512];
		PGconn *c = pgreg__connect(g, why, sizeof(why));
		if(c){
			pgreg__session(g, c, &backoff);
			PQfinish(c);
		}else if(why[0]){
			atomic_fetch_add(&g->failures, 1);
			if(!g->failing){
				ip_log(IP_LOG_WARNING, "iotpipe: registry from PostgreSQL %s: %s; retrying%s", g->target, why,
						atomic_load(&g->version) ? "" : " (until a registry is loaded, devices pass unenriched)");
			}
			g->failing = true;
			atomic_store(&g->answered, true);
		}
		if(atomic_load(&g->stop)) break;
		backoff = backoff < PGREG_RETRY_MIN_MS ? PGREG_RETRY_MIN_MS
			: backoff * 2 > PGREG_RETRY_MAX_MS ? PGREG_RETRY_MAX_MS : backoff * 2;
		int64_t until = clock_mono_ms() + backoff;
		while(!atomic_load(&g->stop) && clock_mono_ms() < until){
			if(pgreg__wait(g, NULL, 0, until) == W_STOP) break;
			if(atomic_load(&g->reload)) break;   /* SIGHUP: try now */
		}
	}
	return NULL;
}

/* main thread, once the loader thread has stopped (or never started) */
static void pgreg__free(struct pgreg *g)
{
	if(g->efd >= 0) close(g->efd);
	regslot_destroy(&g->slot);
	free(g->conninfo);
	free(g->cache_path);
	free(g);
}

/* main thread */
struct pgreg *pgreg_start(const char *conninfo, const char *cache_path, int wait_ms, char *err, size_t errlen)
{
	char why[512];
	if(!pg_conninfo_check(conninfo, why, sizeof(why))){
		snprintf(err, errlen, "plugin_opt_pg_conninfo: %s", why);
		return NULL;
	}
	struct pgreg *g = calloc(1, sizeof(*g));
	if(!g){
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	regslot_init(&g->slot);
	g->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	g->conninfo = strdup(conninfo);
	g->cache_path = cache_path ? strdup(cache_path) : NULL;
	snprintf(g->target, sizeof(g->target), "(not connected)");
	if(g->efd < 0 || !g->conninfo || (cache_path && !g->cache_path)){
		snprintf(err, errlen, "registry from PostgreSQL: cannot start: %s", g->efd < 0 ? strerror(errno) : "out of memory");
		pgreg__free(g);
		return NULL;
	}
	struct stat st;
	if(cache_path && stat(cache_path, &st) == 0){
		struct ip_registry *reg;
		if(registry_load_file(cache_path, &reg, why, sizeof(why))){
			size_t n = registry_count(reg);
			regslot_publish(&g->slot, reg);
			atomic_store(&g->version, registry_version(reg));
			ip_log(IP_LOG_NOTICE, "iotpipe: registry from PostgreSQL: using the copy cached in %s (%zu devices) "
					"until PostgreSQL answers", cache_path, n);
		}else{
			ip_log(IP_LOG_WARNING, "iotpipe: registry from PostgreSQL: ignoring the cache %s: %s", cache_path, why);
		}
	}

	int e = thread_start(&g->thread, pgreg__run, g);
	if(e){
		snprintf(err, errlen, "registry from PostgreSQL: cannot start the loader thread: %s", strerror(e));
		pgreg__free(g);
		return NULL;
	}
	int64_t until = clock_mono_ms() + (wait_ms > 0 ? wait_ms : 0);
	while(!atomic_load(&g->answered) && clock_mono_ms() < until){
		struct timespec ts = {0, 5 * 1000000L};
		nanosleep(&ts, NULL);
	}
	return g;
}

/* main thread */
struct regslot *pgreg_slot(struct pgreg *g)
{
	return &g->slot;
}

/* any thread, signal handlers included */
void pgreg_request_reload(struct pgreg *g)
{
	uint64_t one = 1;
	if(!g) return;
	atomic_store(&g->reload, true);
	ssize_t n = write(g->efd, &one, sizeof(one));
	(void)n;
}

/* any thread */
void pgreg_stats(struct pgreg *g, struct pgreg_stats *st)
{
	st->loads = atomic_load(&g->loads);
	st->failures = atomic_load(&g->failures);
	st->skipped = atomic_load(&g->skipped);
	st->version = atomic_load(&g->version);
}

/* main thread */
void pgreg_stop(struct pgreg *g)
{
	uint64_t one = 1;
	if(!g) return;
	atomic_store(&g->stop, true);
	ssize_t n = write(g->efd, &one, sizeof(one));
	(void)n;
	pthread_join(g->thread, NULL);
	pgreg__free(g);
}
