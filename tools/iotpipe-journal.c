/* iotpipe-journal: print a journal's records and cursors as JSON lines, so an admin can see what is
 * pending. Read-only: safe to run next to a live broker. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "journal.h"
#include "record.h"

struct dump {
	bool records, quiet;
	uint64_t count, limit;
	char *line;
	size_t linecap;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: iotpipe-journal [options] DIR\n"
		"Prints the records and cursors of one journal (journal_dir/ingest or journal_dir/outbox) as JSON lines.\n"
		"  -f, --from LSN    start at this LSN (default: the oldest on disk)\n"
		"  -n, --limit N     print at most N records\n"
		"  -c, --cursors     print only the summary and the cursors\n"
		"  -h, --help        this text\n"
		"Records: {\"lsn\":..,\"kind\":..,...}; cursors: {\"cursor\":NAME,\"next_lsn\":..,\"pending\":..};\n"
		"last line: {\"summary\":...} with the record count, LSN range and bytes on disk.\n");
}

static bool print_record(void *ctx, const struct journal_rec *rec)
{
	struct dump *d = ctx;
	d->count++;
	if(!d->records) return true;
	if(d->limit && d->count > d->limit) return false;
	cJSON *o = NULL;
	if(rec->kind == REC_CAPTURE){
		struct capture c;
		o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "lsn", (double)rec->lsn);
		cJSON_AddStringToObject(o, "kind", "capture");
		if(capture_decode(rec->body, rec->len, &c)){
			cJSON_AddStringToObject(o, "topic", c.topic);
			cJSON_AddStringToObject(o, "clientId", c.client_id);
			cJSON_AddStringToObject(o, "username", c.username);
			cJSON_AddNumberToObject(o, "qos", c.h.qos);
			cJSON_AddBoolToObject(o, "retain", (c.h.flags & CAPTURE_RETAIN) != 0);
			cJSON_AddNumberToObject(o, "arrival", (double)c.h.arrival_ms);
			cJSON_AddNumberToObject(o, "payloadBytes", c.h.payload_len);
			/* reuse the outbox's payload rendering (text, or hex when not UTF-8) */
			struct outrec r = {.kind = REC_RAW, .payload = c.payload, .payload_len = c.h.stored_len};
			if(outrec_to_json(&r, d->line, d->linecap)){
				cJSON *raw = cJSON_Parse(d->line);
				cJSON *p = raw ? cJSON_DetachItemFromObject(raw, "payload") : NULL;
				if(!p && raw) p = cJSON_DetachItemFromObject(raw, "payloadHex");
				if(p) cJSON_AddItemToObject(o, p->string, p);
				cJSON_Delete(raw);
			}
		}else{
			cJSON_AddStringToObject(o, "error", "undecodable capture");
		}
		if(cJSON_PrintPreallocated(o, d->line, (int)d->linecap, false)) puts(d->line);
		cJSON_Delete(o);
		return true;
	}
	struct outrec r;
	if(rec->kind < REC_RAW || rec->kind >= REC__END || !outrec_decode((uint16_t)rec->kind, rec->body, rec->len, &r)){
		printf("{\"lsn\":%" PRIu64 ",\"kind\":%u,\"error\":\"undecodable\"}\n", rec->lsn, rec->kind);
		return true;
	}
	size_t n = outrec_to_json(&r, d->line, d->linecap);
	if(!n) return true;
	/* prefix the LSN and kind to the record's own JSON object */
	printf("{\"lsn\":%" PRIu64 ",\"kind\":\"%s\",%s\n", rec->lsn, rec_kind_name((uint16_t)rec->kind), d->line + 1);
	return true;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"from", required_argument, NULL, 'f'}, {"limit", required_argument, NULL, 'n'},
		{"cursors", no_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	struct dump d = {.records = true, .linecap = 1 << 22};
	uint64_t from = 0;
	int c;
	while((c = getopt_long(argc, argv, "f:n:ch", longopts, NULL)) != -1){
		switch(c){
		case 'f': from = strtoull(optarg, NULL, 10); break;
		case 'n': d.limit = strtoull(optarg, NULL, 10); break;
		case 'c': d.records = false; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if(optind != argc - 1){
		usage(stderr);
		return 2;
	}
	struct journal_opts o = {.dir = argv[optind], .readonly = true};
	char err[512];
	struct journal *j = journal_open(&o, err, sizeof(err));
	if(!j){
		fprintf(stderr, "iotpipe-journal: %s\n", err);
		return 1;
	}
	d.line = malloc(d.linecap);
	if(!d.line) return 1;
	journal_scan(j, from, print_record, &d);
	struct journal_stats st;
	journal_get_stats(j, &st);
	for(size_t i = 0; i < journal_cursor_count(j); i++){
		const char *name;
		uint64_t next;
		if(!journal_cursor_at(j, i, &name, &next)) continue;
		printf("{\"cursor\":\"%s\",\"next_lsn\":%" PRIu64 ",\"pending\":%" PRIu64 "}\n", name, next,
				st.next_lsn > next ? st.next_lsn - next : 0);
	}
	printf("{\"summary\":{\"records\":%" PRIu64 ",\"first_lsn\":%" PRIu64 ",\"next_lsn\":%" PRIu64
			",\"segments\":%" PRIu64 ",\"bytes\":%" PRIu64 "}}\n",
			d.count, st.first_lsn, st.next_lsn, st.segments, st.bytes);
	free(d.line);
	journal_close(j);
	return 0;
}
