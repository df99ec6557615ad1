#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "registry.h"
#include "regwatch.h"
#include "wait.h"

/* Changes are noticed asynchronously: wait for them with a generous deadline (slow CI, ASan),
 * never assert on a fixed sleep. */
#define DEADLINE_MS 10000
#define POLL_MS 50

struct fixture {
	char dir[PATH_MAX];
	char path[PATH_MAX + 32];
	struct regwatch *w;
};

/* a registry of n devices d0..d{n-1}, all in zone tag */
static void registry_doc(char *buf, size_t len, int n, const char *tag)
{
	size_t off = (size_t)snprintf(buf, len, "{\"devices\":[");
	for(int i = 0; i < n && off < len; i++){
		off += (size_t)snprintf(buf + off, len - off, "%s{\"deviceId\":\"d%d\",\"zone\":\"%s\"}",
				i ? "," : "", i, tag);
	}
	if(off < len) snprintf(buf + off, len - off, "]}\n");
}

static void write_in_place(const char *path, const char *content)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_true(fputs(content, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* what editors and config management do: write a temp file, rename it over the old one */
static void write_by_rename(const char *path, const char *content)
{
	char tmp[PATH_MAX + 64];

	snprintf(tmp, sizeof(tmp), "%s.tmp~", path);
	write_in_place(tmp, content);
	assert_int_equal(rename(tmp, path), 0);
}

static void write_devices(const char *path, int n, const char *tag, bool by_rename)
{
	char doc[16384];

	registry_doc(doc, sizeof(doc), n, tag);
	if(by_rename) write_by_rename(path, doc);
	else write_in_place(path, doc);
}

/* true when a queued log line at level contains needle; drains the queue */
static bool log_has(enum ip_log_level want, const char *needle)
{
	enum ip_log_level level;
	char line[1024], seen[8][256];
	size_t nseen = 0;
	bool found = false;

	while(log_pop(&level, line, sizeof(line))){
		if(level == want && strstr(line, needle)) found = true;
		else if(nseen < 8) snprintf(seen[nseen++], sizeof(seen[0]), "%d %.240s", (int)level, line);
	}
	if(!found){
		print_message("log line not found: %s\n", needle);
		for(size_t i = 0; i < nseen; i++) print_message("  other line: %s\n", seen[i]);
	}
	return found;
}

static void drain_log(void)
{
	enum ip_log_level level;
	char line[1024];
	while(log_pop(&level, line, sizeof(line))){}
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	const char *tmpdir = getenv("TMPDIR");

	if(fx == NULL) return -1;
	snprintf(fx->dir, sizeof(fx->dir), "%s/test_regwatch_XXXXXX", tmpdir && tmpdir[0] ? tmpdir : "/tmp");
	if(mkdtemp(fx->dir) == NULL) return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/registry.json", fx->dir);
	log_use_queue(true);
	drain_log();
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[PATH_MAX + 64];

	regwatch_stop(fx->w);
	drain_log();
	log_use_queue(false);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	if(system(cmd) != 0) return -1;
	free(fx);
	return 0;
}

static const struct ip_registry *start(struct fixture *fx, int n, const char *tag)
{
	char err[512] = "";
	const struct ip_registry *r;

	write_devices(fx->path, n, tag, false);
	fx->w = regwatch_start(fx->path, POLL_MS, err, sizeof(err));
	if(fx->w == NULL) fail_msg("regwatch_start: %s", err);
	r = regwatch_current(fx->w);
	assert_non_null(r);
	assert_int_equal(registry_count(r), (size_t)n);
	return r;
}

static const char *zone_of(const struct ip_registry *r, const char *id)
{
	const struct ip_device_info *d = registry_find(r, id);
	return d && d->zone ? d->zone : "";
}

static void test_start_and_current(void **state)
{
	struct fixture *fx = *state;
	const struct ip_registry *r = start(fx, 2, "g1");
	struct regwatch_stats st;

	assert_string_equal(zone_of(r, "d1"), "g1");
	/* nothing new: the same snapshot again */
	assert_ptr_equal(regwatch_current(fx->w), r);
	regwatch_stats(fx->w, &st);
	assert_int_equal(st.loads, 1);
	assert_int_equal(st.failures, 0);
	assert_int_equal(st.version, registry_version(r));
	assert_true(log_has(IP_LOG_NOTICE, "registry.json loaded: 2 devices (version "));
}

static void test_rewrite_in_place(void **state)
{
	struct fixture *fx = *state;
	const struct ip_registry *r = start(fx, 1, "g1");
	uint64_t v1 = registry_version(r);

	write_devices(fx->path, 3, "g2", false);
	WAIT_FOR(registry_version(r = regwatch_current(fx->w)) != v1 && registry_count(r) == 3);
	assert_true(registry_version(r) > v1);
	assert_string_equal(zone_of(r, "d2"), "g2");
}

/* Same size, likely within the same file-system timestamp tick: the signature may not change,
 * the write event still must count. */
static void test_rewrite_same_size(void **state)
{
	struct fixture *fx = *state;
	const struct ip_registry *r = start(fx, 3, "g1");

	write_devices(fx->path, 3, "g2", false);
	WAIT_FOR(strcmp(zone_of(r = regwatch_current(fx->w), "d2"), "g2") == 0);
	assert_int_equal(registry_count(r), 3);
}

static void test_rewrite_by_rename(void **state)
{
	struct fixture *fx = *state;
	const struct ip_registry *r = start(fx, 1, "g1");

	write_devices(fx->path, 4, "g2", true);
	WAIT_FOR(registry_count(r = regwatch_current(fx->w)) == 4);
	assert_string_equal(zone_of(r, "d3"), "g2");
	/* and again: the watch follows the name, not the replaced inode */
	write_devices(fx->path, 5, "g3", true);
	WAIT_FOR(registry_count(r = regwatch_current(fx->w)) == 5);
	assert_string_equal(zone_of(r, "d0"), "g3");
}

/* The path is a symlink into another directory (Kubernetes ConfigMaps do this): inotify on the
 * link's directory sees nothing, the stat polling must. */
static void test_symlink_target_changes(void **state)
{
	struct fixture *fx = *state;
	char realdir[PATH_MAX + 16], target[PATH_MAX + 32];
	char err[512] = "";
	const struct ip_registry *r;

	snprintf(realdir, sizeof(realdir), "%s/data", fx->dir);
	snprintf(target, sizeof(target), "%s/real.json", realdir);
	assert_int_equal(mkdir(realdir, 0700), 0);
	write_devices(target, 1, "g1", false);
	assert_int_equal(symlink(target, fx->path), 0);
	fx->w = regwatch_start(fx->path, POLL_MS, err, sizeof(err));
	if(fx->w == NULL) fail_msg("regwatch_start: %s", err);
	r = regwatch_current(fx->w);
	assert_int_equal(registry_count(r), 1);

	write_devices(target, 2, "g2", false);
	WAIT_FOR(registry_count(r = regwatch_current(fx->w)) == 2);
	assert_string_equal(zone_of(r, "d1"), "g2");
}

/* A relative registry_file keeps naming the same file after the process changes directory. */
static void test_relative_path(void **state)
{
	struct fixture *fx = *state;
	char cwd[PATH_MAX], err[512] = "";

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	write_devices(fx->path, 1, "g1", false);
	assert_int_equal(chdir(fx->dir), 0);
	fx->w = regwatch_start("registry.json", POLL_MS, err, sizeof(err));
	assert_int_equal(chdir("/"), 0);
	if(fx->w == NULL) fail_msg("regwatch_start: %s", err);
	assert_int_equal(registry_count(regwatch_current(fx->w)), 1);

	write_devices(fx->path, 2, "g2", true);
	WAIT_FOR(registry_count(regwatch_current(fx->w)) == 2);
	assert_int_equal(chdir(cwd), 0);
}

static void test_broken_rewrite_keeps_old(void **state)
{
	struct fixture *fx = *state;
	const struct ip_registry *r = start(fx, 2, "g1");
	uint64_t v1 = registry_version(r);
	struct regwatch_stats st;

	drain_log();
	write_by_rename(fx->path, "{\"devices\":[{\"deviceId\":\"ok\"},{\"deviceId\":\"x\",\"sensors\":[{\"sensorId\":\"t\",\"min\":\"cold\"}]}]}");
	WAIT_FOR((regwatch_stats(fx->w, &st), st.failures == 1));
	/* the processor keeps the very same snapshot */
	assert_ptr_equal(regwatch_current(fx->w), r);
	assert_int_equal(registry_version(r), v1);
	assert_int_equal(st.version, v1);
	assert_int_equal(st.loads, 1);
	assert_true(log_has(IP_LOG_WARNING,
			"not reloaded, keeping version " /* v1 */));

	/* the same broken file is not retried (and logged) every poll... */
	write_by_rename(fx->path, "not json");
	WAIT_FOR((regwatch_stats(fx->w, &st), st.failures == 2));
	assert_true(log_has(IP_LOG_WARNING, "registry.json not reloaded, keeping version"));

	/* ...and a fixed file is taken at once (renamed into place: an in-place write could be
	 * caught half-written and counted as one more failure) */
	write_devices(fx->path, 3, "g3", true);
	WAIT_FOR(registry_count(r = regwatch_current(fx->w)) == 3);
	regwatch_stats(fx->w, &st);
	assert_int_equal(st.failures, 2);
	assert_int_equal(st.loads, 2);
}

/* The warning carries the parser's own words, so an operator can fix the file from the log. */
static void test_broken_message_in_log(void **state)
{
	struct fixture *fx = *state;
	const struct ip_registry *r = start(fx, 1, "g1");
	struct regwatch_stats st;
	char expect[128];

	snprintf(expect, sizeof(expect), "keeping version %llu: devices[1] (\"x\"): sensors[0] (\"t\"): \"min\" is not a number",
			(unsigned long long)registry_version(r));
	drain_log();
	write_by_rename(fx->path, "{\"devices\":[{\"deviceId\":\"ok\"},{\"deviceId\":\"x\",\"sensors\":[{\"sensorId\":\"t\",\"min\":\"cold\"}]}]}");
	WAIT_FOR((regwatch_stats(fx->w, &st), st.failures == 1));
	assert_true(log_has(IP_LOG_WARNING, expect));
}

static void test_request_reload(void **state)
{
	struct fixture *fx = *state;
	const struct ip_registry *r = start(fx, 1, "g1");
	uint64_t v1 = registry_version(r);
	struct regwatch_stats st;

	/* unchanged file: only the request can cause the reload */
	regwatch_request_reload(fx->w);
	WAIT_FOR(registry_version(r = regwatch_current(fx->w)) != v1);
	assert_int_equal(registry_count(r), 1);

	/* a burst of requests never blocks and collapses into few reloads */
	for(int i = 0; i < 10000; i++) regwatch_request_reload(fx->w);
	WAIT_FOR((regwatch_stats(fx->w, &st), st.loads >= 3));
}

static void test_missing_then_recreated(void **state)
{
	struct fixture *fx = *state;
	const struct ip_registry *r = start(fx, 1, "g1");
	struct regwatch_stats st;

	drain_log();
	assert_int_equal(unlink(fx->path), 0);
	WAIT_FOR((regwatch_stats(fx->w, &st), st.failures == 1));
	assert_true(log_has(IP_LOG_WARNING, "cannot stat: No such file or directory"));
	assert_ptr_equal(regwatch_current(fx->w), r);

	write_devices(fx->path, 2, "g2", true);
	WAIT_FOR(registry_count(r = regwatch_current(fx->w)) == 2);
	regwatch_stats(fx->w, &st);
	assert_int_equal(st.failures, 1);   /* the missing file was reported once, not every poll */
}

static void test_start_errors(void **state)
{
	struct fixture *fx = *state;
	char err[512] = "", expect[PATH_MAX + 128];

	assert_null(regwatch_start(fx->path, 0, err, sizeof(err)));
	snprintf(expect, sizeof(expect), "registry_file %s: cannot open: No such file or directory", fx->path);
	assert_string_equal(err, expect);

	write_in_place(fx->path, "{\"devices\":[{\"deviceId\":\"a/b\"}]}");
	assert_null(regwatch_start(fx->path, 0, err, sizeof(err)));
	snprintf(expect, sizeof(expect), "registry_file %s: devices[0]: \"deviceId\" contains '/'", fx->path);
	assert_string_equal(err, expect);

	assert_null(regwatch_start("", 0, err, sizeof(err)));
	regwatch_stop(NULL);
}

/* The hand-off alone: what is never taken is freed by the next publish (ASan's leak check
 * watches), and the reader always gets the newest. */
static void test_regslot(void **state)
{
	struct regslot slot;
	struct ip_registry *a = registry_new(), *b = registry_new(), *c = registry_new();
	const struct ip_registry *got;

	regslot_init(&slot);
	assert_null(regslot_take(&slot));
	regslot_publish(&slot, a);
	assert_true(registry_version(a) > 0);   /* publishing seals */
	regslot_publish(&slot, b);               /* a was never taken: freed here */
	got = regslot_take(&slot);
	assert_ptr_equal(got, b);
	assert_ptr_equal(regslot_take(&slot), b);
	regslot_publish(&slot, c);
	assert_ptr_equal(regslot_take(&slot), c);   /* frees b */
	regslot_publish(&slot, NULL);               /* ignored */
	assert_ptr_equal(regslot_take(&slot), c);
	regslot_destroy(&slot);
}

/* A processor thread reads every device of whatever snapshot it holds while the file changes
 * under it: a snapshot must never be freed or changed while held, and never be torn. */
struct reader_arg {
	struct regwatch *w;
	atomic_bool stop;
	atomic_ulong snapshots;
	atomic_bool torn;
};

static void *reader_main(void *p)
{
	struct reader_arg *a = p;
	uint64_t last = 0;
	char id[IP_ID_MAX];

	while(!atomic_load(&a->stop)){
		const struct ip_registry *r = regwatch_current(a->w);
		const char *zone = zone_of(r, "d0");
		size_t n = registry_count(r);

		if(registry_version(r) != last){
			last = registry_version(r);
			atomic_fetch_add(&a->snapshots, 1);
		}
		/* every device of one snapshot has the same zone tag and there are atoi(tag) of them */
		if((size_t)atoi(zone + 1) != n) atomic_store(&a->torn, true);
		for(size_t i = 0; i < n; i++){
			snprintf(id, sizeof(id), "d%zu", i);
			if(strcmp(zone_of(r, id), zone) != 0) atomic_store(&a->torn, true);
		}
	}
	return NULL;
}

static void test_concurrent_reader(void **state)
{
	struct fixture *fx = *state;
	struct reader_arg a;
	pthread_t th;
	char tag[16];

	start(fx, 1, "g1");
	a.w = fx->w;
	atomic_init(&a.stop, false);
	atomic_init(&a.snapshots, 0);
	atomic_init(&a.torn, false);
	assert_int_equal(pthread_create(&th, NULL, reader_main, &a), 0);
	for(int gen = 2; gen <= 30; gen++){
		unsigned long seen = atomic_load(&a.snapshots);
		snprintf(tag, sizeof(tag), "g%d", gen);
		write_devices(fx->path, gen, tag, gen % 2 == 0);
		regwatch_request_reload(fx->w);
		/* let the reader take some of them, not necessarily each */
		if(gen % 5 == 0) WAIT_FOR(atomic_load(&a.snapshots) > seen);
		drain_log();
	}
	atomic_store(&a.stop, true);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_false(atomic_load(&a.torn));
	/* the main thread is the processor from here on: it sees the newest */
	WAIT_FOR(registry_count(regwatch_current(fx->w)) == 30);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_start_and_current, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rewrite_in_place, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rewrite_same_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rewrite_by_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_target_changes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relative_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broken_rewrite_keeps_old, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broken_message_in_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_then_recreated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_errors, setup, teardown),
		cmocka_unit_test(test_regslot),
		cmocka_unit_test_setup_teardown(test_concurrent_reader, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
