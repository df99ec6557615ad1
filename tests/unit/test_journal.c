#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"

#define SEG (64u * 1024u)

static char dir[256];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/iotpipe-test-journal-XXXXXX");
	assert_non_null(mkdtemp(dir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static struct journal *open_j(enum journal_full_policy full, uint64_t max_bytes)
{
	struct journal_opts o = {.dir = dir, .max_bytes = max_bytes, .segment_bytes = SEG, .full = full,
		.readers = {"a", "b", NULL}};
	char err[512] = "";
	struct journal *j = journal_open(&o, err, sizeof(err));
	if(!j) fail_msg("open: %s", err);
	return j;
}

static uint64_t put(struct journal *j, uint64_t n, size_t len)
{
	char body[4096];
	assert_true(len >= sizeof(n) && len <= sizeof(body));
	memset(body, 'x', len);
	memcpy(body, &n, sizeof(n));
	struct iovec iov[2] = {{body, sizeof(n)}, {body + sizeof(n), len - sizeof(n)}};
	uint64_t lsn = 0;
	assert_int_equal(journal_append(j, 7, iov, 2, &lsn), JOURNAL_OK);
	return lsn;
}

/* reads everything available, checks each body names its own number; returns the count */
static uint64_t drain(struct journal_reader *r, uint64_t *first, uint64_t *last)
{
	struct journal_rec rec;
	uint64_t n = 0;
	while(journal_next(r, &rec)){
		uint64_t v;
		assert_true(rec.len >= sizeof(v));
		memcpy(&v, rec.body, sizeof(v));
		assert_int_equal(v, rec.lsn);
		assert_int_equal(rec.kind, 7);
		if(n == 0 && first) *first = rec.lsn;
		if(last) *last = rec.lsn;
		n++;
	}
	return n;
}

static size_t count_segments(void)
{
	DIR *d = opendir(dir);
	size_t n = 0;
	struct dirent *de;
	while((de = readdir(d))) n += strstr(de->d_name, ".seg") != NULL;
	closedir(d);
	return n;
}

static void wait_until(bool (*cond)(void *), void *arg)
{
	for(int i = 0; i < 500 && !cond(arg); i++) usleep(10000);
	assert_true(cond(arg));
}

static void test_append_read_commit(void **state)
{
	struct journal *j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	struct journal_reader *a = journal_reader(j, "a"), *b = journal_reader(j, "b");
	assert_non_null(a);
	assert_non_null(b);
	assert_null(journal_reader(j, "nope"));
	for(uint64_t i = 1; i <= 1000; i++) assert_int_equal(put(j, i, 8 + i % 300), i);
	uint64_t first = 0, last = 0;
	assert_int_equal(drain(a, &first, &last), 1000);
	assert_int_equal(first, 1);
	assert_int_equal(last, 1000);
	journal_commit(a, 501);
	assert_int_equal(journal_reader_committed(a), 501);
	assert_int_equal(journal_pending(a), 500);
	assert_int_equal(journal_pending(b), 1000);
	/* unread: all read by a, nothing by b */
	assert_int_equal(journal_unread(a), 0);
	assert_int_equal(journal_unread(b), 1000);
	/* a rewind re-reads from the committed cursor */
	journal_rewind(a);
	assert_int_equal(journal_unread(a), 500);
	assert_int_equal(drain(a, &first, NULL), 500);
	assert_int_equal(journal_unread(a), 0);
	assert_int_equal(first, 501);
	journal_close(j);

	/* reopen: every reader resumes at its cursor, appends continue the LSNs */
	j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	a = journal_reader(j, "a");
	b = journal_reader(j, "b");
	assert_int_equal(drain(a, &first, &last), 500);
	assert_int_equal(first, 501);
	assert_int_equal(drain(b, &first, NULL), 1000);
	assert_int_equal(first, 1);
	assert_int_equal(put(j, 1001, 16), 1001);
	assert_int_equal(drain(a, &first, NULL), 1);
	assert_int_equal(first, 1001);
	journal_close(j);
}

struct seg_count_arg { size_t want; };
static bool segments_at_most(void *arg)
{
	return count_segments() <= ((struct seg_count_arg *)arg)->want;
}

static void test_segments_deleted_when_all_readers_pass(void **state)
{
	struct journal *j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	struct journal_reader *a = journal_reader(j, "a"), *b = journal_reader(j, "b");
	for(uint64_t i = 1; i <= 2000; i++) put(j, i, 200);   /* ~7 segments */
	size_t before = count_segments();
	assert_true(before >= 6);
	uint64_t last = 0;
	assert_int_equal(drain(a, NULL, &last), 2000);
	journal_commit(a, last + 1);
	usleep(100000);
	assert_true(count_segments() >= before);      /* b still needs them */
	assert_int_equal(drain(b, NULL, &last), 2000);
	journal_commit(b, last + 1);
	struct seg_count_arg want = {2};               /* the tail and the spare */
	wait_until(segments_at_most, &want);
	struct journal_stats st;
	journal_get_stats(j, &st);
	assert_int_equal(st.next_lsn, 2001);
	journal_close(j);
}

/* Consumed segments come back as spares with their old records still in them; none of those may
 * ever be read again, neither live nor by the recovery scan at the next open. */
static void test_recycled_segments(void **state)
{
	struct journal *j = open_j(JOURNAL_FULL_REJECT, 4 * SEG);
	struct journal_reader *a = journal_reader(j, "a"), *b = journal_reader(j, "b");
	uint64_t next = 1;
	for(int round = 0; round < 12; round++){
		for(int i = 0; i < 300; i++) assert_int_equal(put(j, next, 100 + (size_t)(round * 7 + i) % 200), next), next++;
		uint64_t first = 0, last = 0;
		assert_int_equal(drain(a, &first, &last), 300);
		assert_int_equal(last, next - 1);
		journal_commit(a, next);
		assert_int_equal(drain(b, NULL, NULL), 300);
		journal_commit(b, next);
		usleep(30000);
	}
	journal_close(j);
	j = open_j(JOURNAL_FULL_REJECT, 4 * SEG);
	struct journal_stats st;
	journal_get_stats(j, &st);
	assert_int_equal(st.recovered_torn, 0);
	assert_int_equal(st.next_lsn, next);
	a = journal_reader(j, "a");
	assert_int_equal(drain(a, NULL, NULL), 0);
	assert_int_equal(put(j, next, 64), next);
	uint64_t first = 0;
	assert_int_equal(drain(a, &first, NULL), 1);
	assert_int_equal(first, next);
	journal_close(j);
}

/* The spare left on disk at close is taken again at open; the first roll after a restart must
 * write after its header, not over it. */
static void test_restart_then_roll(void **state)
{
	struct journal *j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	for(uint64_t i = 1; i <= 10; i++) put(j, i, 100);
	usleep(50000);                       /* the maintenance thread has its spare ready */
	journal_close(j);
	j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	for(uint64_t i = 11; i <= 2000; i++) assert_int_equal(put(j, i, 300), i);   /* several rolls */
	uint64_t first = 0, last = 0;
	assert_int_equal(drain(journal_reader(j, "a"), &first, &last), 2000);
	assert_int_equal(last, 2000);
	journal_close(j);
	j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	struct journal_stats st;
	journal_get_stats(j, &st);
	assert_int_equal(st.recovered_torn, 0);
	assert_int_equal(drain(journal_reader(j, "b"), &first, &last), 2000);
	journal_close(j);
}

static void test_empty_piece(void **state)
{
	struct journal *j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	uint64_t v = 1;
	struct iovec iov[2] = {{&v, sizeof(v)}, {NULL, 0}};
	assert_int_equal(journal_append(j, 7, iov, 2, NULL), JOURNAL_OK);
	assert_int_equal(drain(journal_reader(j, "a"), NULL, NULL), 1);
	journal_close(j);
}

static void test_full_reject(void **state)
{
	struct journal *j = open_j(JOURNAL_FULL_REJECT, 4 * SEG);
	char body[1000] = {0};
	struct iovec iov = {body, sizeof(body)};
	uint64_t ok = 0;
	enum journal_rc rc;
	while((rc = journal_append(j, 7, &iov, 1, NULL)) == JOURNAL_OK) ok++;
	assert_int_equal(rc, JOURNAL_FULL);
	assert_true(ok > 150);
	assert_int_equal(journal_append(j, 7, &iov, 1, NULL), JOURNAL_FULL);
	struct journal_stats st;
	journal_get_stats(j, &st);
	assert_int_equal(st.rejected, 2);
	/* once the readers catch up, appends are accepted again */
	struct journal_reader *a = journal_reader(j, "a"), *b = journal_reader(j, "b");
	struct journal_rec rec;
	while(journal_next(a, &rec)) {}
	while(journal_next(b, &rec)) {}
	journal_commit(a, ok + 1);
	journal_commit(b, ok + 1);
	struct seg_count_arg want = {2};
	wait_until(segments_at_most, &want);
	assert_int_equal(journal_append(j, 7, &iov, 1, NULL), JOURNAL_OK);
	/* a record larger than a segment can never fit */
	static char huge[SEG];
	struct iovec big = {huge, sizeof(huge)};
	assert_int_equal(journal_append(j, 7, &big, 1, NULL), JOURNAL_TOO_BIG);
	journal_close(j);
}

static void test_full_drop_oldest(void **state)
{
	struct journal *j = open_j(JOURNAL_FULL_DROP_OLDEST, 4 * SEG);
	struct journal_reader *a = journal_reader(j, "a"), *b = journal_reader(j, "b");
	uint64_t n = 2000;
	for(uint64_t i = 1; i <= n; i++) put(j, i, 200);   /* far more than four segments */
	/* a keeps up, b does not read at all */
	uint64_t got_a = 0, got_b = 0, first_b = 0, last = 0;
	got_a = drain(a, NULL, &last);
	journal_commit(a, last + 1);
	got_b = drain(b, &first_b, &last);
	journal_commit(b, last + 1);
	assert_int_equal(last, n);
	assert_true(first_b > 1);
	/* nothing vanishes silently: every record was read or counted as dropped */
	assert_int_equal(got_a + journal_reader_dropped(a), n);
	assert_int_equal(got_b + journal_reader_dropped(b), n);
	assert_true(journal_reader_dropped(b) > 0);
	assert_int_equal(journal_reader_dropped(b), first_b - 1);
	journal_close(j);
}

/* flips or cuts bytes of the last record in the newest segment */
static void damage_last_record(bool cut)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char newest[512] = "";
	while((de = readdir(d))){
		if(!strstr(de->d_name, ".seg")) continue;
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		int fd = open(path, O_RDONLY);
		uint64_t first;
		assert_int_equal(pread(fd, &first, 8, 24), 8);
		close(fd);
		if(first && strcmp(path, newest) > 0) snprintf(newest, sizeof(newest), "%s", path);
	}
	closedir(d);
	int fd = open(newest, O_RDWR);
	struct stat st;
	fstat(fd, &st);
	uint8_t *m = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	size_t off = JOURNAL_SEG_HEADER, last = 0;
	for(;;){
		uint32_t len;
		memcpy(&len, m + off, 4);
		if(!len) break;
		last = off;
		off += (JOURNAL_REC_HEADER + len + 7) & ~7u;
	}
	uint32_t len;
	memcpy(&len, m + last, 4);
	if(cut){
		/* a torn write: the header made it, the second half of the body did not */
		memset(m + last + JOURNAL_REC_HEADER + len / 2, 0, len - len / 2);
	}else{
		m[last + JOURNAL_REC_HEADER + 3] ^= 0x40;
	}
	munmap(m, st.st_size);
}

static void recovery_case(bool cut)
{
	struct journal *j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	for(uint64_t i = 1; i <= 300; i++) put(j, i, 100);
	journal_close(j);
	damage_last_record(cut);
	j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	struct journal_stats st;
	journal_get_stats(j, &st);
	assert_int_equal(st.recovered_torn, 1);
	assert_int_equal(st.next_lsn, 300);    /* the damaged record 300 is gone, nothing before it */
	uint64_t first = 0, last = 0;
	assert_int_equal(drain(journal_reader(j, "a"), &first, &last), 299);
	assert_int_equal(last, 299);
	/* writing resumes at the cut, and a second reopen sees a clean journal */
	assert_int_equal(put(j, 300, 40), 300);
	assert_int_equal(put(j, 301, 40), 301);
	journal_close(j);
	j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	journal_get_stats(j, &st);
	assert_int_equal(st.recovered_torn, 0);
	assert_int_equal(drain(journal_reader(j, "b"), &first, &last), 301);
	journal_close(j);
}

static void test_recovery_torn(void **state)
{
	recovery_case(true);
}

static void test_recovery_flipped_crc(void **state)
{
	recovery_case(false);
}

/* A child appends as fast as it can and reports each LSN once append returned; the parent kills it
 * with SIGKILL mid-stream. Every reported record must be there, intact. */
static void test_sigkill_mid_append(void **state)
{
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if(pid == 0){
		close(pfd[0]);
		struct journal *j = open_j(JOURNAL_FULL_REJECT, 256 * SEG);
		for(uint64_t i = 1;; i++){
			uint64_t lsn = put(j, i, 8 + (i * 37) % 900);
			if(write(pfd[1], &lsn, sizeof(lsn)) != sizeof(lsn)) _exit(1);
		}
	}
	close(pfd[1]);
	uint64_t reported = 0, lsn;
	while(reported < 20000 && read(pfd[0], &lsn, sizeof(lsn)) == sizeof(lsn)) reported = lsn;
	kill(pid, SIGKILL);
	while(read(pfd[0], &lsn, sizeof(lsn)) == sizeof(lsn)) reported = lsn;
	close(pfd[0]);
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFSIGNALED(status));

	struct journal *j = open_j(JOURNAL_FULL_REJECT, 256 * SEG);
	uint64_t first = 0, last = 0, n = drain(journal_reader(j, "a"), &first, &last);
	assert_int_equal(first, 1);
	assert_true(last >= reported);
	assert_int_equal(n, last);
	print_message("child reported %" PRIu64 " appends before SIGKILL; %" PRIu64 " recovered\n", reported, n);
	journal_close(j);
}

static bool scan_count(void *ctx, const struct journal_rec *rec)
{
	(*(uint64_t *)ctx)++;
	return true;
}

static void test_readonly_inspect(void **state)
{
	struct journal *j = open_j(JOURNAL_FULL_REJECT, 64 * SEG);
	for(uint64_t i = 1; i <= 50; i++) put(j, i, 64);
	journal_commit(journal_reader(j, "a"), 21);
	struct journal_opts o = {.dir = dir, .readonly = true};
	char err[256];
	struct journal *ro = journal_open(&o, err, sizeof(err));
	assert_non_null(ro);
	uint64_t n = 0;
	journal_scan(ro, 21, scan_count, &n);
	assert_int_equal(n, 30);
	assert_int_equal(journal_cursor_count(ro), 2);
	bool saw_a = false;
	for(size_t i = 0; i < journal_cursor_count(ro); i++){
		const char *name;
		uint64_t c;
		assert_true(journal_cursor_at(ro, i, &name, &c));
		if(!strcmp(name, "a")){
			saw_a = true;
			assert_int_equal(c, 21);
		}
	}
	assert_true(saw_a);
	journal_close(ro);
	journal_close(j);
}

static void test_bad_bound(void **state)
{
	struct journal_opts o = {.dir = dir, .max_bytes = 2 * SEG, .segment_bytes = SEG, .readers = {"a", NULL}};
	char err[256] = "";
	assert_null(journal_open(&o, err, sizeof(err)));
	assert_non_null(strstr(err, "four segments"));
	o.max_bytes = 64 * SEG;
	o.dir = "/proc/no/such/dir";
	assert_null(journal_open(&o, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot create"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_read_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segments_deleted_when_all_readers_pass, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recycled_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_then_roll, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_piece, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_reject, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_drop_oldest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_torn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_flipped_crc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigkill_mid_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_inspect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_bound, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
